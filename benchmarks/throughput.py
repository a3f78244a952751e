"""Training throughput on this machine, and the cost of the three cluster-based losses.

    python -m benchmarks.throughput [--pacs ../shared/data/pacs] [--steps 20]

For each setting (digits preset; PACS preset), times real training steps (data loading excluded:
batches are drawn first) with every loss on, and with instance contrastive only, on the same
batches and clustering. Prints images per second (both domains counted) and the share of step
time spent in cluster-wise contrastive + self-entropy + distance-of-distance.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ucdir_core import get_preset
from ucdir_core.objective import ucdir_objective
from ucdir_core.pair import DomainPair
from ucdir_core.pipeline import build_trainer
from ucdir_core.schedules import LossWeights


def time_steps(trainer, batches, clustering, weights) -> float:
    model, dev = trainer.model, trainer.device
    model.train()
    start = time.perf_counter()
    for qa, ka, ia, qb, kb, ib in batches:
        x_q, x_k = DomainPair(qa, qb).map(lambda t: t.to(dev)), DomainPair(ka, kb).map(lambda t: t.to(dev))
        ids = DomainPair(ia, ib).map(lambda t: t.to(dev))
        model.momentum_update(trainer.cfg.momentum)
        q, k = model(x_q, x_k)
        model.write_bank(ids, k)
        loss, _ = ucdir_objective(q, k, model.banks, ids, clustering, weights, trainer.params)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    return time.perf_counter() - start


def measure(name, cfg, steps):
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = build_trainer(cfg, tmp, progress=False, log=lambda s: None)
        trainer.model.fill_banks(trainer.train_embeddings())
        clustering = trainer.cluster()
        loader = iter(trainer._loader(0))
        batches = [next(loader) for _ in range(steps)]
        full = LossWeights(1.0, 1.0, cfg.se_weight or 1.0, cfg.dod_weight or 1.0, True)
        inst = LossWeights(1.0, 0.0, 0.0, 0.0, False)
        time_steps(trainer, batches[:2], clustering, full)  # warm-up
        t_full = time_steps(trainer, batches, clustering, full)
        t_inst = time_steps(trainer, batches, clustering, inst)
    n_img = steps * cfg.batch_size * 2
    print(f"| {name} | {cfg.backbone} | {cfg.image_size} | {n_img / t_full:.0f} | {n_img / t_inst:.0f} | "
          f"{100 * (t_full - t_inst) / t_full:.1f}% |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pacs", default="../shared/data/pacs")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}")
    print("| setting | backbone | px | img/s, all losses | img/s, instance only | cluster-based share |")
    print("|---|---|---:|---:|---:|---:|")
    measure("digits", get_preset("digits").replace(device="cpu"), args.steps)
    if Path(args.pacs).is_dir():
        measure("pacs photo-sketch", get_preset("pacs").replace(root=str(Path(args.pacs).resolve()), device="cpu"),
                args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
