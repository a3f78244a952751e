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
    original = embedding.fit_alignment

    def recording(params, a, b):
        seen.append((len(a), len(b)))
        return original(params, a, b)

    monkeypatch.setattr(embedding, "fit_alignment", recording)
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
