"""The method interface (a second method is one module), one vocabulary with the old names still
read, seeding in one place, and the UCDIR pieces that had no direct test."""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from references import ref_dod, ref_entropy, unit
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.params import Params
from ucdir_core.base.seeding import forked_rng, rng_state
from ucdir_core.config.presets import get_preset, preset_for_method
from ucdir_core.config.rows import ROWS, row_config
from ucdir_core.config.run import LEGACY_KEYS, RunConfig
from ucdir_core.method import params as method_params
from ucdir_core.method import registry
from ucdir_core.method.clustering import Clustering, cluster_domain, kmeans
from ucdir_core.method.interface import EpochContext, Method, StepBatch
from ucdir_core.method.ucdir import LossWeights, ucdir_objective
from ucdir_core.method.ucdir_params import ROWS as UCDIR_ROWS
from ucdir_core.method.ucdir_params import UCDIRParams
from ucdir_core.training import runs
from ucdir_core.training.build import train


class Toy(Method):
    """A method written against the interface only: instance contrastive on both domains plus a
    term that pulls each query to the mean of its own domain's bank, computed at the epoch's start;
    it counts its steps (state kept between steps and in the checkpoint)."""

    name = "toy"
    terms = ("instance_contrastive", "bank_mean")

    def __init__(self, params, num_clusters, epochs):
        super().__init__(params, num_clusters, epochs)
        self.means = None
        self.steps = 0
        self.epochs_seen: list[int] = []

    def weights(self, epoch):
        return {"instance_contrastive": 1.0, "bank_mean": 0.5 if epoch >= 1 else 0.0}

    def begin_epoch(self, context: EpochContext):
        self.epochs_seen.append(context.epoch)
        self.means = context.banks.map(lambda b: F.normalize(b.mean(0), dim=0))
        assert context.train_embeddings().a.shape[0] == context.banks.a.shape[0]

    def loss(self, batch: StepBatch):
        from ucdir_core.method.losses import instance_contrastive

        w = self.weights(self.epochs_seen[-1])
        inst = sum(instance_contrastive(q, k, b, i, 0.2) for q, k, b, i in zip(batch.q, batch.k, batch.banks, batch.ids)) / 2
        pull = sum((1 - q @ m).mean() for q, m in zip(batch.q, self.means)) / 2
        self.steps += 1
        total = w["instance_contrastive"] * inst + w["bank_mean"] * pull
        return total, {"instance_contrastive": float(inst.detach()), "bank_mean": float(pull.detach())}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = int(state.get("steps", 0))


@dataclass(frozen=True)
class ToyParams(Params):
    """The toy method's parameters: none beyond a temperature."""

    method: ClassVar[str] = "toy"
    divergence_keys: ClassVar[tuple[str, ...]] = ("temperature",)
    temperature: float = 0.2


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "toy", Toy)
    monkeypatch.setitem(method_params.METHOD_PARAMS, "toy", ToyParams)


def strip(history):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in history]


def test_a_second_method_is_one_module_behind_the_interface(tiny_cfg, tmp_path, toy_registered):
    history = train(tiny_cfg.replace(method="toy", epochs=2), tmp_path / "run", progress=False, log=lambda s: None)
    assert [r["w_bank_mean"] for r in history] == [0.0, 0.5]
    assert all("loss_bank_mean" in r and "loss_instance_contrastive" in r and "eval" in r for r in history)
    assert "loss_self_entropy" not in history[0]
    state = torch.load(tmp_path / "run" / runs.LAST, weights_only=True)
    assert state["method"]["steps"] > 0


def test_an_unknown_method_is_one_line():
    with pytest.raises(ValueError, match="unknown method 'nope'; known: .*ucdir"):
        get_preset("digits").replace(method="nope")
    with pytest.raises(ValueError, match="unknown method"):
        registry.build_method(object(), (4,), 2)


def method_branches(source: str) -> list[str]:
    """Comparisons in ``source`` (Python code) that test a value against a method's name
    (``cfg.method == "protoot"``, ``"ucdir" in (...)``, ``match method: case "ucdir"``), read with ast."""
    names = set(registry.METHODS) | set(method_params.METHOD_PARAMS)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            consts = {c.value for part in parts for c in ast.walk(part) if isinstance(c, ast.Constant)}
            if consts & names:
                found.append(ast.unparse(node))
        elif isinstance(node, ast.match_case):
            consts = {c.value for c in ast.walk(node.pattern) if isinstance(c, ast.Constant)}
            if consts & names:
                found.append(ast.unparse(node.pattern))
    return found


def test_no_code_outside_the_methods_branches_on_a_method_name():
    package = Path(registry.__file__).parents[1]
    found = {str(p.relative_to(package)): method_branches(p.read_text()) for p in package.rglob("*.py")
             if "method" not in p.relative_to(package).parts}
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.parametrize("code", ['if cfg.method == "protoot":\n    pass', 'x = "ucdir" != m',
                                  'ok = name in ("ucdir", "x")', 'match m:\n    case "protoot":\n        pass'])
def test_the_method_branch_guard_sees_a_branch(code):
    assert method_branches(code)


# ----------------------------------------------------------------------------- one vocabulary
def test_a_config_in_the_old_key_names_loads_unchanged():
    old = {"inst_weight": 0.7, "warmup_epochs": 3, "cw_start": 4, "cw_sat": 9, "cw_weight_start": 0.1,
           "cw_weight_sat": 0.9, "se_temperature": 0.3, "se_weight": 0.4, "se_start": 5, "se_center": True,
           "dod_temperature": 0.02, "dod_weight": 0.6, "dod_start": 6, "dod_center": True, "num_clusters": [7]}
    second = {"cluster_contrastive_start": 4, "cluster_contrastive_sat": 9, "cluster_contrastive_weight_start": 0.1,
              "cluster_contrastive_weight_sat": 0.9, "self_entropy_center": True, "distance_of_distance_center": True}
    assert set(old) - {"num_clusters"} | set(second) == set(LEGACY_KEYS)  # both generations of old names
    for written in (old, second):
        cfg = RunConfig.from_dict(written)
        for key, value in written.items():
            assert cfg.flat()[LEGACY_KEYS.get(key, key)] == value, key
    assert RunConfig().with_overrides(["dod_weight=0.25"]).method_params.distance_of_distance_weight == 0.25


def test_the_committed_results_file_loads_with_the_current_config():
    from pathlib import Path

    res = json.loads((Path(__file__).parents[1] / "results" / "pacs.json").read_text())
    cfg = RunConfig.from_dict(res["config"])
    flat = cfg.flat(resolved=True)  # schedules as the epochs they name: the file's are shares since issue 24
    assert flat["clustering_start"] == 1 and cfg.method_params.distance_of_distance_weight == pytest.approx(0.0003)
    assert cfg.alignment_params.harmony_pcs == 20  # the stage's settings the aligned rows were fitted with


def test_a_history_line_in_the_old_names_reads_under_the_new_ones(tmp_path):
    run = runs.RunFolder(tmp_path)
    old_row = {"epoch": 0, "lr": 0.1, "w_instance": 1.0, "w_cluster": 0.5, "w_self_entropy": 0.0,
               "loss_instance": 2.5, "loss_cluster": 1.5, "loss_total": 3.25}
    (tmp_path / runs.HISTORY).write_text(json.dumps({"config": {}}) + "\n" + json.dumps(old_row) + "\n")
    (row,) = run.history()
    assert row["w_instance_contrastive"] == 1.0 and row["w_cluster_contrastive"] == 0.5
    assert row["loss_instance_contrastive"] == 2.5 and row["loss_cluster_contrastive"] == 1.5
    assert "loss_instance" not in row and row["loss_total"] == 3.25


def test_the_methods_parameters_live_in_their_own_dataclass():
    cfg = get_preset("domainnet").replace(threshold=0.3, distance_of_distance_centred=True)
    p = cfg.method_params
    assert isinstance(p, UCDIRParams) and (p.temperature, p.threshold, p.self_entropy_temperature) == (0.2, 0.3, 0.1)
    assert p.distance_of_distance_centred and not p.self_entropy_centred
    assert not hasattr(cfg, "threshold")  # one place for a method's key
    saved = cfg.to_dict()
    assert saved["method"] == "ucdir" and saved["method_params"]["threshold"] == 0.3 and "threshold" not in saved


# ----------------------------------------------------------------------------- seeding
def test_forked_rng_leaves_the_global_generators_as_they_were():
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = rng_state()
    with forked_rng(123):
        a = (torch.rand(3), np.random.rand(3), random.random())
    after = rng_state()
    assert torch.equal(before["torch"], after["torch"]) and torch.equal(before["numpy"]["keys"], after["numpy"]["keys"])
    assert before["python"] == after["python"]
    with forked_rng(123):
        b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_computing_cached_views_leaves_the_global_generators_untouched(digits_root):
    from ucdir_core.data.cache import compute_views
    from ucdir_core.data.images import train_transform

    paths = sorted(str(p) for p in (digits_root / "printed" / "3").glob("*.png"))[:4]
    trunk = torch.nn.Conv2d(3, 2, 3)
    torch.manual_seed(1)
    random.seed(1)
    before = rng_state()
    v1 = compute_views(trunk, paths, train_transform(16, (0.5,) * 3, (0.5,) * 3), 2, torch.device("cpu"), seed=7,
                       progress=False)
    after = rng_state()
    assert torch.equal(before["torch"], after["torch"]) and before["python"] == after["python"]
    v2 = compute_views(trunk, paths, train_transform(16, (0.5,) * 3, (0.5,) * 3), 2, torch.device("cpu"), seed=7,
                       progress=False)
    assert torch.equal(v1, v2)


# ----------------------------------------------------------------------------- clustering, ablation
def test_cluster_domain_gives_unit_prototypes_on_the_inputs_device_seeded_by_the_index_of_k():
    x = F.normalize(torch.randn(60, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    c = cluster_domain(x, (5, 3), niter=10, nredo=1)
    assert isinstance(c, Clustering) and [p.shape for p in c.prototypes] == [(5, 8), (3, 8)]
    for p, a in zip(c.prototypes, c.assignments):
        torch.testing.assert_close(p.norm(dim=1), torch.ones(len(p)))
        assert p.device == x.device and a.device == x.device and a.dtype == torch.long and a.shape == (60,)
    for i, k in enumerate((5, 3)):  # seed = index of the K value, as the reference
        assign, centroids, _ = kmeans(x, k, seed=i, niter=10, nredo=1)
        assert torch.equal(c.assignments[i], torch.from_numpy(assign))
        torch.testing.assert_close(c.prototypes[i], F.normalize(torch.from_numpy(centroids), dim=1))
    with pytest.raises(ValueError, match="cannot make 61 clusters from 60 points"):
        cluster_domain(x, (61,))


def test_ucdirs_rows_switch_off_exactly_their_losses():
    cfg = get_preset("pacs")
    rows = {name: row_config(cfg, name).method_params for name in UCDIR_ROWS}
    p = cfg.method_params
    assert row_config(cfg, "full") == cfg
    assert rows["+cluster"].self_entropy_weight == 0 and rows["+cluster"].distance_of_distance_weight == 0
    assert rows["+cluster"].cluster_contrastive_weight == p.cluster_contrastive_weight
    assert rows["+self_entropy"].self_entropy_weight == p.self_entropy_weight
    assert rows["+self_entropy"].distance_of_distance_weight == 0
    assert rows["+distance_of_distance"].self_entropy_weight == 0
    assert rows["+distance_of_distance"].distance_of_distance_weight == p.distance_of_distance_weight
    inst = rows["instance"]
    assert inst.cluster_contrastive_weight_initial == inst.cluster_contrastive_weight == 0
    method = registry.build_method(inst, cfg.num_clusters, cfg.epochs)
    assert not any(method.schedule.weights(e).clustering for e in range(cfg.epochs))  # never clusters
    with pytest.raises(ValueError, match="unknown table row"):
        row_config(cfg, "nope")


def test_rows_belong_to_their_method():
    assert ROWS == ("instance", "+cluster", "+self_entropy", "+distance_of_distance", "full", "protoot_in_domain",
                    "protoot")
    with pytest.raises(ValueError, match="row \\+cluster is a row of method ucdir, but this config trains protoot"):
        row_config(get_preset("protoot_pacs"), "+cluster")
    with pytest.raises(ValueError, match="row protoot is a row of method protoot, but this config trains ucdir"):
        row_config(get_preset("pacs"), "protoot")
    protoot = get_preset(preset_for_method("pacs", "protoot"))
    assert row_config(protoot, "protoot") == get_preset("protoot_pacs")
    assert row_config(protoot, "protoot_in_domain").method_params.cross_domain_weight == 0.0


# ----------------------------------------------------------------------------- several K
def _several_k_inputs():
    q = DomainPair(unit(6, 8, seed=1).requires_grad_(True), unit(6, 8, seed=2).requires_grad_(True))
    k = DomainPair(unit(6, 8, seed=3), unit(6, 8, seed=4))
    banks = DomainPair(unit(30, 8, seed=5), unit(30, 8, seed=6))
    ids = DomainPair(torch.tensor([0, 4, 9, 13, 21, 29]), torch.tensor([1, 2, 3, 17, 18, 28]))
    clus = DomainPair(*(Clustering([torch.arange(30) % 5, torch.arange(30) % 3], [unit(5, 8, seed=s), unit(3, 8, seed=s + 1)])
                        for s in (10, 20)))
    return q, k, banks, ids, clus


def test_several_k_average_self_entropy_and_distance_of_distance_over_every_clustering():
    q, k, banks, ids, clus = _several_k_inputs()
    params = UCDIRParams(self_entropy_temperature=0.1, distance_of_distance_temperature=0.05)
    w = LossWeights(instance_contrastive=0.0, cluster_contrastive=0.0, self_entropy=1.0, distance_of_distance=1.0,
                    clustering=True)
    _, terms = ucdir_objective(q, k, banks, ids, clus, w, params)
    qs = [t.detach() for t in q]
    se = [ref_entropy(qd, p, 0.1) for c in range(2) for qd in qs for p in (clus.a.prototypes[c], clus.b.prototypes[c])]
    dod = [ref_dod(qd, clus.a.prototypes[c], clus.b.prototypes[c], 0.05) for c in range(2) for qd in qs]
    assert len(se) == 8 and len(dod) == 4  # 4 x nK and 2 x nK terms
    assert terms["self_entropy"] == pytest.approx(np.mean(se), rel=1e-9)
    assert terms["distance_of_distance"] == pytest.approx(np.mean(dod), rel=1e-9)
    # one K: the first clustering alone, as before
    one = DomainPair(*(Clustering(c.assignments[:1], c.prototypes[:1]) for c in clus))
    _, first = ucdir_objective(q, k, banks, ids, one, w, params)
    assert first["self_entropy"] == pytest.approx(np.mean(se[:4]), rel=1e-9)
    assert first["distance_of_distance"] == pytest.approx(np.mean(dod[:2]), rel=1e-9)
