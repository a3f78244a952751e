"""Run folders: resolved config, JSONL history, atomic checkpoints, one writer at a time.

A run folder is written by one process at a time (an exclusive lock on ``.lock`` for the whole
run). Every file is written to a temporary file in the same folder and renamed over the old one,
so a kill never leaves half a file; ``last.pt`` keeps its predecessor as ``prev.pt``. Checkpoints
are loaded with ``weights_only=True``: tensors and plain values, never code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ucdir_core.config import UCDIRConfig
from ucdir_core.data import DataError

CONFIG = "config.json"
HISTORY = "history.jsonl"
LAST = "last.pt"
PREV = "prev.pt"
BEST = "best.pt"
SPLIT = "split.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOCK = ".lock"
TEMP_SUFFIX = ".tmp"
#: the files of a run, deleted by ``--overwrite``
RUN_FILES = (CONFIG, HISTORY, LAST, PREV, BEST, SPLIT, MANIFEST, SUMMARY)


class RunError(DataError):
    """A run folder or checkpoint that cannot be used as asked; the message is one line naming the file."""


def atomic_write_bytes(path: Path, data: bytes, previous: Path | None = None) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over ``path``: never a half file.

    With ``previous``, the file ``path`` held is first renamed to ``previous``. Files are created
    with the user's umask (mode ``0o666 & ~umask``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path, previous: Path | None = None) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), previous)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True`` onto the CPU: tensors and plain values, never code.

    A crafted, truncated or corrupt file raises :class:`RunError`, one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError, KeyError, ...
        raise RunError(f"{path}: not a checkpoint of tensors and plain values, truncated or corrupt; "
                       f"nothing in it was run ({_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: not a checkpoint (it holds a {type(obj).__name__}, not a dict)")
    return obj


def _reason(exc: BaseException) -> str:
    """The informative line of an exception's message (torch's carry paragraphs of advice)."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(boiler)]
    text = lines[0].split(". ")[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (numpy numbers and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(obj, default=_default))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n").encode())


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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

        A second writer gets a :class:`RunError` naming the holder's pid. Where ``fcntl`` does not
        exist (Windows) the folder is not locked.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        self.check_folder()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise RunError(f"{self.path} is in use by another process (pid {holder}); wait for it to end "
                               "or pick another run folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def claim(self, resume: bool = False, overwrite: bool = False) -> Iterator[None]:
        """The run folder, ready for one writer: locked (by process 0), refused if it holds a run
        and neither ``resume`` nor ``overwrite`` is given, emptied of a killed writer's temporary
        files, and of the old run's files with ``overwrite``."""
        from ucdir_core import distributed as D

        with self.lock() if D.is_main() else contextlib.nullcontext():
            self.refuse_reuse(resume, overwrite)
            if D.is_main():
                self.remove_temp_files()
                if overwrite:
                    self.clear()
            D.barrier()
            yield

    def start(self, cfg: UCDIRConfig, command: list[str] | None = None) -> None:
        """Create the folder, drop an earlier run's checkpoints and summary, and write the config and
        the history's first line (command, config, thread and DataLoader worker counts)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (LAST, PREV, BEST, SUMMARY):
            self.file(name).unlink(missing_ok=True)
        write_json(self.file(CONFIG), cfg.to_dict())
        self._write_history(self._header(cfg, command), [])

    def _header(self, cfg: UCDIRConfig, command: list[str] | None) -> dict[str, Any]:
        return {"command": command if command is not None else sys.argv, "config": cfg.to_dict(),
                "runtime": {**runtime(), "dataloader_workers": cfg.workers}, "time": time.time()}

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
            fh.write(json.dumps(row, default=_default) + "\n")
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
        return [r for r in rows if "epoch" in r]

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
        lines = [json.dumps(r, default=_default) for r in [header, *rows]]
        atomic_write_bytes(self.file(HISTORY), ("\n".join(lines) + "\n").encode())
