"""The random generators, in one place: seeding, saving and restoring them, and a seeded block
that leaves them as they were.

Python's ``random``, numpy's global generator and torch's (CPU and CUDA) are the three global
generators a run draws from: augmentations (torchvision and :class:`~ucdir_core.data.images.PILGaussianBlur`),
DataLoader shuffling, the key encoder's batch shuffle.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_model_init(seed: int) -> None:
    """Seed what a model's initialisation and a data subset draw from (torch and numpy)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed`` (the generators are reseeded per
    epoch, so a resumed run draws what an uninterrupted one would)."""
    return seed * 100003 + epoch


def rng_state() -> dict[str, Any]:
    """The torch, numpy, Python and CUDA random states as tensors and plain values (``weights_only``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss_next},
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Inside the block the three global generators are seeded with ``seed``; after it they are as
    they were before (``torch.random.fork_rng`` for torch, saved and restored states for Python's
    and numpy's), so work done inside (e.g. caching augmented views) does not change what a run
    draws afterwards, whether that work ran or was read from a cache."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            seed_everything(seed)
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed a worker's Python and numpy generators from its torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
