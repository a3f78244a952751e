"""The alignment stage where embeddings are compared: a run's history evaluates with and without
it, the run folder keeps the fitted model, and ``ucdir evaluate --align`` fits it on any finished
run without writing (``ucdir_core.align``; no label is read to fit it)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from ucdir_core.align.stage import AlignmentModel
from ucdir_core.cli import main
from ucdir_core.config.run import RunConfig
from ucdir_core.evaluation import embedding
from ucdir_core.inference.loading import evaluate_run, load_trained
from ucdir_core.training import runs
from ucdir_core.training.build import train


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def aligned_run(tmp_path_factory, digits_root):
    from ucdir_core.config.presets import get_preset

    cfg = get_preset("digits_scratch").replace(
        root=str(digits_root), max_images_per_domain=96, image_size=16, resize_size=16, batch_size=16, epochs=2,
        clustering_start=1, cluster_contrastive_ramp_after=0, cluster_contrastive_ramp_end=1, self_entropy_start=1,
        distance_of_distance_start=1, num_clusters=(5,), kmeans_restarts=1, workers=0, eval_ks=(1, 5), device="cpu",
        alignment="harmony", harmony_pcs=20, harmony_clusters=6)
    run = tmp_path_factory.mktemp("aligned") / "run"
    history = train(cfg, run, progress=False, log=quiet)
    return cfg, run, history


def test_the_history_evaluates_with_and_without_the_runs_alignment(aligned_run):
    cfg, run, history = aligned_run
    for row in history:
        assert set(row["eval"]) == set(row["aligned"]["eval"]) == {"handwritten->printed", "printed->handwritten"}
        assert row["aligned"]["alignment"] == "harmony"
        assert 0 <= row["aligned"]["domain_mixing"] and 0 <= row["aligned"]["class_agreement"] <= 100
    summary = json.loads((run / runs.SUMMARY).read_text())
    assert summary["last"]["aligned"] == history[-1]["aligned"]


def test_the_run_folder_keeps_the_fitted_model_and_it_reproduces_the_last_epochs_alignment(aligned_run):
    cfg, run, history = aligned_run
    model = AlignmentModel.load(run / runs.ALIGNMENT)
    assert model.alignment == "harmony"
    trained = load_trained(run, "last")
    aligned = trained.embedder.aligned(model)
    for direction, metrics in history[-1]["aligned"]["eval"].items():
        assert aligned["eval"][direction] == pytest.approx(metrics, abs=1e-6)
    assert RunConfig.from_dict(json.loads((run / runs.CONFIG).read_text())).alignment_params.alignment == "harmony"


def test_evaluate_align_works_on_a_read_only_finished_run_and_writes_nothing(aligned_run, tmp_path, capsys):
    _, run, history = aligned_run
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    modes = {p: p.stat().st_mode for p in [run, *run.iterdir()]}
    try:
        for p in [*run.iterdir(), run]:
            p.chmod(stat.S_IREAD | (stat.S_IEXEC if p.is_dir() else 0))
        assert main(["evaluate", str(run), "--align", "harmony", "--json", str(tmp_path / "e.json")]) == 0
        report = json.loads((tmp_path / "e.json").read_text())
        assert report["aligned"]["alignment"] == "harmony"
        for direction, metrics in history[-1]["aligned"]["eval"].items():  # the run's own settings, refitted
            assert report["aligned"]["eval"][direction] == pytest.approx(metrics, abs=1e-6)
        centred = evaluate_run(run, "last", align="centred")["aligned"]
        assert centred["alignment"] == "centred" and set(centred["eval"]) == set(report["eval"])
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_the_stage_is_fitted_on_the_training_images_only(tiny_cfg, tmp_path, monkeypatch):
    seen = []
    original = embedding.fit_stage

    def recording(params, a, b):
        seen.append((len(a), len(b)))
        return original(params, a, b)

    monkeypatch.setattr(embedding, "fit_stage", recording)
    cfg = tiny_cfg.replace(split="heldout", epochs=2, alignment="centred")
    train(cfg, tmp_path / "run", progress=False, log=quiet)
    trained = load_trained(tmp_path / "run")
    n_train = tuple(len(d.train_eval) for d in trained.inputs)
    n_test = tuple(len(d.test_eval) for d in trained.inputs)
    assert n_train != n_test and seen and all(s == n_train for s in seen)


def test_no_alignment_adds_nothing(tiny_cfg, tmp_path):
    history = train(tiny_cfg.replace(epochs=1, cluster_contrastive_weight=0.0, self_entropy_weight=0.0,
                                     distance_of_distance_weight=0.0), tmp_path / "run", progress=False, log=quiet)
    assert "aligned" not in history[0] and not (tmp_path / "run" / runs.ALIGNMENT).exists()


def test_alignment_keys_are_config_keys_with_ranges():
    from ucdir_core.config.presets import get_preset

    cfg = get_preset("pacs").with_overrides(["alignment=harmony", "harmony_theta=2"])
    assert (cfg.alignment_params.alignment, cfg.alignment_params.harmony_theta) == ("harmony", 2.0)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="harmony_theta must be >= 0"):
        cfg.with_overrides(["harmony_theta=-1"])
    with pytest.raises(ValueError, match="alignment must be one of none, centred, harmony"):
        cfg.with_overrides(["alignment=coral"])
    assert np.isfinite(cfg.alignment_params.harmony_sigma)


def _offset_pair(seed=0, n=60, d=12, shift=10.0):
    """Three classes; domain B is domain A's class structure moved far along one axis."""
    from ucdir_core.base.pair import DomainPair

    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    centres = rng.normal(0, 1, (3, d))
    a = centres[y] + 0.3 * rng.normal(0, 1, (n, d))
    b = centres[y] + 0.3 * rng.normal(0, 1, (n, d))
    b[:, 0] += shift
    return DomainPair(a.astype(np.float32), b.astype(np.float32)), DomainPair(y, y)


def test_compare_alignment_measures_the_same_embeddings_before_and_after_the_stage():
    from ucdir_core.companion import compare_alignment
    from ucdir_core.config.presets import get_preset
    from ucdir_core.evaluation.alignment import mixing_and_agreement
    from ucdir_core.evaluation.metrics import retrieval_report

    emb, labels = _offset_pair()
    cfg = get_preset("digits").replace(domains=("a", "b"), eval_ks=(1, 5))
    out = compare_alignment(emb, emb, labels, cfg, cfg.alignment_params.replace(alignment="centred"))
    keys = {"eval", "domain_mixing", "class_agreement", "adjusted_rand", "balance"}
    assert set(out) == {"before", "after"} and set(out["before"]) == set(out["after"]) == keys
    raw = retrieval_report(emb.a, labels.a, emb.b, labels.b, (1, 5), names=("a", "b"))
    for direction, metrics in raw.items():
        assert out["before"]["eval"][direction] == pytest.approx(metrics)
    assert out["before"]["domain_mixing"] == pytest.approx(
        mixing_and_agreement(emb.a, labels.a, emb.b, labels.b)["domain_mixing"])
    # centring removes the offset: the domains mix, and k-means's clusters hold both domains
    assert out["before"]["domain_mixing"] < 0.05 < 0.5 < out["after"]["domain_mixing"]
    assert out["before"]["balance"] < 0.3 < 0.8 < out["after"]["balance"]
    assert out["after"]["eval"]["a->b"]["P@1"] > out["before"]["eval"]["a->b"]["P@1"]
    with pytest.raises(ValueError, match="alignment=none"):
        compare_alignment(emb, emb, labels, cfg, cfg.alignment_params)


def test_run_alignment_of_a_finished_run_is_its_history_and_writes_nothing(aligned_run):
    from ucdir_core.companion import run_alignment

    cfg, run, history = aligned_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    out = run_alignment(run, cfg.alignment_params)
    for direction, metrics in history[-1]["eval"].items():
        assert out["before"]["eval"][direction] == pytest.approx(metrics, abs=1e-6)
    for direction, metrics in history[-1]["aligned"]["eval"].items():
        assert out["after"]["eval"][direction] == pytest.approx(metrics, abs=1e-6)
    assert out["after"]["domain_mixing"] == pytest.approx(history[-1]["aligned"]["domain_mixing"])
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


# ----------------------------------------------------------------------------- retrieval with the run's alignment
def test_an_aligned_runs_indexes_hold_each_domains_corrected_embeddings(aligned_run):
    from ucdir_core.base.io import file_digest

    cfg, run, _ = aligned_run
    model = AlignmentModel.load(run / runs.ALIGNMENT)
    raw = load_trained(run).embedder.test_embeddings()
    for side, domain in enumerate(cfg.domains):
        meta = json.loads((run / "index" / domain / "meta.json").read_text())
        assert meta["alignment"] == {"alignment": "harmony", "file": runs.ALIGNMENT,
                                     "digest": file_digest(run / runs.ALIGNMENT), "as": domain}
        rows = np.load(run / "index" / domain / "embeddings.npy", allow_pickle=False)
        np.testing.assert_allclose(rows, model.apply(raw[side].numpy(), side), atol=1e-5)


def test_retrieve_aligns_the_query_and_the_gallery_the_same_way(aligned_run, digits_root, capsys, tmp_path):
    import shutil

    from test_index import brute_force, query_of, retrieve_json
    from ucdir_core.data.images import load_image
    from ucdir_core.inference.query import load_query_model

    cfg, run, _ = aligned_run
    query = query_of(digits_root, "handwritten", "3")
    fast, note = retrieve_json(capsys, run, query, "--top-k", "5")
    assert note == ""  # the index is fresh: made with this alignment stage
    model = AlignmentModel.load(run / runs.ALIGNMENT)
    q = model.apply(load_query_model(run).embed_images([load_image(query)]), 0)
    gallery = model.apply(load_trained(run).embedder.test_embeddings().b.numpy(), 1)
    order, scores = brute_force(gallery, q, 5)
    rows = np.load(run / "index" / "printed" / "embeddings.npy", allow_pickle=False)
    np.testing.assert_allclose(rows, gallery, atol=1e-5)
    assert [h["score"] for h in fast["results"]] == pytest.approx(scores[0].tolist(), abs=1e-5)
    # the gallery embedded in memory (no index) is corrected the same way
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "index")
    slow, note = retrieve_json(capsys, copy, query, "--top-k", "5")
    assert "there is none" in note
    assert [h["score"] for h in slow["results"]] == pytest.approx([h["score"] for h in fast["results"]], abs=1e-5)


def test_another_alignment_stage_makes_the_index_stale(aligned_run, digits_root, capsys, tmp_path):
    import shutil

    from test_index import query_of, retrieve_json

    cfg, run, _ = aligned_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    model = AlignmentModel.load(copy / runs.ALIGNMENT)
    arrays = model.arrays()
    arrays["corrections"] = arrays["corrections"] * 2  # another fitted stage
    AlignmentModel(model.params, model.dim, **arrays).save(copy / runs.ALIGNMENT)
    _, note = retrieve_json(capsys, copy, query_of(digits_root, "handwritten", "3"), "--top-k", "3")
    assert "index printed" in note and "made with another alignment stage" in note
    capsys.readouterr()
    assert main(["index", str(copy)]) == 0
    _, note = retrieve_json(capsys, copy, query_of(digits_root, "handwritten", "3"), "--top-k", "3")
    assert note == ""
    (copy / runs.ALIGNMENT).unlink()  # the stage gone: retrieval says so, and the aligned index is not used
    _, note = retrieve_json(capsys, copy, query_of(digits_root, "handwritten", "3"), "--top-k", "3")
    assert "retrieving without the run's alignment stage" in note and "not used now" in note


def test_harmonys_settings_are_no_difference_between_runs_that_do_not_align_with_it():
    """A run trained without Harmony is the same run whatever its (unread) harmony_* settings: a
    changed default must not make every finished run look like another config."""
    from ucdir_core.config.presets import get_preset
    from ucdir_core.config.run import config_differences

    cfg = get_preset("pacs")
    saved = cfg.with_overrides(["harmony_theta=3", "harmony_pcs=7"]).to_dict()
    assert config_differences(saved, cfg) == []
    assert config_differences(saved, cfg.with_overrides(["alignment=centred"])) == ["alignment"]
    aligned = cfg.with_overrides(["alignment=harmony"])
    assert config_differences(saved, aligned) == ["alignment", "harmony_pcs", "harmony_theta"]
    assert config_differences(aligned.with_overrides(["harmony_theta=3"]).to_dict(), aligned) == ["harmony_theta"]


def test_ucdir_index_names_the_alignment_its_indexes_carry(aligned_run, capsys):
    cfg, run, _ = aligned_run
    capsys.readouterr()
    assert main(["index", str(run)]) == 0  # fresh: left alone, nothing written
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == ["up to date", "up to date"]
    for line, domain in zip(lines, cfg.domains):
        assert f"aligned by the run's harmony stage as {domain}" in line


def test_harmonys_settings_are_capped_at_what_a_small_folder_allows():
    from ucdir_core.align.params import AlignmentParams
    from ucdir_core.align.stage import fit_alignment

    p = AlignmentParams(alignment="harmony")
    assert p.for_data(10_000, 128) == p  # every benchmark here: unchanged
    small = p.for_data(12, 128)
    assert (small.harmony_pcs, small.harmony_clusters, small.harmony_theta) == (11, 12, p.harmony_theta)
    assert AlignmentParams().for_data(3, 8) == AlignmentParams()  # none: nothing to cap
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 16)).astype(np.float32), rng.normal(size=(6, 16)).astype(np.float32)
    with pytest.raises(ValueError, match="harmony_pcs must be at most"):
        fit_alignment(p, a, b)
    model = fit_alignment(p.for_data(12, 16), a, b)  # the model records what it used
    assert model.params.harmony_pcs == 11 and model.apply(a, 0).shape == (6, 16)


def test_a_missing_harmonypy_is_refused_in_one_line_before_the_run_folder_is_touched(tiny_cfg, tmp_path, capsys,
                                                                                      monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "harmonypy" else real(name, *a))
    run = tmp_path / "run"
    argv = ["train", "--preset", "digits_scratch", "--root", tiny_cfg.root, "--run-dir", str(run), "--epochs", "1",
            "--set", "alignment=harmony", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "harmonypy" in err[0] and "--set alignment=none" in err[0]
    assert not run.exists()
