"""A short fit on a tiny generated dataset; resume after a kill gives the uninterrupted history."""

import json
from pathlib import Path

import pytest
import torch

from ucdir_core.cli import main
from ucdir_core.config.presets import get_preset
from ucdir_core.config.rows import row_config
from ucdir_core.training.build import build_trainer, train
from ucdir_core.training.trainer import Trainer


def strip(history):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in history]


def test_fit_writes_run_folder_and_history(tiny_cfg, tmp_path):
    history = train(tiny_cfg.replace(epochs=2), tmp_path / "run", progress=False, log=lambda s: None)
    assert [r["epoch"] for r in history] == [0, 1]
    row = history[1]
    for key in ("lr", "w_cluster_contrastive", "w_self_entropy", "w_distance_of_distance", "loss_instance_contrastive",
                "loss_cluster_contrastive", "loss_self_entropy", "loss_total", "wall_seconds", "eval", "score"):
        assert key in row, key
    assert history[0]["loss_self_entropy"] == 0 and row["loss_self_entropy"] > 0  # switched on at epoch 1
    assert set(row["eval"]) == {"handwritten->printed", "printed->handwritten"}
    assert set(row["eval"]["handwritten->printed"]) == {"P@1", "P@5", "mAP"}
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "history.jsonl", "last.pt", "best.pt", "summary.json", "manifest.json"} <= files
    header = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert header["config"]["epochs"] == 2 and "command" in header
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["last"]["epoch"] == 1 and "evaluation labels" in summary["best"]["selection"]


def test_same_seed_same_history(tiny_cfg, tmp_path):
    cfg = tiny_cfg.replace(epochs=2)
    h1 = train(cfg, tmp_path / "r1", progress=False, log=lambda s: None)
    h2 = train(cfg, tmp_path / "r2", progress=False, log=lambda s: None)
    assert strip(h1) == strip(h2)


def test_heldout_split_is_written_and_reused(tiny_cfg, tmp_path):
    cfg = row_config(tiny_cfg.replace(split="heldout", epochs=1), "instance")
    trainer, images = build_trainer(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    assert set(saved["handwritten"]["train"]).isdisjoint(saved["handwritten"]["test"])
    assert len(images.a.test) == len(saved["handwritten"]["test"]) > 0
    assert not trainer.inputs.a.test_is_train
    _, again = build_trainer(cfg.replace(split_seed=99), tmp_path / "run", progress=False, log=lambda s: None)
    assert again.a.test.paths == images.a.test.paths  # read back from split.json


def test_cli_train_evaluate_retrieve(tiny_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "digits_scratch", "--root", tiny_cfg.root, "--run-dir", str(run), "--epochs", "1", "--row", "instance", "--quiet", "--device", "cpu"]
    for key in ("max_images_per_domain", "image_size", "resize_size", "batch_size", "workers"):
        args += ["--set", f"{key}={getattr(tiny_cfg, key)}"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--which", "best", "--json", str(tmp_path / "e.json")]) == 0
    report = json.loads((tmp_path / "e.json").read_text())
    history = json.loads((run / "history.jsonl").read_text().splitlines()[-1])
    for direction, row in history["eval"].items():
        assert report["eval"][direction] == pytest.approx(row)
    capsys.readouterr()
    img = next(iter(sorted((Path(tiny_cfg.root) / "handwritten" / "3").glob("*.png"))))
    assert main(["retrieve", str(run), str(img), "--top-k", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query_domain"] == "handwritten" and out["gallery_domain"] == "printed"
    hits = out["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all("/printed/" in h["path"] for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]


def test_backbone_lr_scale_gives_the_backbone_its_own_learning_rate(tiny_cfg, tmp_path):
    trainer, _ = build_trainer(tiny_cfg.replace(backbone_lr_scale=0.1), tmp_path / "run", progress=False,
                            log=lambda s: None)
    groups = trainer.optim.optimizer.param_groups
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    backbone = {id(p) for p in trainer.model.encoder_q.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone
    before = {n: p.detach().clone() for n, p in trainer.model.encoder_q.named_parameters()}
    history = trainer.fit()
    lr = history[-1]["lr"]  # the last epoch's
    assert [g["lr"] for g in trainer.optim.optimizer.param_groups] == pytest.approx([0.1 * lr, lr])
    moved = {n for n, p in trainer.model.encoder_q.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("backbone.") for n in moved) and any(n.startswith("head.") for n in moved)


def test_one_parameter_group_at_the_reference_scale(tiny_cfg, tmp_path):
    trainer, _ = build_trainer(tiny_cfg, tmp_path / "run", progress=False, log=lambda s: None)
    (group,) = trainer.optim.optimizer.param_groups
    assert len(group["params"]) == len([p for p in trainer.model.encoder_q.parameters() if p.requires_grad])


def test_backbone_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        get_preset("digits").replace(backbone_lr_scale=0.0)


def test_every_checkpoint_and_output_names_the_same_epoch(tiny_cfg, tmp_path):
    """One ``epoch`` convention: ``evaluate --which last`` and ``best``, the checkpoints and
    ``summary.json`` all give the 0-based epoch whose weights they hold."""
    from ucdir_core.inference.loading import evaluate_run
    from ucdir_core.training import runs

    run = tmp_path / "run"
    train(tiny_cfg.replace(epochs=2), run, progress=False, log=lambda s: None)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"]["epoch"] == 1
    assert evaluate_run(run, "last")["epoch"] == summary["last"]["epoch"]
    assert evaluate_run(run, "best")["epoch"] == summary["best"]["epoch"]
    assert torch.load(run / runs.LAST, weights_only=True)["epoch"] == 1
    # a last.pt written before the convention stored the next epoch to run: read as the one before
    old = {k: v for k, v in torch.load(run / runs.LAST, weights_only=True).items() if k != "checkpoint_format"}
    assert runs.checkpoint_epoch({**old, "epoch": 2}) == 1
    assert runs.checkpoint_epoch({"epoch": 1, "model": {}}) == 1  # an old best.pt: already the epoch


def test_method_protoot_on_any_preset_switches_its_cross_domain_loss_on(tmp_path):
    """``ucdir train --method protoot`` with the default preset or ``--root DIR``: ProtoOT's counterpart
    preset, whose cross-domain loss switches on within the run (it stayed off before)."""
    from ucdir_core.cli import build_parser, config_from_args
    from ucdir_core.method.registry import build_method

    root = tmp_path / "data"
    for d in ("A", "B"):
        for c in ("x", "y"):
            (root / d / c).mkdir(parents=True)
    for argv, preset_epochs in ((["--method", "protoot"], None), (["--method", "protoot", "--epochs", "3"], 3),
                                (["--method", "protoot", "--root", str(root), "--domains", "A", "B",
                                  "--set", "num_clusters=2"], None)):
        args = build_parser(["train", *argv, "--run-dir", str(tmp_path / "r")]).parse_args(
            ["train", *argv, "--run-dir", str(tmp_path / "r")])
        cfg = config_from_args(args)
        assert cfg.method == "protoot" and cfg.optimizer == "adam"  # the counterpart preset (protoot_digits/_folder)
        on = build_method(cfg.method_params, cfg.num_clusters, cfg.epochs).switch_on_epochs(cfg.epochs)
        assert on["cross_domain"] == cfg.epochs // 2, argv
