"""Which images of each domain train and which are evaluated: the full split (all of them, the
reference's protocol) or a seeded per-class held-out split, written to a file and read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ucdir_core.base.errors import DataError
from ucdir_core.base.io import atomic_write_bytes, write_json
from ucdir_core.base.pair import DomainPair
from ucdir_core.config.run import RunConfig
from ucdir_core.data.checks import check_dataset
from ucdir_core.data.datasets import BENCHMARKS
from ucdir_core.data.folders import DomainImages, load_domains
from ucdir_core.data.locations import resolve_root


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
    atomic_write_bytes(path, json.dumps(split, indent=1).encode())


def read_split(path: Path) -> dict[str, dict[str, list[str]]]:
    return json.loads(path.read_text())


def subsample(images: DomainImages, max_images: int | None, seed: int) -> DomainImages:
    """A seeded, class-stratified subset of at most ``max_images`` images (smoke runs)."""
    if max_images is None or len(images) <= max_images:
        return images
    keep, _ = heldout_split(images.labels, 1.0 - max_images / len(images), seed)
    return images.subset(keep)


@dataclass
class SplitImages:
    """Training and evaluated images of one domain (the same object under the full split)."""

    train: DomainImages
    test: DomainImages


def load_split_images(cfg: RunConfig, split_path: Path | None = None, manifest_path: Path | None = None,
                      allow_unmatched_classes: bool = False, check: bool = True,
                      log: Callable[[str], None] = print,
                      before_writing: Callable[[DomainPair[SplitImages]], None] | None = None
                      ) -> DomainPair[SplitImages]:
    """Scan, check (broken files are skipped, counted and listed in the manifest), subsample and split.

    The held-out split is read from ``split_path`` when that file exists, and otherwise drawn and
    written there (``None``: drawn, not written). The check's manifest goes to ``manifest_path``
    (``None``: not written). Nothing is written before the sizes are checked
    (:func:`check_sizes`, then ``before_writing``).

    Raises:
        DataError: a missing folder, no usable images, unmatched classes, files of a saved split
            that are gone, or data too small for the settings.
    """
    root = resolve_root(cfg)
    # DomainNet's folders hold 345 classes; the benchmark uses its 7-class subset
    classes = BENCHMARKS["domainnet"].classes if cfg.dataset == "domainnet" else None
    bad: set[str] = set()
    if check:
        report = check_dataset(root, cfg.domains, classes=classes, progress=False)
        bad = report.bad_files
        if bad:
            where = Path(manifest_path).name if manifest_path else "the data check's manifest"
            log(f"warning: skipping {len(bad)} broken files (listed in {where})")
    images = load_domains(root, cfg.domains, classes=classes, bad_files=bad,
                          allow_unmatched_classes=allow_unmatched_classes)
    images = DomainPair(*(subsample(d, cfg.max_images_per_domain, cfg.seed) for d in images))
    record = None
    if cfg.split == "full":
        out = images.map(lambda d: SplitImages(d, d))
    elif split_path is not None and Path(split_path).exists():
        out = _read_saved_split(images, Path(split_path))
    else:
        parts, record = [], {}
        for d in images:
            tr, te = heldout_split(d.labels, cfg.heldout_fraction, cfg.split_seed)
            parts.append(SplitImages(d.subset(tr), d.subset(te)))
            record[d.name] = {"train": parts[-1].train.paths, "test": parts[-1].test.paths}
        out = DomainPair(*parts)
    check_sizes(cfg, out)
    if before_writing is not None:
        before_writing(out)
    if check and manifest_path is not None:
        write_json(Path(manifest_path), report.to_dict())
    if record is not None and split_path is not None:
        write_split(Path(split_path), record)
    return out


def check_sizes(cfg: RunConfig, images: DomainPair[SplitImages]) -> None:
    """Refuse, in one line naming the domain, the numbers and the option that fixes it, data too
    small for the settings: a domain with no training or no evaluated image (a held-out split of
    classes with one image each), or more k-means clusters than a domain's training images.

    Raises:
        DataError: as above.
    """
    for s in images:
        name = s.train.name
        if len(s.test) == 0 or len(s.train) == 0:
            raise DataError(f"domain {name}: the held-out split leaves {len(s.train)} training and {len(s.test)} "
                            f"evaluated images ({len(s.train) + len(s.test)} in all, heldout_fraction "
                            f"{cfg.heldout_fraction:g}); each side needs at least one (classes with one image "
                            "cannot be split): add images, or use --split full")
        k = max(cfg.num_clusters)
        if k > len(s.train):
            raise DataError(f"num_clusters {k} is larger than domain {name}'s {len(s.train)} training images; pass "
                            f"--set num_clusters=N with N <= {len(s.train)}")


def _read_saved_split(images: DomainPair[DomainImages], split_path: Path) -> DomainPair[SplitImages]:
    saved = read_split(split_path)
    out = []
    for d in images:
        pos = {p: i for i, p in enumerate(d.paths)}
        missing = [p for p in saved[d.name]["train"] + saved[d.name]["test"] if p not in pos]
        if missing:
            raise DataError(f"{len(missing)} files of the saved split are gone, e.g. {missing[0]}")
        out.append(SplitImages(d.subset([pos[p] for p in saved[d.name]["train"]]),
                               d.subset([pos[p] for p in saved[d.name]["test"]])))
    return DomainPair(*out)
