"""Two processes (gloo, CPU): identical memory banks on both ranks, metrics close to one process,
and a run killed in its second epoch resumes under two processes to the uninterrupted result."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ucdir_core.config.presets import get_preset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(root, method="ucdir"):
    cfg = get_preset("digits_scratch").replace(
        root=str(root), max_images_per_domain=96, image_size=16, resize_size=16, batch_size=16, epochs=2,
        clustering_start=1, cluster_contrastive_ramp_after=0, cluster_contrastive_weight_initial=0.5, self_entropy_start=1,
        distance_of_distance_start=1, num_clusters=(5,), kmeans_restarts=1, workers=0, eval_ks=(1, 5), device="cpu")
    return cfg if method == "ucdir" else cfg.replace(method="protoot", optimizer="adam", lr=1e-3,
                                                     lr_schedule="constant", cross_domain_start=1)


def worker(rank, world, port, root, out, mode="fit", method="ucdir"):
    """``mode``: "fit" (whole run), "kill" (dies at the start of the second epoch), "resume"."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from ucdir_core.base.distributed import init_from_env
    from ucdir_core.training.build import build_trainer
    from ucdir_core.training.trainer import Trainer

    init_from_env()
    trainer, _ = build_trainer(tiny(root, method), os.path.join(out, "run"), progress=False, log=lambda s: None)
    trained, original = [], Trainer.train_epoch

    def counted(self, epoch):
        if mode == "kill" and epoch == 1:
            raise KeyboardInterrupt  # the processes die at the start of the second epoch
        trained.append(epoch)
        return original(self, epoch)

    Trainer.train_epoch = counted
    try:
        history = trainer.fit(resume=mode == "resume")
    except KeyboardInterrupt:
        if mode != "kill":
            raise
        dist.destroy_process_group()
        return
    assert mode != "kill", "the run was not interrupted"
    torch.save({"banks": [b.clone() for b in trainer.model.banks], "eval": history[-1]["eval"],
                "params": [p.detach().clone() for p in trainer.model.encoder_q.parameters()],
                "trained_epochs": trained, "method": trainer.method.state_dict()},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_keep_banks_identical(digits_root, tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(digits_root), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for b0, b1 in zip(r0["banks"], r1["banks"]):
        torch.testing.assert_close(b0, b1, rtol=0, atol=0)
    for p0, p1 in zip(r0["params"], r1["params"]):
        torch.testing.assert_close(p0, p1)
    assert r0["eval"] == r1["eval"]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()[1:]]
    assert [r["epoch"] for r in history] == [0, 1]  # written once, by rank 0

    from ucdir_core.training.build import train

    single = train(tiny(digits_root), tmp_path / "single", progress=False, log=lambda s: None)[-1]["eval"]
    for direction, metrics in single.items():
        assert abs(metrics["mAP"] - r0["eval"][direction]["mAP"]) < 5.0


@pytest.mark.slow
def test_two_processes_keep_protoot_banks_and_prototypes_identical(digits_root, tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(digits_root), str(tmp_path), "fit", "protoot"), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for b0, b1 in zip(r0["banks"], r1["banks"]):
        torch.testing.assert_close(b0, b1, rtol=0, atol=0)
    for side in ("prototypes_a", "prototypes_b"):
        torch.testing.assert_close(r0["method"][side], r1["method"][side], rtol=0, atol=0)
    assert r0["eval"] == r1["eval"]


@pytest.mark.slow
def test_two_process_resume_after_kill_equals_uninterrupted(digits_root, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    mp.spawn(worker, args=(2, free_port(), str(digits_root), str(full)), nprocs=2, join=True)
    mp.spawn(worker, args=(2, free_port(), str(digits_root), str(killed), "kill"), nprocs=2, join=True)
    assert torch.load(killed / "run" / "last.pt", weights_only=True)["epoch"] == 0  # the last epoch done: 0, killed during 1
    assert not (killed / "rank0.pt").exists()
    mp.spawn(worker, args=(2, free_port(), str(digits_root), str(killed), "resume"), nprocs=2, join=True)
    for rank in (0, 1):
        want, got = (torch.load(d / f"rank{rank}.pt", weights_only=False) for d in (full, killed))
        for b0, b1 in zip(want["banks"], got["banks"]):
            torch.testing.assert_close(b1, b0)
        for p0, p1 in zip(want["params"], got["params"]):
            torch.testing.assert_close(p1, p0)
        assert got["eval"] == want["eval"]
        assert want["trained_epochs"] == [0, 1] and got["trained_epochs"] == [1]  # epoch 0 came from last.pt
    rows = [json.loads(line) for line in (killed / "run" / "history.jsonl").read_text().splitlines()[1:]]
    assert [r["epoch"] for r in rows] == [0, 1]
