"""The paired training stream and the evaluation view: datasets over image files.

Training datasets yield images and image ids, never labels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ucdir_core.base.pair import DomainPair
from ucdir_core.data.images import load_image


class TwoViews(Dataset):
    """Two independently augmented views of image ``i`` and its id ``i`` (no label)."""

    def __init__(self, paths: Sequence[str], transform: Callable):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i])
        return self.transform(img), self.transform(img), i


class EvalImages(Dataset):
    """The evaluation view of image ``i`` and its id."""

    def __init__(self, paths: Sequence[str], transform: Callable):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i])), i


def epoch_pairs(n_a: int, n_b: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs of one epoch (spec section 3), shuffled.

    An epoch has ``max(n_a, n_b)`` pairs: position i takes image i of each domain, or a random
    image of the smaller domain once i runs past its end.

    Shape:
        -> (M,), (M,) long, M = max(n_a, n_b).
    """
    m = max(n_a, n_b)

    def fill(n: int) -> torch.Tensor:
        extra = torch.randint(n, (m - n,), generator=generator)
        return torch.cat([torch.arange(n), extra])

    idx_a, idx_b = fill(n_a), fill(n_b)
    perm = torch.randperm(m, generator=generator)
    return idx_a[perm], idx_b[perm]


class PairedViews(Dataset):
    """Item j of an epoch: two views and the id of image ``idx_a[j]`` of A and ``idx_b[j]`` of B."""

    def __init__(self, views: DomainPair[Dataset], idx_a: torch.Tensor, idx_b: torch.Tensor):
        self.views, self.idx_a, self.idx_b = views, idx_a, idx_b

    def __len__(self) -> int:
        return len(self.idx_a)

    def __getitem__(self, j: int):
        qa, ka, ia = self.views.a[int(self.idx_a[j])]
        qb, kb, ib = self.views.b[int(self.idx_b[j])]
        return qa, ka, ia, qb, kb, ib
