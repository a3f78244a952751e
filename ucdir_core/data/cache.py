"""Frozen-trunk training on CPU: the lower backbone runs once per augmented view, and its feature
maps are cached; only the upper stages and the head train.

With ``trunk_blocks = s`` the backbone is cut after its ``s``-th stage. ``cached_views = V``
augmented views of every image (the spec's training transform) and its evaluation view go
through the frozen trunk once; every epoch then draws two different cached views per image as
the query and key inputs. This is a deviation from the reference (which augments on the fly and
trains the whole network) that makes real-image training fit a 2-core CPU budget; with
``trunk_blocks=None`` training is end to end as in the paper.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ucdir_core.base.io import atomic_torch_save, file_digest
from ucdir_core.base.seeding import forked_rng
from ucdir_core.data.images import load_image
from ucdir_core.models.backbones import Backbone, build_backbone


def split_backbone(name: str, trunk_blocks: int, checkpoint: str | None = None) -> tuple[nn.Module, nn.Module, Backbone]:
    """(frozen trunk, trainable top, the whole backbone's description).

    EfficientNet (timm): trunk = stem + ``blocks[:trunk_blocks]``; top = the other blocks, the
    1x1 head conv, its BatchNorm and global pooling. ResNet (torchvision): trunk = stem +
    ``layer1..layer{trunk_blocks}``; top = the remaining layers and pooling.

    Shape:
        trunk: (B, 3, H, W) -> (B, C, h, w); top: (B, C, h, w) -> (B, D).
    """
    bb = build_backbone(name, checkpoint)
    m = bb.module
    if hasattr(m, "blocks") and hasattr(m, "conv_stem"):  # timm EfficientNet family
        if not 0 <= trunk_blocks < len(m.blocks):
            raise ValueError(f"trunk_blocks must lie in [0, {len(m.blocks) - 1}] for {name}; pass --set trunk_blocks=N "
                             "in that range, or --set trunk_blocks=None to train end to end")
        trunk = nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:trunk_blocks])
        top = nn.Sequential(*m.blocks[trunk_blocks:], m.conv_head, m.bn2, m.global_pool)
    elif hasattr(m, "layer4") and hasattr(m, "conv1"):  # torchvision ResNet
        layers = [m.layer1, m.layer2, m.layer3, m.layer4]
        if not 0 <= trunk_blocks < 4:
            raise ValueError(f"trunk_blocks must lie in [0, 3] for {name}; pass --set trunk_blocks=N in that range, "
                             "or --set trunk_blocks=None to train end to end")
        trunk = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, *layers[:trunk_blocks])
        top = nn.Sequential(*layers[trunk_blocks:], m.avgpool, nn.Flatten(1))
    else:
        raise ValueError(f"backbone {name} cannot be split into a frozen trunk and a trained top (the preset's "
                         f"trunk_blocks={trunk_blocks}); pass --set trunk_blocks=None to train it end to end")
    trunk.eval().requires_grad_(False)
    return trunk, top, bb


class _Views(Dataset):
    def __init__(self, paths: Sequence[str], transform, n_views: int):
        self.paths, self.transform, self.n_views = list(paths), transform, n_views

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_image(self.paths[i])
        return torch.stack([self.transform(img) for _ in range(self.n_views)]), i


@torch.no_grad()
def compute_views(trunk: nn.Module, paths: Sequence[str], transform, n_views: int, device: torch.device,
                  seed: int, batch_size: int = 64, workers: int = 0, progress: bool = True,
                  desc: str = "cache") -> torch.Tensor:
    """Trunk feature maps of ``n_views`` draws of ``transform`` per image, float16.

    The draws are seeded with ``seed`` inside :func:`~ucdir_core.base.seeding.forked_rng`, so the
    global random generators are left as they were: a run draws the same whether its views were
    computed now or read from the cache.

    Shape:
        -> (N, n_views, C, h, w)
    """
    with forked_rng(seed):
        return _compute_views(trunk, paths, transform, n_views, device, seed, batch_size, workers, progress, desc)


def _compute_views(trunk: nn.Module, paths: Sequence[str], transform, n_views: int, device: torch.device,
                   seed: int, batch_size: int, workers: int, progress: bool, desc: str) -> torch.Tensor:
    from tqdm.auto import tqdm

    trunk = trunk.to(device).eval()
    loader = DataLoader(_Views(paths, transform, n_views), batch_size=max(1, batch_size // n_views),
                        num_workers=workers, generator=torch.Generator().manual_seed(seed))
    out = None
    for views, idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
        b = views.shape[0]
        feats = trunk(views.flatten(0, 1).to(device)).to(torch.float16)
        feats = feats.view(b, n_views, *feats.shape[1:]).cpu()
        if out is None:
            out = torch.empty(len(paths), n_views, *feats.shape[2:], dtype=torch.float16)
        out[idx] = feats
    if out is None:
        raise ValueError("no images to cache")
    return out


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def file_fingerprints(paths: Sequence[str]) -> str:
    """A digest of every file's path relative to the files' common folder, size and bytes
    (:func:`~ucdir_core.base.io.file_digest`), in order: part of a cache key, so that images
    replaced under the same paths are not served from a stale cache, while the same files copied
    or moved elsewhere (new folder, new modification times) find theirs."""
    base = os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else ""
    h = hashlib.sha256()
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), base)
        h.update(f"{rel}|{os.stat(p).st_size}|{file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


def cached_views(cache_dir: Path | None, key_parts: Sequence, compute) -> torch.Tensor:
    """``compute()`` once, stored under ``cache_dir`` by a hash of ``key_parts``; an unreadable
    cache file is computed again."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"views-{cache_key(*key_parts)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # truncated or corrupt: recomputed and replaced below
            pass
    out = compute()
    atomic_torch_save(out, path)
    return out


class CachedTwoViews(Dataset):
    """Two different cached views of image ``i`` (query and key inputs) and its id.

    Shape:
        views: (N, V, C, h, w) -> items ((C, h, w), (C, h, w), i), float32.
    """

    def __init__(self, views: torch.Tensor):
        if views.shape[1] < 2:
            raise ValueError("at least two cached views per image are needed")
        self.views = views

    def __len__(self) -> int:
        return self.views.shape[0]

    def __getitem__(self, i: int):
        v = self.views.shape[1]
        first = int(torch.randint(v, ()))
        second = (first + 1 + int(torch.randint(v - 1, ()))) % v
        return self.views[i, first].float(), self.views[i, second].float(), i


class CachedEval(Dataset):
    """The cached evaluation view of image ``i`` and its id. Shape: (N, C, h, w) -> ((C, h, w), i)."""

    def __init__(self, feats: torch.Tensor, paths: Sequence[str]):
        self.feats, self.paths = feats, list(paths)

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __getitem__(self, i: int):
        return self.feats[i].float(), i
