"""Two-domain image data: folder scanning, class matching, splits and the paired training stream.

Layout: ``ROOT/<domain>/<class>/<image>`` (one ImageFolder per domain). Labels are indices into
the union of class names, sorted; they are carried for evaluation only. Training datasets yield
images and image ids, never labels.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ucdir_core.images import is_image_name, load_image
from ucdir_core.pair import DomainPair


class DataError(ValueError):
    """Bad input data; the message is one line meant for the user."""


@dataclass
class DomainImages:
    """The images of one domain. ``labels`` index ``classes`` and are for evaluation only.

    Shape:
        paths: N strings; labels: (N,) int64.
    """

    name: str
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Sequence[int] | np.ndarray) -> "DomainImages":
        index = np.asarray(index, dtype=np.int64)
        return DomainImages(self.name, [self.paths[i] for i in index], self.labels[index], self.classes, self.skipped)


def list_domain(root: str | Path, domain: str) -> tuple[dict[str, list[Path]], list[Path]]:
    """Image files per class folder of ``root/domain`` and the non-image files found there."""
    base = Path(root) / domain
    if not Path(root).is_dir():
        raise DataError(f"dataset root not found: {root}")
    if not base.is_dir():
        raise DataError(f"domain folder not found: {base}")
    per_class: dict[str, list[Path]] = {}
    others: list[Path] = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        per_class[class_dir.name] = [p for p in files if is_image_name(p)]
        others += [p for p in files if not is_image_name(p)]
    others += [p for p in base.iterdir() if p.is_file()]
    if not any(per_class.values()):
        raise DataError(f"domain folder {base} holds no images in class folders (expected {base}/<class>/<image>)")
    return per_class, others


def shared_class_count(root: str | Path, domains: Sequence[str]) -> int:
    """How many class folders (by name, holding images) every one of ``domains`` has under ``root``.

    Used as the number of k-means clusters K when a dataset has no preset, as the paper sets K to
    its benchmarks' class counts; no image's label is read.
    """
    names = [{c for c, files in list_domain(root, d)[0].items() if files} for d in domains]
    shared = set.intersection(*names)
    if not shared:
        raise DataError(f"the domains {', '.join(domains)} under {root} share no class folder")
    return len(shared)


def load_domains(
    root: str | Path,
    domains: Sequence[str],
    classes: Sequence[str] | None = None,
    bad_files: set[str] | None = None,
    allow_unmatched_classes: bool = False,
) -> DomainPair[DomainImages]:
    """Scan two domains and match their classes by name.

    ``classes`` restricts to a known class list (e.g. DomainNet's 7-class subset). Files in
    ``bad_files`` (e.g. from :func:`ucdir_core.datacheck.check_dataset`) are skipped and listed in
    ``skipped``. A class present in one domain only is an error unless
    ``allow_unmatched_classes``, in which case it is kept and warned about.
    """
    if len(domains) != 2:
        raise DataError(f"two domains are needed, got {len(domains)}")
    dirs = [(Path(root) / d).resolve() for d in domains]
    if domains[0] == domains[1] or dirs[0] == dirs[1]:
        raise DataError(f"the same folder was given as both domains: {dirs[0]}")
    scans = [list_domain(root, d)[0] for d in domains]
    if classes is not None:
        scans = [{c: v for c, v in s.items() if c in set(classes)} for s in scans]
    names = [set(c for c, files in s.items() if files) for s in scans]
    only = {d: sorted(n - names[1 - i]) for i, (d, n) in enumerate(zip(domains, names)) if n - names[1 - i]}
    if only:
        msg = "; ".join(f"classes only in {d}: {', '.join(c)}" for d, c in only.items())
        if not allow_unmatched_classes:
            raise DataError(msg + " (pass allow_unmatched_classes / --allow-unmatched-classes to keep them)")
        warnings.warn(msg, stacklevel=2)
    all_classes = sorted(names[0] | names[1])
    index = {c: i for i, c in enumerate(all_classes)}
    bad = bad_files or set()
    out = []
    for d, scan in zip(domains, scans):
        paths, labels, skipped = [], [], []
        for c in sorted(scan):
            for p in scan[c]:
                (skipped if str(p) in bad else paths).append(str(p))
                if str(p) not in bad:
                    labels.append(index[c])
        if not paths:
            raise DataError(f"domain {d} has no usable images")
        out.append(DomainImages(d, paths, np.asarray(labels, dtype=np.int64), all_classes, skipped))
    return DomainPair(*out)


def heldout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: (train indices, held-out indices), each sorted.

    Every class with at least two images keeps at least one image on each side.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test += idx[:n_test].tolist()
        train += idx[n_test:].tolist()
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def write_split(path: Path, split: dict[str, dict[str, list[str]]]) -> None:
    """``{domain: {"train": [paths], "test": [paths]}}`` as JSON, written atomically."""
    from ucdir_core.runs import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(split, indent=1).encode())


def read_split(path: Path) -> dict[str, dict[str, list[str]]]:
    return json.loads(path.read_text())


def subsample(images: DomainImages, max_images: int | None, seed: int) -> DomainImages:
    """A seeded, class-stratified subset of at most ``max_images`` images (smoke runs)."""
    if max_images is None or len(images) <= max_images:
        return images
    keep, _ = heldout_split(images.labels, 1.0 - max_images / len(images), seed)
    return images.subset(keep)


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
