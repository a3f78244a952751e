"""Training throughput on this machine, and the cost of the three cluster-based losses.

    python -m benchmarks.throughput [--pacs ../shared/data/pacs] [--steps 20]

For each setting (digits preset; PACS preset), times real training steps (data loading excluded:
batches are drawn first) with every loss on, and with instance contrastive only, on the same
batches and clustering. Prints images per second (both domains counted) and the share of step
time spent in cluster-wise contrastive + self-entropy + distance-of-distance.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ucdir_core.base.pair import DomainPair
from ucdir_core.config.presets import get_preset
from ucdir_core.config.rows import row_config
from ucdir_core.data.loader import epoch_loader
from ucdir_core.method.interface import EpochContext
from ucdir_core.training.build import build_trainer


def all_losses_from_epoch_0(cfg):
    """``cfg`` with every UCDIR loss on at epoch 0 (weights of 0 replaced by 1)."""
    p = cfg.method_params
    return cfg.replace(clustering_start=0, cluster_contrastive_weight_initial=p.cluster_contrastive_weight or 1.0,
                       self_entropy_start=0, self_entropy_weight=p.self_entropy_weight or 1.0,
                       distance_of_distance_start=0, distance_of_distance_weight=p.distance_of_distance_weight or 1.0)


def time_steps(trainer, batches) -> float:
    """Seconds for ``Trainer.step`` over ``batches`` (the training loop's own step)."""
    trainer.model.train()
    start = time.perf_counter()
    for qa, ka, ia, qb, kb, ib in batches:
        trainer.step(DomainPair(qa, qb), DomainPair(ka, kb), DomainPair(ia, ib))
    return time.perf_counter() - start


def ready_trainer(cfg, run_dir):
    """A trainer at the start of epoch 0: banks filled, the method's per-epoch state computed."""
    trainer, _ = build_trainer(cfg, run_dir, progress=False, log=lambda s: None)
    trainer.model.fill_banks(trainer.embedder.train_embeddings())
    trainer.method.begin_epoch(EpochContext(0, trainer.model.banks, trainer.embedder.train_embeddings,
                                            trainer.cluster))
    return trainer


def measure(name, cfg, steps):
    full_cfg = all_losses_from_epoch_0(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        full = ready_trainer(full_cfg, Path(tmp) / "full")
        inst = ready_trainer(row_config(full_cfg, "instance"), Path(tmp) / "instance")
        loader = iter(epoch_loader(full.inputs, full.cfg, 0, full.batch_size))
        batches = [next(loader) for _ in range(steps)]
        time_steps(full, batches[:2])  # warm-up
        t_full = time_steps(full, batches)
        t_inst = time_steps(inst, batches)
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
        measure("pacs photo-sketch", get_preset("pacs").replace(root=os.path.abspath(args.pacs), device="cpu"),
                args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
