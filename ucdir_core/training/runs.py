"""Run folders: resolved config, JSONL history, atomic checkpoints, one writer at a time.

A run folder is written by one process at a time (an exclusive lock on ``.lock`` for the whole
run). Every file is written to a temporary file in the same folder and renamed over the old one,
so a kill never leaves half a file; ``last.pt`` keeps its predecessor as ``prev.pt``. Checkpoints
are loaded with ``weights_only=True``: tensors and plain values, never code.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ucdir_core.base import distributed as D
from ucdir_core.base.config import UCDIRConfig
from ucdir_core.base.errors import RunError
from ucdir_core.base.io import (TEMP_SUFFIX, atomic_torch_save, atomic_write_bytes, json_default, load_checkpoint, plain,
                                write_json)

CONFIG = "config.json"
HISTORY = "history.jsonl"
LAST = "last.pt"
PREV = "prev.pt"
BEST = "best.pt"
SPLIT = "split.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
DATASET = "dataset.json"
LOCK = ".lock"
#: the files of a run, deleted by ``--overwrite``
RUN_FILES = (CONFIG, HISTORY, LAST, PREV, BEST, SPLIT, MANIFEST, SUMMARY, DATASET)
#: history keys renamed to the paper's loss names; rows written before are read under the new names
LEGACY_HISTORY_KEYS = {"loss_instance": "loss_instance_contrastive", "loss_cluster": "loss_cluster_contrastive",
                       "w_instance": "w_instance_contrastive", "w_cluster": "w_cluster_contrastive"}

__all__ = ["RunFolder", "RunError", "CONFIG", "HISTORY", "LAST", "PREV", "BEST", "SPLIT", "MANIFEST", "SUMMARY",
           "LOCK", "RUN_FILES", "atomic_torch_save", "atomic_write_bytes", "load_checkpoint", "plain", "write_json",
           "read_history_row", "runtime"]


def read_history_row(row: dict[str, Any]) -> dict[str, Any]:
    """A history row with keys written under their old names (:data:`LEGACY_HISTORY_KEYS`) renamed."""
    return {LEGACY_HISTORY_KEYS.get(k, k): v for k, v in row.items()}


def runtime() -> dict[str, int]:
    """What a bit-identical history also depends on: torch's thread counts."""
    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}


class RunFolder:
    """One run's folder: ``config.json``, ``history.jsonl``, ``last.pt`` (and ``prev.pt``, the one
    before), ``best.pt``, ``split.json``, ``manifest.json`` and ``summary.json``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file(CONFIG).exists()

    def holds_run(self) -> bool:
        """True if the folder holds any file of a run (a config, a history or a checkpoint)."""
        return any(self.file(n).exists() for n in (CONFIG, HISTORY, LAST, PREV, BEST))

    def check_folder(self) -> None:
        """A one-line error if the run folder's path is taken by something that is not a folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"run folder {self.path} exists and is not a folder")

    def refuse_reuse(self, resume: bool, overwrite: bool) -> None:
        """Refuse to start a new run in a folder that holds one, unless ``resume`` or ``overwrite``."""
        self.check_folder()
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if not (resume or overwrite) and self.holds_run():
            raise RunError(f"{self.path} already holds a run; pass --resume to continue it or --overwrite "
                           "to replace it")

    def clear(self) -> None:
        """Delete the run's files (``--overwrite``); other files in the folder are left alone."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
            self.file(name + ".corrupt").unlink(missing_ok=True)

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files a killed writer left behind (only while holding the lock)."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.iterdir() if p.name.endswith(TEMP_SUFFIX) and p.is_file()
                 and any(p.name.startswith(n + ".") for n in RUN_FILES)]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run folder (``fcntl.flock`` on ``.lock``, which records the pid).

        A second writer gets a :class:`RunError` naming the holder's pid. The ``.lock`` file is
        removed when the block ends, whatever the outcome (while still held; a writer that opened
        the removed file finds it replaced and tries again). Where ``fcntl`` does not exist
        (Windows) the folder is not locked.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        self.check_folder()
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = self._acquire(fcntl)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            self.file(LOCK).unlink(missing_ok=True)
            os.close(fd)
            if created and not any(self.path.iterdir()):  # a start that failed leaves no folder behind
                self.path.rmdir()

    def _acquire(self, fcntl) -> int:
        """An open descriptor of ``.lock`` holding its exclusive lock, the file still in place."""
        for _ in range(100):
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunError(f"{self.path} is in use by another process (pid {holder}); wait for it to end "
                               "or pick another run folder") from None
            try:
                same = os.stat(self.file(LOCK)).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)  # the holder removed the file we opened: take the new one
        raise RunError(f"{self.path}: could not take the run folder's lock")

    @contextlib.contextmanager
    def claim(self, resume: bool = False, overwrite: bool = False) -> Iterator[None]:
        """The run folder, ready for one writer: locked (by process 0), refused if it holds a run
        and neither ``resume`` nor ``overwrite`` is given, emptied of a killed writer's temporary
        files, and of the old run's files with ``overwrite``."""
        with self.lock() if D.is_main() else contextlib.nullcontext():
            self.refuse_reuse(resume, overwrite)
            if D.is_main():
                self.remove_temp_files()
                if overwrite:
                    self.clear()
            D.barrier()
            yield

    def start(self, cfg: UCDIRConfig, command: list[str] | None = None, identity: dict[str, Any] | None = None,
              header: dict[str, Any] | None = None) -> None:
        """Create the folder, drop an earlier run's checkpoints and summary, and write the config,
        the dataset's identity (``dataset.json``) and the history's first line (command, config,
        thread and DataLoader worker counts, and ``header``'s entries)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (LAST, PREV, BEST, SUMMARY):
            self.file(name).unlink(missing_ok=True)
        if identity is not None:
            write_json(self.file(DATASET), identity)
        write_json(self.file(CONFIG), cfg.to_dict())
        self._write_history({**self._header(cfg, command), **(header or {})}, [])

    def _header(self, cfg: UCDIRConfig, command: list[str] | None) -> dict[str, Any]:
        return {"command": command if command is not None else sys.argv, "config": cfg.to_dict(),
                "runtime": {**runtime(), "dataloader_workers": cfg.workers}, "time": time.time()}

    def identity(self) -> dict[str, Any] | None:
        """The dataset identity the run recorded (:mod:`ucdir_core.data.identity`); None for a run
        written before runs recorded it."""
        path = self.file(DATASET)
        return json.loads(path.read_text()) if path.exists() else None

    def header(self) -> dict[str, Any]:
        """The history's first line (command, config, runtime; ``untrained`` scores when recorded)."""
        try:
            with open(self.file(HISTORY)) as fh:
                first = json.loads(fh.readline())
        except (OSError, ValueError):
            return {}
        return first if isinstance(first, dict) and "epoch" not in first else {}

    def write_config(self, cfg: UCDIRConfig) -> None:
        """Replace ``config.json`` (a resume with changed optimisation settings, :data:`RESUMABLE_KEYS`)."""
        write_json(self.file(CONFIG), cfg.to_dict())

    def config(self) -> UCDIRConfig:
        self.check_folder()
        if not self.exists():
            raise FileNotFoundError(f"no run at {self.path} (missing {CONFIG})")
        try:
            return UCDIRConfig.from_dict(json.loads(self.file(CONFIG).read_text()))
        except (ValueError, TypeError) as exc:
            raise RunError(f"{self.file(CONFIG)}: not a valid run config ({str(exc).splitlines()[0]})") from None

    def has_checkpoint(self) -> bool:
        return self.file(LAST).exists() or self.file(PREV).exists()

    def save_last(self, state: dict[str, Any]) -> None:
        """Write ``last.pt`` atomically; the one it replaces becomes ``prev.pt``."""
        atomic_torch_save(state, self.file(LAST), previous=self.file(PREV))

    def load_last(self, log: Callable[[str], None] = print) -> tuple[dict[str, Any], Path] | None:
        """The newest readable checkpoint, ``last.pt`` or else ``prev.pt``, and its path; None if neither exists.

        An unreadable ``last.pt`` is reported in one line and ``prev.pt`` used instead; if that
        fails too, the ``last.pt`` error is raised.
        """
        found = [p for p in (self.file(LAST), self.file(PREV)) if p.exists()]
        if not found:
            return None
        first: RunError | None = None
        for path in found:
            try:
                return load_checkpoint(path), path
            except RunError as exc:
                first = first or exc
                if path.name == LAST and len(found) > 1:
                    log(f"warning: {exc}; falling back to {PREV}")
        assert first is not None
        raise first

    def set_aside(self, name: str) -> None:
        """Rename an unreadable file ``name`` to ``name.corrupt`` (if it exists)."""
        if self.file(name).exists():
            os.replace(self.file(name), self.file(name + ".corrupt"))

    def append_history(self, row: dict[str, Any]) -> None:
        with open(self.file(HISTORY), "a") as fh:
            fh.write(json.dumps(row, default=json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Epoch rows of the history (the header line is left out); a torn line raises :class:`RunError`."""
        path = self.file(HISTORY)
        if not path.exists():
            return []
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise RunError(f"{path}: line {i} is not valid JSON (cut short by a kill?); "
                               "`ucdir train --resume` rewrites it from the checkpoint") from None
        return [read_history_row(r) for r in rows if "epoch" in r]

    def rewrite_history(self, cfg: UCDIRConfig, rows: list[dict[str, Any]], command: list[str] | None = None) -> None:
        """Rewrite the history as its header and ``rows`` (the rows a checkpoint holds; used on resume).

        The header line is kept if it reads; otherwise a new one is written.
        """
        header = None
        try:
            with open(self.file(HISTORY)) as fh:
                first = json.loads(fh.readline())
            header = first if isinstance(first, dict) and "config" in first else None
        except (OSError, ValueError):
            pass
        self._write_history(header or self._header(cfg, command), rows)

    def _write_history(self, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        lines = [json.dumps(r, default=json_default) for r in [header, *rows]]
        atomic_write_bytes(self.file(HISTORY), ("\n".join(lines) + "\n").encode())
