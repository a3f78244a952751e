"""Two processes (gloo, CPU): identical memory banks on both ranks, metrics close to one process."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from ucdir_core import get_preset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny(root):
    return get_preset("digits_scratch").replace(
        root=str(root), max_images_per_domain=96, image_size=16, resize_size=16, batch_size=16, epochs=2,
        warmup_epochs=1, cw_start=0, cw_weight_start=0.5, se_start=1, dod_start=1, num_clusters=(5,),
        kmeans_restarts=1, workers=0, eval_ks=(1, 5), device="cpu")


def worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    from ucdir_core.distributed import init_from_env
    from ucdir_core.pipeline import build_trainer

    init_from_env()
    trainer, _ = build_trainer(tiny(root), os.path.join(out, "run"), progress=False, log=lambda s: None)
    history = trainer.fit()
    torch.save({"banks": [b.clone() for b in trainer.model.banks], "eval": history[-1]["eval"],
                "params": [p.detach().clone() for p in trainer.model.encoder_q.parameters()]},
               os.path.join(out, f"rank{rank}.pt"))
    import torch.distributed as dist

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

    from ucdir_core.pipeline import train

    single = train(tiny(digits_root), tmp_path / "single", progress=False, log=lambda s: None)[-1]["eval"]
    for direction, metrics in single.items():
        assert abs(metrics["mAP"] - r0["eval"][direction]["mAP"]) < 5.0
