"""``ucdir data check``: what a dataset folder holds and which files are broken.

Every file under ``ROOT/<domain>/<class>/`` is classified as ``ok``, ``empty`` (zero bytes),
``non_image`` (not an image file name), ``unreadable`` (an image name that no decoder accepts),
``truncated`` (header fine, data cut short) or ``too_large`` (a decompression bomb: more pixels
than Pillow's limit). Files are fully decoded, in parallel processes. A domain folder that is the
same folder as another (a symlink) is counted once. Counts are kept per class folder, by its name as
stored; classes are matched across domains by name in Unicode normalisation form NFC, as training
matches them (:mod:`ucdir_core.data.folders`).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ucdir_core.base.errors import DataError
from ucdir_core.base.text import nfc, printable
from ucdir_core.data.images import ImageDecodeError, ImageMissingError, is_image_name, load_image

PROBLEMS = ("empty", "non_image", "unreadable", "truncated", "too_large")


def classify_file(path: str) -> str:
    """One of ``ok``, ``empty``, ``non_image``, ``unreadable``, ``truncated``, ``too_large``.

    Raises:
        ImageMissingError: the file is gone (removed while the check ran); one line naming it, in
            a decoding process as well.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImageMissingError(path=path) from None
    if size == 0:
        return "empty"
    if not is_image_name(path):
        return "non_image"
    try:
        load_image(path)  # the decode path of training and retrieval, orientation included
    except ImageDecodeError as exc:
        return exc.kind
    return "ok"


def _classify_many(paths: list[str]) -> list[str]:
    return [classify_file(p) for p in paths]


@dataclass
class CheckReport:
    """Counts per domain and class, and the paths of every problem file."""

    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PROBLEMS})
    missing_classes: dict[str, list[str]] = field(default_factory=dict)
    empty_domains: list[str] = field(default_factory=list)
    same_folder: dict[str, str] = field(default_factory=dict)  #: domain -> the domain it is the same folder as

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def bad_files(self) -> set[str]:
        return {p for paths in self.problems.values() for p in paths}

    @property
    def usable(self) -> bool:
        non_empty = [d for d, c in self.counts.items() if sum(c.values()) > 0]
        return len(non_empty) >= 2 and not self.empty_domains

    def to_dict(self) -> dict:
        return {
            "root": self.root, "total": self.total, "counts": self.counts,
            "domain_totals": {d: sum(c.values()) for d, c in self.counts.items()},
            "problems": self.problems, "problem_counts": {k: len(v) for k, v in self.problems.items()},
            "missing_classes": self.missing_classes, "empty_domains": self.empty_domains, "usable": self.usable,
            "same_folder": self.same_folder,
        }


def check_dataset(root: str | Path, domains: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                  workers: int | None = None, progress: bool = True) -> CheckReport:
    """Scan ``root`` (all domain folders, or ``domains``), decode every file, report.

    ``classes`` restricts the scan to a known class list (e.g. DomainNet's 7-class subset).
    ``counts`` are per class folder, keyed by its name as stored (a path may be built from it);
    ``missing_classes`` compares names in NFC (class folders whose names differ only in
    normalisation are one class) and lists them in NFC.

    Raises:
        DataError: no such root or domain folder, or a root without domain folders.
    """
    from tqdm.auto import tqdm

    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"dataset root not found: {printable(root)}")
    if domains is None:
        domains = sorted(p.name for p in root_p.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not domains:
            raise DataError(f"no domain folders in {printable(root)}")
    report = CheckReport(str(root_p))
    files: list[tuple[str, str, str]] = []  # (domain, class, path)
    seen: dict[Path, str] = {}  # resolved folder -> first domain found there
    for d in domains:
        base = root_p / d
        if not base.is_dir():
            raise DataError(f"domain folder not found: {printable(base)}")
        if base.resolve() in seen:  # a symlink to another domain: counted once
            report.same_folder[d] = seen[base.resolve()]
            continue
        seen[base.resolve()] = d
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir())
        if classes is not None:
            wanted = {nfc(c) for c in classes}
            class_dirs = [p for p in class_dirs if nfc(p.name) in wanted]
        for p in sorted(base.iterdir()):
            if p.is_file():
                report.problems["non_image"].append(str(p))
        for cdir in class_dirs:
            files += [(d, cdir.name, str(f)) for f in sorted(cdir.rglob("*")) if f.is_file()]
    paths = [f[2] for f in files]
    chunks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
    n_workers = workers if workers is not None else min(len(chunks), os.cpu_count() or 1)
    kinds: list[str] = []
    bar = tqdm(total=len(paths), desc="check", unit="file", disable=not progress)
    if n_workers > 1:
        with ProcessPoolExecutor(n_workers) as pool:
            for out in pool.map(_classify_many, chunks):
                kinds += out
                bar.update(len(out))
    else:
        for chunk in chunks:
            kinds += _classify_many(chunk)
            bar.update(len(chunk))
    bar.close()
    counts: dict[str, Counter] = {d: Counter() for d in domains if d not in report.same_folder}
    for (d, c, p), kind in zip(files, kinds):
        if kind == "ok":
            counts[d][c] += 1
        else:
            report.problems[kind].append(p)
    report.counts = {d: dict(sorted(c.items())) for d, c in counts.items()}
    report.empty_domains = [d for d, c in counts.items() if sum(c.values()) == 0]
    names = {d: {nfc(c) for c in per} for d, per in report.counts.items()}
    all_classes = set().union(*names.values())
    report.missing_classes = {d: sorted(all_classes - n) for d, n in names.items() if all_classes - n}
    return report
