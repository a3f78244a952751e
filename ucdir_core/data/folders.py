"""Two-domain image folders: scanning and class matching.

Layout: ``ROOT/<domain>/<class>/<image>`` (one ImageFolder per domain). Labels are indices into
the union of class names, sorted; they are carried for evaluation only. Class names are the folder
names in Unicode normalisation form NFC: ``café`` stored as one code point in one domain and as
``e`` plus a combining accent in the other is one class (paths keep the names as stored).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ucdir_core.base.errors import DataError
from ucdir_core.base.pair import DomainPair
from ucdir_core.base.text import distinguishable, nfc, printable
from ucdir_core.config.run import RunConfig
from ucdir_core.data.images import is_image_name, load_image


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
    """Image files per class of ``root/domain`` (keyed by the class folder's name in NFC; two
    folders whose names differ only in normalisation are one class) and the non-image files found
    there.

    Raises:
        DataError: no such root or domain folder, or a domain folder without images in class folders.
    """
    base = Path(root) / domain
    if not Path(root).is_dir():
        raise DataError(f"dataset root not found: {printable(root)}")
    if not base.is_dir():
        raise DataError(f"domain folder not found: {printable(base)}")
    per_class: dict[str, list[Path]] = {}
    others: list[Path] = []
    for class_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file())
        per_class.setdefault(nfc(class_dir.name), []).extend(p for p in files if is_image_name(p))
        others += [p for p in files if not is_image_name(p)]
    others += [p for p in base.iterdir() if p.is_file()]
    if not any(per_class.values()):
        raise DataError(f"domain folder {printable(base)} holds no images in class folders (expected "
                        f"{printable(base)}/<class>/<image>)")
    return {c: sorted(files) for c, files in per_class.items()}, others


def shared_class_count(root: str | Path, domains: Sequence[str]) -> int:
    """How many class folders (by name, holding at least one image that decodes) every one of
    ``domains`` has under ``root``.

    Used as the number of k-means clusters K when a dataset has no preset, as the paper sets K to
    its benchmarks' class counts; no image's label is read. A class folder whose files are all
    broken does not count (its images are skipped in training, so K would exceed the classes);
    files are decoded only until one in each folder decodes.

    Raises:
        DataError: the domains share no class folder with a usable image.
    """
    names = [{c for c, files in list_domain(root, d)[0].items() if _any_decodes(files)} for d in domains]
    shared = set.intersection(*names)
    if not shared:
        raise DataError(f"the domains {', '.join(map(printable, domains))} under {printable(root)} share no class "
                        "folder with a usable image")
    return len(shared)


def _any_decodes(files: Sequence[Path]) -> bool:
    for f in files:
        try:
            load_image(f)
            return True
        except (OSError, DataError):
            continue
    return False


def with_folder_clusters(cfg: RunConfig) -> RunConfig:
    """``cfg`` with K = the number of class folders its two domains share (:func:`shared_class_count`):
    the ``folder`` preset's K, as the paper sets K to its benchmarks' class counts.

    Raises:
        DataError: no root, or domains that share no class folder.
    """
    if cfg.root is None:
        raise DataError("the folder preset needs a dataset root (--root DIR)")
    return cfg.replace(num_clusters=(shared_class_count(cfg.root, cfg.domains),))


def load_domains(
    root: str | Path,
    domains: Sequence[str],
    classes: Sequence[str] | None = None,
    bad_files: set[str] | None = None,
    allow_unmatched_classes: bool = False,
) -> DomainPair[DomainImages]:
    """Scan two domains and match their classes by name.

    Class names are compared in NFC (:func:`list_domain`). ``classes`` restricts to a known class
    list (e.g. DomainNet's 7-class subset). Files in ``bad_files`` (e.g. from
    :func:`ucdir_core.data.checks.check_dataset`) are skipped and listed in ``skipped``. A class
    present in one domain only is an error unless ``allow_unmatched_classes``, in which case it is
    kept and warned about (names that look alike shown so that they differ,
    :func:`~ucdir_core.base.text.distinguishable`).

    Raises:
        DataError: not two distinct domains, a missing folder, a domain without usable images, or
            (without ``allow_unmatched_classes``) a class found in one domain only.
    """
    if len(domains) != 2:
        raise DataError(f"two domains are needed, got {len(domains)}")
    dirs = [(Path(root) / d).resolve() for d in domains]
    if domains[0] == domains[1] or dirs[0] == dirs[1]:
        raise DataError(f"the same folder was given as both domains: {printable(dirs[0])}")
    scans = [list_domain(root, d)[0] for d in domains]
    if classes is not None:
        wanted = {nfc(c) for c in classes}
        scans = [{c: v for c, v in s.items() if c in wanted} for s in scans]
    names = [set(c for c, files in s.items() if files) for s in scans]
    only = {d: sorted(n - names[1 - i]) for i, (d, n) in enumerate(zip(domains, names)) if n - names[1 - i]}
    if only:
        shown = distinguishable(c for cs in only.values() for c in cs)
        msg = "; ".join(f"classes only in {printable(d)}: {', '.join(shown[x] for x in c)}" for d, c in only.items())
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
            raise DataError(f"domain {printable(d)} has no usable images")
        out.append(DomainImages(d, paths, np.asarray(labels, dtype=np.int64), all_classes, skipped))
    return DomainPair(*out)
