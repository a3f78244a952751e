"""Presets pinned to the spec's table; schedules as the spec defines them."""

import json
import math
from pathlib import Path

import pytest

from ucdir_core.base.params import at_epoch
from ucdir_core.config.presets import PRESETS, get_preset
from ucdir_core.config.run import RunConfig, config_differences
from ucdir_core.method.registry import build_method
from ucdir_core.method.schedules import LinearRamp, StepOn
from ucdir_core.method.ucdir import UCDIRSchedule
from ucdir_core.training.schedules import CosineLR, lr_schedule

COMMON = dict(clustering_start=20, temperature=0.2, threshold=0.2, momentum=0.999, lr=2e-4, batch_size=64,
              epochs=200, mlp=True, feature_dim=128, cluster_contrastive_ramp_after=20, cluster_contrastive_ramp_end=100, cluster_contrastive_weight_initial=0.0,
              sgd_momentum=0.9, weight_decay=1e-4, distance_of_distance_temperature=0.01)


@pytest.mark.parametrize("name,values", [
    ("office_home", dict(num_clusters=(65,), cluster_contrastive_weight=0.5, self_entropy_temperature=0.01, self_entropy_weight=1.0, self_entropy_start=100,
                         distance_of_distance_weight=0.5, distance_of_distance_start=100, eval_ks=(1, 5, 15))),
    ("domainnet", dict(num_clusters=(7,), cluster_contrastive_weight=1.0, self_entropy_temperature=0.1, self_entropy_weight=0.5, self_entropy_start=100,
                       distance_of_distance_weight=0.1, distance_of_distance_start=100, eval_ks=(50, 100, 200))),
])
def test_paper_presets_pinned(name, values):
    cfg = get_preset(name)
    for key, want in {**COMMON, **values}.items():
        assert cfg.flat()[key] == (list(want) if isinstance(want, tuple) else want), key
    assert (cfg.kmeans_iters, cfg.kmeans_restarts, cfg.kmeans_max_points_per_centroid,
            cfg.kmeans_min_points_per_centroid) == (20, 5, 2000, 2)


@pytest.mark.parametrize("name,k,ks", [("protoot_office_home", 65, (1, 5, 15)), ("protoot_domainnet", 7, (50, 100, 200))])
def test_protoot_presets_pinned_to_the_released_values(name, k, ks):
    cfg = get_preset(name)
    released = dict(method="protoot", backbone="resnet50_moco", optimizer="adam", lr=2.5e-4, lr_schedule="constant",
                    weight_decay=5e-4, epochs=200, cross_domain_weight=0.01, cross_domain_start=0.5, momentum=0.999,
                    temperature=0.2, batch_size=64, mlp=True, feature_dim=128, kmeans_iters=50, kmeans_restarts=20,
                    kmeans_max_points_per_centroid=2000, kmeans_min_points_per_centroid=2, sinkhorn_epsilon=0.05,
                    sinkhorn_iterations=3, in_domain_neighbour_weight=0.5, in_domain_prototype_weight=0.1,
                    transport_similarity="normalised", cross_domain_negatives="normalised", marginal_order="kmeans",
                    num_clusters=(k,), eval_ks=ks, image_size=224)
    for key, want in released.items():
        assert cfg.flat()[key] == (list(want) if isinstance(want, tuple) else want), key


def test_protoot_cpu_presets_keep_the_released_proportions():
    for data in ("pacs", "digits", "folder"):
        cpu, ucdir = get_preset(f"protoot_{data}"), get_preset(data)
        assert cpu.method == "protoot" and cpu.optimizer == "adam" and cpu.lr_schedule == "constant"
        assert cpu.method_params.cross_domain_start == 0.5  # from half of training, as 100 of 200
        assert (cpu.trunk_blocks, cpu.image_size, cpu.epochs, cpu.num_clusters) == \
            (ucdir.trunk_blocks, ucdir.image_size, ucdir.epochs, ucdir.num_clusters)


def test_every_preset_is_valid_and_round_trips():
    for name, cfg in PRESETS.items():
        assert RunConfig.from_dict(cfg.to_dict()) == cfg, name
        assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg, name


#: every preset's learning rate and loss weights at every epoch, recorded from commit e73e027 (before
#: the methods owned their parameters and schedules could be shares of training)
SCHEDULES = json.loads((Path(__file__).parent / "data" / "preset_schedules.json").read_text())


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_preset_keeps_its_per_epoch_weights_and_learning_rate(name):
    cfg = get_preset(name)
    method, lr = build_method(cfg.method_params, cfg.num_clusters, cfg.epochs), lr_schedule(cfg)
    want = SCHEDULES[name]
    assert cfg.epochs == want["epochs"]
    assert [lr(e) for e in range(cfg.epochs)] == want["lr"]
    assert [method.weights(e) for e in range(cfg.epochs)] == want["weights"]


def test_a_config_written_before_the_methods_owned_their_parameters_still_loads():
    old = json.loads((Path(__file__).parent / "data" / "config_before_method_params.json").read_text())
    assert "cross_domain_weight" in old and "cluster_contrastive_start" in old  # one flat dict, every method's keys
    cfg = RunConfig.from_dict(old)
    assert cfg == get_preset("digits").pinned()  # its schedule as epochs (1, 1-3, 2), the preset's as shares
    assert config_differences(old, get_preset("digits")) == []
    assert config_differences(old, get_preset("digits").replace(self_entropy_start=0.6)) == ["self_entropy_start"]


def test_overrides_and_errors():
    cfg = get_preset("digits").with_overrides(["epochs=5", "num_clusters=7,14", "amp=false", "root=none", "lr=0.1",
                                               "threshold=0.3", "self_entropy_start=0.5", "clustering_start=2"])
    assert (cfg.epochs, cfg.num_clusters, cfg.amp, cfg.root, cfg.lr) == (5, (7, 14), False, None, 0.1)
    p = cfg.method_params
    assert (p.threshold, p.self_entropy_start, p.clustering_start) == (0.3, 0.5, 2)
    assert isinstance(p.self_entropy_start, float) and isinstance(p.clustering_start, int)
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.with_overrides(["nope=1"])
    with pytest.raises(ValueError):
        cfg.with_overrides(["epochs"])
    with pytest.raises(ValueError):
        cfg.replace(split="train")
    with pytest.raises(ValueError):
        cfg.replace(domains=("a", "a"))
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("imagenet")


@pytest.mark.parametrize("item, message", [
    ("momentum=2", "momentum must be in [0, 1), got 2.0"),
    ("momentum=-5", "momentum must be in [0, 1), got -5.0"),
    ("temperature=0", "temperature must be > 0, got 0.0"),
    ("lr=-1", "lr must be > 0, got -1.0"),
    ("heldout_fraction=1", "heldout_fraction must be in (0, 1), got 1.0"),
    ("threshold=1.5", "threshold must be in [0, 1], got 1.5"),
    ("kmeans_iters=0", "kmeans_iters must be >= 1, got 0"),
    ("num_clusters=4,0", "num_clusters must be >= 1, got (4, 0)"),
    ("batch_size=1", "batch_size must be >= 2, got 1"),
    ("self_entropy_weight=nan", "self_entropy_weight must be >= 0, got nan"),
    ("self_entropy_temperature=inf", "self_entropy_temperature must be > 0, got inf"),
    ("sgd_momentum=1", "sgd_momentum must be in [0, 1), got 1.0"),
    ("workers=-1", "workers must be >= 0, got -1"),
    ("self_entropy_start=1.5", "self_entropy_start must be an epoch"),
    ("clustering_start=-1", "clustering_start must be an epoch"),
    ("split=train", "split must be one of full, heldout"),
])
def test_every_numeric_key_has_a_range_refused_in_one_line(item, message):
    with pytest.raises(ValueError) as exc:
        get_preset("digits").with_overrides([item])
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_every_numeric_key_declares_its_range():
    from dataclasses import fields

    from ucdir_core.method.params import METHOD_PARAMS

    for cls in (RunConfig, *METHOD_PARAMS.values()):
        for f in fields(cls):
            numeric = str(f.type).split(" |")[0] in ("int", "float", "tuple[int, ...]", "EpochOrShare")
            if numeric:
                assert "range" in f.metadata or f.metadata.get("kind"), f"{cls.__name__}.{f.name}"


def test_a_key_of_another_method_is_refused_naming_its_method():
    with pytest.raises(ValueError, match="cross_domain_weight is a parameter of method protoot, not of ucdir"):
        get_preset("digits").with_overrides(["cross_domain_weight=1"])
    with pytest.raises(ValueError, match="threshold is a parameter of method ucdir, not of protoot"):
        get_preset("protoot_digits").replace(threshold=0.3)
    switched = get_preset("digits").with_overrides(["method=protoot", "cross_domain_weight=2"])
    assert switched.method == "protoot" and switched.method_params.cross_domain_weight == 2.0
    with pytest.raises(ValueError, match="unknown method"):
        get_preset("digits").replace(method="nope")


def test_old_key_names_are_read_under_the_new_ones():
    cfg = get_preset("digits").with_overrides(["cw_sat=4", "cluster_contrastive_weight_sat=0.7",
                                               "distance_of_distance_center=true"])
    p = cfg.method_params
    assert (p.cluster_contrastive_ramp_end, p.cluster_contrastive_weight, p.distance_of_distance_centred) == (4, 0.7, True)


@pytest.mark.parametrize("preset", ["digits", "folder", "pacs"])
@pytest.mark.parametrize("epochs", [2, 3, 5, 8, 20])
def test_protoot_switches_its_cross_domain_loss_on_with_any_preset_and_epochs(preset, epochs):
    """``--method protoot`` on a UCDIR preset (the method's defaults) and the ProtoOT CPU preset:
    the cross-domain loss is on from half of training, whatever ``--epochs``."""
    for cfg in (get_preset(preset).replace(method="protoot", epochs=epochs),
                get_preset(f"protoot_{preset}").replace(epochs=epochs)):
        on = build_method(cfg.method_params, cfg.num_clusters, cfg.epochs).switch_on_epochs(cfg.epochs)
        assert on["cross_domain"] == epochs // 2


def test_a_term_that_never_switches_on_is_refused_in_one_line():
    cfg = get_preset("protoot_digits").replace(cross_domain_start=7)
    with pytest.raises(ValueError, match=r"cross_domain is weighted 1 but never switches on in 5 epoch\(s\) "
                                         r"\(cross_domain_start=7\)"):
        build_method(cfg.method_params, cfg.num_clusters, cfg.epochs)
    build_method(cfg.method_params.replace(cross_domain_weight=0.0), cfg.num_clusters, cfg.epochs)  # off: fine
    ucdir = get_preset("office_home").replace(epochs=50)  # self-entropy from epoch 100 of 50
    with pytest.raises(ValueError, match="self_entropy is weighted 1 but never switches on in 50"):
        build_method(ucdir.method_params, ucdir.num_clusters, ucdir.epochs)
    for epochs in (2, 3, 8):  # the CPU regime's shares hold for other epoch counts
        short = get_preset("digits").replace(epochs=epochs)
        on = build_method(short.method_params, short.num_clusters, epochs).switch_on_epochs(epochs)
        assert all(e is not None for e in on.values()), (epochs, on)


def test_at_epoch_reads_ints_as_epochs_and_floats_as_shares():
    assert (at_epoch(3, 10), at_epoch(0.5, 200), at_epoch(0.5, 5), at_epoch(0.6, 5), at_epoch(1.0, 5)) == (3, 100, 2, 3, 5)


def test_cosine_lr():
    lr = CosineLR(2e-4, 200)
    assert lr(0) == pytest.approx(2e-4)
    assert lr(100) == pytest.approx(1e-4)
    assert lr(50) == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_linear_ramp_edges():
    ramp = LinearRamp(20, 100, 0.0, 0.5)
    assert ramp(0) == ramp(20) == 0.0
    assert ramp(60) == pytest.approx(0.25)
    assert ramp(21) == pytest.approx(0.5 / 80)
    assert ramp(100) == ramp(199) == 0.5


def test_step_on_and_full_schedule():
    assert StepOn(100, 0.5)(99) == 0.0 and StepOn(100, 0.5)(100) == 0.5
    cfg = get_preset("office_home")
    sched = UCDIRSchedule.from_params(cfg.method_params, cfg.epochs)
    w19, w20, w60, w100 = (sched.weights(e) for e in (19, 20, 60, 100))
    assert not w19.clustering and w20.clustering
    assert w20.cluster_contrastive == 0.0 and w60.cluster_contrastive == pytest.approx(0.25)
    assert w60.self_entropy == 0.0 and w100.self_entropy == 1.0 and w100.distance_of_distance == 0.5
    method = build_method(cfg.method_params, cfg.num_clusters, cfg.epochs)
    assert method.switch_on_epochs(200) == {"cluster_contrastive": 21, "self_entropy": 100, "distance_of_distance": 100}


def test_cluster_terms_wait_for_warmup():
    cfg = get_preset("digits").replace(clustering_start=5, self_entropy_start=0, distance_of_distance_start=0,
                                       cluster_contrastive_ramp_after=0, cluster_contrastive_weight_initial=1.0)
    sched = UCDIRSchedule.from_params(cfg.method_params, 10)
    assert sched.weights(4).self_entropy == sched.weights(4).cluster_contrastive == 0.0
    assert sched.weights(5).self_entropy > 0


def test_config_differences_fill_new_keys_with_defaults_and_name_what_differs():
    cfg = get_preset("pacs")
    saved = cfg.to_dict()
    del saved["backbone_lr_scale"]  # written before the key existed: its default
    assert config_differences(saved, cfg) == []
    assert config_differences({**saved, "lr": 1.0, "seed": 3}, cfg) == ["lr", "seed"]
    assert config_differences({**saved, "root": "elsewhere"}, cfg, ignore=("root",)) == []
    assert config_differences(None, cfg)[0].startswith("config (unreadable")
    assert config_differences({**saved, "no_such_key": 1}, cfg)[0].startswith("config (unreadable")
