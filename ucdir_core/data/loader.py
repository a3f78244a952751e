"""The batches of one training epoch: the batch size that fits the data, and the seeded, sharded
loader of paired views (spec section 3: ``max(N_A, N_B)`` pairs per epoch)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ucdir_core.base import distributed as D
from ucdir_core.base.errors import DataError
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.seeding import epoch_seed, worker_init
from ucdir_core.config.run import RunConfig
from ucdir_core.data.inputs import DomainInputs
from ucdir_core.data.views import PairedViews, epoch_pairs


def epoch_batch_size(cfg: RunConfig, pairs: int) -> int:
    """The batch size of every step: ``batch_size``, or, with ``min_steps_per_epoch`` and data so
    small that the epoch would have fewer steps, the largest batch (at least 2) that gives that
    many.

    Raises:
        DataError: the batch is larger than the epoch's pairs (one line naming the numbers and
            ``--set batch_size=N``), or there are fewer than 2 pairs.
    """
    batch = cfg.batch_size
    if cfg.min_steps_per_epoch and pairs // batch < cfg.min_steps_per_epoch:
        batch = min(batch, max(2, pairs // cfg.min_steps_per_epoch))
    if batch > pairs:
        raise DataError(f"batch_size {batch} is larger than the {pairs} pairs of an epoch (the larger domain's "
                        f"training images{' per process' if D.world_size() > 1 else ''}); pass --set "
                        f"batch_size=N with 2 <= N <= {pairs}" if pairs >= 2 else
                        f"an epoch has {pairs} pair(s) (the larger domain's training images); at least 2 are needed")
    return batch


def epoch_loader(inputs: DomainPair[DomainInputs], cfg: RunConfig, epoch: int, batch_size: int,
                 pin_memory: bool = False) -> DataLoader:
    """The batches of ``epoch``: ``(q_a, k_a, ids_a, q_b, k_b, ids_b)``, the last partial one
    dropped. The pairs are drawn with the epoch's seed; under several processes each takes its
    shard, all of the same length."""
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    idx_a, idx_b = epoch_pairs(len(inputs.a.train_eval), len(inputs.b.train_eval), gen)
    rank, world = D.rank(), D.world_size()
    if world > 1:
        per = len(idx_a) // world
        idx_a = idx_a[rank::world][:per]
        idx_b = idx_b[rank::world][:per]
    paired = PairedViews(inputs.map(lambda d: d.train_views), idx_a, idx_b)
    return DataLoader(paired, batch_size=batch_size, shuffle=False, drop_last=True, num_workers=cfg.workers,
                      worker_init_fn=worker_init, generator=gen, pin_memory=pin_memory, persistent_workers=False)
