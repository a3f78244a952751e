"""A newcomer's first hour: help that shows what runs, retrieval that says what it searched, plain
logs in a file, a project that installs without warnings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import write_folder
from ucdir_core.cli import main
from ucdir_core.config.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small two-domain folder and a finished one-epoch run on it."""
    tmp = tmp_path_factory.mktemp("newcomer")
    root = write_folder(tmp / "data", {"A": {"cat": 6, "dog": 6}, "B": {"cat": 6, "dog": 6}}, size=24)
    run = tmp / "run"
    assert main(["train", "--preset", "digits_scratch", "--root", str(root), "--domains", "A", "B", "--run-dir",
                 str(run), "--device", "cpu", "--epochs", "1", "--row", "instance", "--set", "image_size=16", "--set", "resize_size=16",
                 "--set", "batch_size=4", "--set", "num_clusters=2", "--set", "kmeans_restarts=1",
                 "--set", "eval_ks=1"]) == 0
    return root, run


@pytest.mark.parametrize("argv, preset", [([], "digits"), (["--root", "x"], "folder"), (["--preset", "pacs"], "pacs")])
def test_train_help_shows_the_values_of_the_preset_that_runs(argv, preset, capsys):
    with pytest.raises(SystemExit):
        main(["train", *argv, "--help"])
    out = capsys.readouterr().out
    cfg = get_preset(preset)
    assert f"with the values of preset {preset}, the one this command uses" in out
    assert f"(default: the {preset} preset's, {cfg.epochs})" in " ".join(out.split())
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ") and
             len(line.split()) >= 2 and line.split()[0] in ("epochs", "image_size", "lr", "backbone")}
    assert lines == {"epochs": repr(cfg.epochs), "image_size": repr(cfg.image_size), "lr": repr(cfg.lr),
                     "backbone": repr(cfg.backbone)}
    if preset == "folder":
        assert "from the folders: the number of class folders both domains share" in out


def test_retrieve_searches_the_other_domain_and_says_so(small, capsys):
    root, run = small
    query = sorted((root / "B" / "dog").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["retrieve", str(run), str(query), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"query {query} (from B); searching A"
    assert lines[1].split() == ["rank", "score", "path"]
    assert len(lines) == 6 and all("/A/" in line for line in lines[2:5])
    assert lines[5] == "(score: cosine similarity of the embeddings, from -1 to 1; higher is closer)"
    assert main(["retrieve", str(run), str(query), "--top-k", "2", "--gallery-domain", "B", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gallery_domain"] == "B" and out["query_domain"] == "B" and len(out["results"]) == 2


def test_retrieve_takes_a_folder_of_queries(small, capsys, tmp_path):
    root, run = small
    capsys.readouterr()
    assert main(["retrieve", str(run), str(root / "A" / "cat"), "--top-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 6 and all(r["query_domain"] == "A" and r["gallery_domain"] == "B" for r in out)
    (tmp_path / "empty").mkdir()
    assert main(["retrieve", str(run), str(tmp_path / "empty")]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_a_log_redirected_to_a_file_has_plain_lines(small, capsys):
    root, _ = small
    capsys.readouterr()
    assert main(["train", "--preset", "digits_scratch", "--root", str(root), "--domains", "A", "B", "--run-dir",
                 str(Path(small[1]).parent / "plain"), "--device", "cpu", "--epochs", "2", "--set", "image_size=16",
                 "--set", "resize_size=16", "--set", "batch_size=4", "--set", "num_clusters=2",
                 "--set", "kmeans_restarts=1", "--set", "eval_ks=1"]) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "\x1b[" not in text and "\r" not in text and "it/s" not in text
    assert "epoch 0 | lr" in captured.out and "epoch 1 | lr" in captured.out


def test_the_project_metadata_uses_an_spdx_license_string():
    text = (ROOT / "pyproject.toml").read_text()  # a TOML table is deprecated and warns at every install
    assert re.search(r'^license = "MIT"$', text, re.M) and "license = {" not in text


def test_figures_of_other_datasets_are_run_products_not_tracked():
    ignore = (ROOT / ".gitignore").read_text().splitlines()
    assert "figures/*" in ignore and "!figures/pacs/" in ignore


def test_a_training_run_says_what_it_does_and_ends_with_where_and_what_next(tmp_path, capsys):
    """The first line says what is about to happen; slow steps are announced; an epoch line names the
    terms that switch on there (why the loss jumps); the end says where the run is, the last epoch
    against the untrained model in each direction, and the next commands (JSON with --json)."""
    root = write_folder(tmp_path / "data", {"A": {c: 8 for c in "xyz"}, "B": {c: 8 for c in "xyz"}}, size=16)
    run = tmp_path / "run"
    argv = ["train", "--preset", "digits_scratch", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run),
            "--quiet", "--device", "cpu", "--epochs", "2", "--set", "image_size=16", "--set", "resize_size=16",
            "--set", "batch_size=4", "--set", "num_clusters=3", "--set", "kmeans_restarts=1", "--set", "eval_ks=1"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"training UCDIR on A and B of {root} (split full), 2 epochs, small_cnn at 16 px, into {run}"
    assert any("recording the dataset's files" in line for line in out)
    epoch1 = next(line for line in out if line.startswith("epoch 1 "))
    assert "switched on: cluster_contrastive, self_entropy, distance_of_distance" in epoch1
    assert not any("switched on" in line for line in out if line.startswith("epoch 0 "))
    end = out[out.index(next(line for line in out if line.startswith("run saved in "))):]
    assert end[0] == f"run saved in {run} (last epoch 1; summary.json, history.jsonl, last.pt, best.pt)"
    assert end[1].startswith("  A->B: untrained -> last epoch: P@1 ") and "mAP" in end[1]
    assert end[3].startswith(f"next: ucdir evaluate {run}") and end[4].strip().startswith(f"ucdir retrieve {run}")
    assert main([*argv, "--overwrite", "--json"]) == 0
    tail = capsys.readouterr().out
    assert json.loads(tail[tail.index("{"):])["last"]["epoch"] == 1


def test_an_aligned_run_ends_with_what_retrieval_searches(tmp_path, capsys):
    """The folder default aligns: its closing block shows the numbers after the alignment stage too."""
    root = write_folder(tmp_path / "data", {"A": {c: 8 for c in "xyz"}, "B": {c: 8 for c in "xyz"}}, size=16)
    run = tmp_path / "run"
    argv = ["train", "--preset", "digits_scratch", "--root", str(root), "--domains", "A", "B", "--run-dir", str(run),
            "--quiet", "--device", "cpu", "--epochs", "2", "--set", "image_size=16", "--set", "resize_size=16",
            "--set", "batch_size=4", "--set", "num_clusters=3", "--set", "kmeans_restarts=1", "--set", "eval_ks=1",
            "--set", "alignment=harmony"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(line for line in out if "alignment stage" in line)
    assert line.startswith("  after the harmony alignment stage (what ucdir retrieve searches): A->B P@1 ")
    assert "B->A P@1" in line and "mAP" in line
