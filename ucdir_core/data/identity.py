"""A run's dataset identity: which files it trained on and evaluated, with each file's size,
modification time and a digest of its bytes, so that a run resumed or evaluated on changed data
is refused by name, and the same data copied elsewhere (new modification times) is not.

Memory-bank slots are indexed by image id (a position in these lists), so a file removed and
another added under the same count would silently give the banks to other images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ucdir_core.base.errors import RunError
from ucdir_core.base.io import file_digest
from ucdir_core.base.pair import DomainPair
from ucdir_core.data.splits import SplitImages


def file_entries(paths: list[str], root: str | Path) -> list[list[Any]]:
    """``[[relative path, bytes, mtime_ns, digest], ...]`` of ``paths``, in order: each path relative
    to ``root`` (as given when it lies outside), its size, modification time and
    :func:`~ucdir_core.base.io.file_digest`. The entries of ``dataset.json`` and of a gallery index.

    Raises:
        FileNotFoundError: a file that is gone.
    """
    root = Path(root)
    out = []
    for p in paths:
        st = os.stat(p)
        try:
            rel = str(Path(p).relative_to(root))
        except ValueError:
            rel = str(p)
        out.append([rel, int(st.st_size), int(st.st_mtime_ns), file_digest(p)])
    return out


def _modified(old: list[Any], new: list[Any]) -> bool:
    """Whether two entries ``[path, bytes, mtime_ns, digest]`` of one path name different contents:
    by the digest when both have one (a copy with new times is the same file), else (an identity
    written before digests were kept) by size and modification time."""
    if old[1] != new[1]:
        return True
    if len(old) > 3 and len(new) > 3:
        return old[3] != new[3]
    return old[2] != new[2]


def dataset_identity(images: DomainPair[SplitImages], root: str | Path) -> dict[str, Any]:
    """``{domain: {"train": [[relative path, bytes, mtime_ns, digest], ...], "test": [...] or "train"}}``
    in id order (``"test": "train"`` under the full split); ``digest``: :func:`~ucdir_core.base.io.file_digest`. Reads
    every file once."""
    root = Path(root)
    out: dict[str, Any] = {}
    for s in images:
        train = file_entries(s.train.paths, root)
        out[s.train.name] = {"train": train, "test": "train" if s.test is s.train else file_entries(s.test.paths, root)}
    return out


def identity_changes(saved: dict[str, Any], current: dict[str, Any], limit: int = 3) -> str | None:
    """What changed between two identities, in one phrase naming the first few paths (None: nothing).

    Example: ``"domain A (training images): 1 added (A/cat/new.png), 1 removed (A/cat/old.png)"``.
    """
    parts = []
    for domain in sorted(set(saved) | set(current)):
        if domain not in saved or domain not in current:
            parts.append(f"domain {domain} {'added' if domain in current else 'removed'}")
            continue
        for which in ("train", "test"):
            old, new = saved[domain][which], current[domain][which]
            if old == new:
                continue
            if isinstance(old, str) or isinstance(new, str):
                parts.append(f"domain {domain}: the {which} images changed")
                continue
            before = {e[0]: e for e in old}
            after = {e[0]: e for e in new}
            added = [p for p in after if p not in before]
            removed = [p for p in before if p not in after]
            modified = [p for p in after if p in before and _modified(before[p], after[p])]
            what = [f"{len(v)} {name} ({', '.join(v[:limit])}{', ...' if len(v) > limit else ''})"
                    for name, v in (("added", added), ("removed", removed), ("modified", modified)) if v]
            if not what:
                if [e[0] for e in old] == [e[0] for e in new]:
                    continue  # the same files with the same bytes (copied: new modification times)
                what = ["the same files in another order"]
            kind = "training" if which == "train" else "evaluated"
            counts = f" had {len(old)} {kind} images, now {len(new)}" if len(old) != len(new) else f" ({kind} images)"
            parts.append(f"domain {domain}{counts}: " + ", ".join(what))
            break  # the test list of the full split is the train list
    return "; ".join(parts) or None


def check_identity(saved: dict[str, Any] | None, current: dict[str, Any], where: str) -> None:
    """Refuse, in one line, data that differs from the run's.

    Raises:
        RunError: the files differ (which, named).
    """
    if saved is None:
        return
    change = identity_changes(saved, current)
    if change:
        raise RunError(f"the dataset changed since {where} was written: {change}; train a new run (or put the "
                        "files back)")
