"""Odd files, divergence, data too small for the settings and changed data: each is one line, exit
status 2, and nothing half-written or lost on disk (docs/guarantees.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_folder
from ucdir_core.cli import main
from ucdir_core.config.presets import get_preset
from ucdir_core.data.checks import classify_file
from ucdir_core.training import runs
from ucdir_core.training.build import train
from ucdir_core.training.trainer import Trainer


def one_error_line(capsys, code):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("ucdir: error:")]
    assert len(lines) == 1, err
    return lines[0]


def folder(tmp_path, per_class=6, b_per_class=None, size=32):
    spec = {"A": {c: per_class for c in ("cat", "dog", "owl")},
            "B": {c: b_per_class or per_class for c in ("cat", "dog", "owl")}}
    return write_folder(tmp_path / "data", spec, size=size)


def args(root, run, *extra):
    """A fast command on the small folder: the small CNN end to end, 16 px."""
    return ["train", "--preset", "digits_scratch", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run),
            "--quiet", "--device", "cpu", "--epochs", "2", "--set", "image_size=16", "--set", "resize_size=16",
            "--set", "batch_size=4", "--set", "num_clusters=3", "--set", "clustering_start=1", "--set",
            "kmeans_restarts=1", "--set", "eval_ks=1", *extra]


def bad_exif_png(path: Path) -> Path:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path, exif=b"garbage!")
    return path


# ----------------------------------------------------------------------------- 1. one decode path
def test_a_file_the_decoder_rejects_oddly_is_a_broken_file_everywhere(tmp_path, capsys):
    root = folder(tmp_path)
    bad = bad_exif_png(root / "A" / "cat" / "zz_bad_exif.png")
    assert classify_file(str(bad)) == "unreadable"
    assert main(["data", "check", str(root), "--json", str(tmp_path / "m.json")]) == 0
    assert "unreadable: 1 files" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(args(root, run)) == 0
    manifest = json.loads((run / runs.MANIFEST).read_text())
    assert manifest["problems"]["unreadable"] == [str(bad)]
    identity = json.loads((run / runs.DATASET).read_text())
    assert "A/cat/zz_bad_exif.png" not in [e[0] for e in identity["A"]["train"]]
    capsys.readouterr()
    line = one_error_line(capsys, main(["retrieve", str(run), str(bad)]))
    assert "zz_bad_exif.png is not a readable image" in line and "SyntaxError" in line


# ----------------------------------------------------------------------------- 2. divergence
def test_an_extreme_learning_rate_stops_in_one_line_and_leaves_no_checkpoint(tmp_path, capsys):
    root = folder(tmp_path)
    line = one_error_line(capsys, main(args(root, tmp_path / "run", "--set", "lr=1e30")))
    assert "training diverged at epoch 0" in line and "not finite" in line and "lr=" in line
    assert "the keys that can cause it, now: lr 1e+30, momentum 0.99, temperature 0.2" in line
    assert not (tmp_path / "run" / runs.LAST).exists() and not (tmp_path / "run" / runs.LOCK).exists()


def test_an_injected_non_finite_loss_keeps_the_last_finite_checkpoint_and_resume_works(tmp_path, capsys,
                                                                                      monkeypatch):
    root = folder(tmp_path)
    run = tmp_path / "run"
    original = Trainer.step

    def poisoned(self, x_q, x_k, ids, where=(0, 0)):
        if where == (1, 2):  # the third step of the second epoch
            monkeypatch.setattr(self.method, "loss", lambda batch: (torch.tensor(float("nan"), requires_grad=True),
                                                                    {"instance_contrastive": float("nan")}))
        return original(self, x_q, x_k, ids, where)

    monkeypatch.setattr(Trainer, "step", poisoned)
    line = one_error_line(capsys, main(args(root, run)))
    assert "epoch 1, step 2" in line and "instance_contrastive loss" in line and "last.pt holds epoch 0" in line
    assert torch.load(run / runs.LAST, weights_only=True)["epoch"] == 0  # epoch 0 done, nothing of epoch 1
    monkeypatch.setattr(Trainer, "step", original)
    assert main(args(root, run, "--resume", "--set", "lr=0.01")) == 0
    assert [r["epoch"] for r in runs.RunFolder(run).history()] == [0, 1]
    assert json.loads((run / runs.CONFIG).read_text())["lr"] == 0.01
    assert "resuming with lr 0.03 -> 0.01" in capsys.readouterr().out


def test_resume_refuses_changes_beyond_the_optimisation_settings(tmp_path, capsys):
    root = folder(tmp_path)
    run = tmp_path / "run"
    assert main(args(root, run, "--epochs", "1", "--row", "instance")) == 0
    capsys.readouterr()
    saved = (run / runs.CONFIG).read_text()
    line = one_error_line(capsys, main(args(root, run, "--resume", "--set", "num_clusters=2")))
    assert "a resumed run keeps its config: num_clusters cannot change" in line and "start a new run folder" in line
    line = one_error_line(capsys, main(args(root, run, "--resume", "--set", "momentum=2")))
    assert "momentum must be in [0, 1), got 2.0" in line  # checked on resume too
    assert (run / runs.CONFIG).read_text() == saved  # nothing written


# ----------------------------------------------------------------------------- 3. too small, found early
@pytest.mark.parametrize("case", ["heldout", "clusters", "batch"])
def test_data_too_small_is_one_line_before_anything_is_written(tmp_path, capsys, case):
    root = folder(tmp_path, b_per_class=1 if case == "heldout" else None)
    run = tmp_path / "run"
    extra = {"heldout": ["--split", "heldout"], "clusters": ["--set", "num_clusters=30"],
             "batch": ["--set", "batch_size=64"]}[case]
    line = one_error_line(capsys, main(args(root, run, *extra)))
    expected = {"heldout": ("domain B", "held-out split", "--split full"),
                "clusters": ("num_clusters 30", "domain A's 18 training images", "--set num_clusters=N"),
                "batch": ("batch_size 64", "18 pairs", "--set batch_size=N")}[case]
    assert all(text in line for text in expected), line
    assert not run.exists()  # no config, history, manifest or lock left: the same command may run again
    fixed = {"heldout": ["--split", "full"], "clusters": ["--set", "num_clusters=3"], "batch": ["--set", "batch_size=4"]}
    assert main(args(root, run, *extra, *fixed[case])) == 0


def test_the_default_preset_adapts_the_batch_to_a_small_folder(tmp_path, capsys):
    from ucdir_core.training.trainer import epoch_batch_size

    folder_cfg = get_preset("folder")
    assert epoch_batch_size(folder_cfg, 60) == 6 and epoch_batch_size(folder_cfg, 4000) == 64
    assert epoch_batch_size(get_preset("pacs"), 4000) == 64
    root = folder(tmp_path, per_class=20)
    run = tmp_path / "run"
    code = main(["train", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run), "--device", "cpu",
                 "--set", "image_size=32", "--set", "resize_size=32", "--epochs", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "60 pairs per epoch, batch 6: 10 steps per epoch" in out and "untrained: A->B P@1" in out
    assert "warning: 20 training steps in all" in out
    header = json.loads((run / runs.HISTORY).read_text().splitlines()[0])
    assert header["batch_size"] == 6 and header["steps_per_epoch"] == 10 and "A->B" in header["untrained"]


# ----------------------------------------------------------------------------- 4. changed data
def test_changed_data_under_a_run_is_refused_by_name(tmp_path, capsys):
    root = folder(tmp_path)
    run = tmp_path / "run"
    assert main(args(root, run, "--epochs", "1", "--row", "instance")) == 0
    (root / "A" / "dog" / "002.png").unlink()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / "A" / "dog" / "new.png")  # the count is kept
    capsys.readouterr()
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}  # index/ too
    line = one_error_line(capsys, main(args(root, run, "--resume", "--epochs", "2")))
    assert "dataset changed" in line and "1 added (A/dog/new.png)" in line and "1 removed (A/dog/002.png)" in line
    line = one_error_line(capsys, main(["evaluate", str(run)]))
    assert "dataset changed" in line and "A/dog/new.png" in line
    assert {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_modified_file_is_named(tmp_path, capsys):
    root = folder(tmp_path)
    run = tmp_path / "run"
    assert main(args(root, run, "--epochs", "1", "--row", "instance")) == 0
    target = root / "B" / "owl" / "001.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    capsys.readouterr()
    assert "1 modified (B/owl/001.png)" in one_error_line(capsys, main(["evaluate", str(run)]))


def test_the_same_bytes_with_new_times_are_the_same_data(tmp_path, capsys):
    """A dataset copied elsewhere (every modification time new, every byte the same) still serves its
    runs; an identity written before digests were kept still compares modification times."""
    root = folder(tmp_path)
    run = tmp_path / "run"
    assert main(args(root, run, "--epochs", "1", "--row", "instance")) == 0
    for f in root.rglob("*.png"):
        os.utime(f, ns=(10**9, 10**9))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    saved = json.loads((run / runs.DATASET).read_text())
    assert all(len(e) == 4 for e in saved["A"]["train"])
    old = {d: {"train": [e[:3] for e in v["train"]], "test": v["test"]} for d, v in saved.items()}  # no digests
    (run / runs.DATASET).write_text(json.dumps(old))
    assert "modified (A/" in one_error_line(capsys, main(["evaluate", str(run)]))


# ----------------------------------------------------------------------------- 6. the paper presets
def test_a_paper_preset_without_its_checkpoint_says_what_to_pass(tmp_path, capsys):
    root = folder(tmp_path)
    for preset in ("office_home", "domainnet", "protoot_domainnet"):
        line = one_error_line(capsys, main(["train", "--preset", preset, "--root", str(root), "--domains", "A", "B",
                                            "--run-dir", str(tmp_path / "r")]))
        assert "ResNet-50 from MoCo v2" in line and "--checkpoint FILE" in line and "--backbone NAME" in line
    assert not (tmp_path / "r").exists()


def test_choosing_another_backbone_on_purpose_is_said_and_recorded(tmp_path, capsys):
    from ucdir_core.cli import build_parser, config_from_args

    root = folder(tmp_path)
    argv = ["train", "--preset", "office_home", "--root", str(root), "--domains", "A", "B", "--run-dir", "r",
            "--backbone", "small_cnn"]
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    assert cfg.backbone == "small_cnn"
    assert "preset office_home's backbone is resnet50_moco; training small_cnn" in capsys.readouterr().out


def test_k_from_the_folders_counts_only_classes_with_a_usable_image(tmp_path, capsys):
    from ucdir_core.data.folders import shared_class_count

    root = folder(tmp_path)
    for f in (root / "B" / "owl").iterdir():  # every owl sketch is broken
        f.write_bytes(b"not an image")
    assert shared_class_count(root, ("A", "B")) == 2
    run = tmp_path / "run"
    assert main(["train", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run), "--device", "cpu",
                 "--epochs", "1", "--row", "instance", "--set", "image_size=32", "--set", "resize_size=32"]) == 0
    assert json.loads((run / runs.CONFIG).read_text())["num_clusters"] == [2]
