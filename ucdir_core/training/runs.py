"""Run folders: resolved config, JSONL history, atomic checkpoints, one writer at a time.

A run folder is written by one process at a time (an exclusive lock on ``.lock`` for the whole
run). Every file is written to a temporary file in the same folder and renamed over the old one,
so a kill never leaves half a file; ``last.pt`` keeps its predecessor as ``prev.pt``; a gallery
index (``index/<name>/``, :mod:`ucdir_core.evaluation.index`) is written as a whole folder and
renamed into place. Checkpoints are loaded with ``weights_only=True``: tensors and plain values,
never code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ucdir_core.align.stage import AlignmentModel
from ucdir_core.base import distributed as D
from ucdir_core.base.errors import RunError
from ucdir_core.base.io import (TEMP_SUFFIX, atomic_torch_save, atomic_write_bytes, file_digest, json_default,
                                load_checkpoint, plain, remove_temp_folders, write_json)
from ucdir_core.config.run import RESUMABLE_KEYS, RunConfig, config_differences
from ucdir_core.data.identity import check_identity
from ucdir_core.evaluation.index import INDEX_FOLDER

CONFIG = "config.json"
HISTORY = "history.jsonl"
LAST = "last.pt"
PREV = "prev.pt"
BEST = "best.pt"
SPLIT = "split.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
DATASET = "dataset.json"
ALIGNMENT = "alignment.npz"
LOCK = ".lock"
#: the folder of the run's gallery indexes, one sub-folder each (deleted by ``--overwrite``)
INDEX = INDEX_FOLDER
#: the files of a run, deleted by ``--overwrite``
RUN_FILES = (CONFIG, HISTORY, LAST, PREV, BEST, SPLIT, MANIFEST, SUMMARY, DATASET, ALIGNMENT)
#: history keys renamed to the paper's loss names; rows written before are read under the new names
LEGACY_HISTORY_KEYS = {"loss_instance": "loss_instance_contrastive", "loss_cluster": "loss_cluster_contrastive",
                       "w_instance": "w_instance_contrastive", "w_cluster": "w_cluster_contrastive"}

__all__ = ["RunFolder", "RunError", "CONFIG", "HISTORY", "LAST", "PREV", "BEST", "SPLIT", "MANIFEST", "SUMMARY",
           "LOCK", "INDEX", "RUN_FILES", "ALIGNMENT", "atomic_torch_save", "atomic_write_bytes", "load_checkpoint",
           "plain", "write_json", "read_history_row", "runtime", "checkpoint_epoch", "check_checkpoint", "summarize",
           "format_row", "closing_lines",
           "CHECKPOINT_FORMAT"]


#: the format of the checkpoints this version writes: ``epoch`` is the last epoch they hold (0-based),
#: in every checkpoint, as in the history and ``summary.json``
CHECKPOINT_FORMAT = 2


def checkpoint_epoch(state: dict[str, Any]) -> int:
    """The last epoch (0-based) whose weights a checkpoint holds. ``last.pt`` and ``prev.pt``
    written before :data:`CHECKPOINT_FORMAT` stored the next epoch to run instead; they are read
    as the epoch before it."""
    epoch = int(state["epoch"])
    if "checkpoint_format" not in state and "optimizer" in state:
        return epoch - 1
    return epoch


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
        """Delete the run's files and its indexes (``--overwrite``); other files in the folder are left alone."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
            self.file(name + ".corrupt").unlink(missing_ok=True)
        self.clear_indexes()

    def clear_indexes(self) -> None:
        """Delete the run's gallery indexes (``index/``): a new run's checkpoints make them stale."""
        if self.file(INDEX).is_dir() and not self.file(INDEX).is_symlink():
            shutil.rmtree(self.file(INDEX))

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files a killed writer left behind (only while holding the lock)."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.iterdir() if p.name.endswith(TEMP_SUFFIX) and p.is_file()
                 and any(p.name.startswith(n + ".") for n in RUN_FILES)]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale + remove_temp_folders(self.file(INDEX))

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
        files, and of the old run's files with ``overwrite``. A start that fails before the run
        is written (no ``config.json``) leaves nothing behind: the files it wrote (the data check's
        manifest, the split) are removed, and so is the folder if it made it."""
        with self.lock() if D.is_main() else contextlib.nullcontext():
            self.refuse_reuse(resume, overwrite)
            if D.is_main():
                self.remove_temp_files()
                if overwrite:
                    self.clear()
            before = {n for n in RUN_FILES if self.file(n).exists()}
            D.barrier()
            try:
                yield
            except BaseException:
                if D.is_main() and not self.exists():
                    for name in set(RUN_FILES) - before:
                        self.file(name).unlink(missing_ok=True)
                raise

    def start(self, cfg: RunConfig, command: list[str] | None = None, identity: dict[str, Any] | None = None,
              header: dict[str, Any] | None = None) -> None:
        """Create the folder, drop an earlier run's checkpoints, summary and indexes, and write the config,
        the dataset's identity (``dataset.json``) and the history's first line (command, config,
        thread and DataLoader worker counts, and ``header``'s entries)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (LAST, PREV, BEST, SUMMARY, ALIGNMENT):
            self.file(name).unlink(missing_ok=True)
        self.clear_indexes()
        if identity is not None:
            write_json(self.file(DATASET), identity)
        write_json(self.file(CONFIG), cfg.to_dict())
        self._write_history({**self._header(cfg, command), **(header or {})}, [])

    def _header(self, cfg: RunConfig, command: list[str] | None) -> dict[str, Any]:
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

    def write_config(self, cfg: RunConfig) -> None:
        """Replace ``config.json`` (a resume with changed optimisation settings, :data:`RESUMABLE_KEYS`)."""
        write_json(self.file(CONFIG), cfg.to_dict())

    def alignment_stage(self) -> tuple[AlignmentModel | None, dict[str, Any] | None]:
        """The run's alignment stage (``alignment.npz``, fitted on the last epoch's training embeddings:
        it goes with ``last.pt``) and its record ``{"alignment", "file", "digest"}``; ``(None, None)``
        when the run has none (its config says ``alignment=none``, or training has not ended).

        Raises:
            RunError: an ``alignment.npz`` that is not an alignment model (one line naming it).
        """
        path = self.file(ALIGNMENT)
        if self.config().alignment_params.alignment == "none" or not path.is_file():
            return None, None
        try:
            model = AlignmentModel.load(path)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        return model, {"alignment": model.alignment, "file": ALIGNMENT, "digest": file_digest(path)}

    def config(self) -> RunConfig:
        self.check_folder()
        if not self.exists():
            raise FileNotFoundError(f"no run at {self.path} (missing {CONFIG})")
        try:
            return RunConfig.from_dict(json.loads(self.file(CONFIG).read_text()))
        except (ValueError, TypeError) as exc:
            raise RunError(f"{self.file(CONFIG)}: not a valid run config ({str(exc).splitlines()[0]})") from None

    def checked_last(self, cfg: RunConfig, identity: dict[str, Any] | None, banks: dict[str, int],
                     log: Callable[[str], None] = print) -> tuple[dict[str, Any], Path] | None:
        """The checkpoint to resume from (:meth:`load_last`), checked against the run's config,
        its dataset's ``identity`` and the banks' sizes (:func:`check_checkpoint`); None if there is none.

        Raises:
            RunError: the data changed since the run started, or the checkpoint does not fit (one line).
        """
        found = self.load_last(log)
        if found is None:
            return None
        if identity is not None:
            check_identity(self.identity(), identity, str(self.file(DATASET)))
        check_checkpoint(found[0], found[1], cfg, banks, self)
        return found

    def resumed_from(self, path: Path, cfg: RunConfig, rows: list[dict[str, Any]]) -> None:
        """Bring the folder in step with a resume from checkpoint ``path``: the config rewritten if
        optimisation settings changed (:data:`RESUMABLE_KEYS`), an unreadable ``last.pt`` set aside
        when ``prev.pt`` was used, and the history rewritten as the checkpoint's ``rows``."""
        if self.config() != cfg:
            self.write_config(cfg)
        if path.name == PREV:
            self.set_aside(LAST)  # unreadable: kept for inspection, out of the rotation
        self.rewrite_history(cfg, rows)

    def has_checkpoint(self) -> bool:
        return self.file(LAST).exists() or self.file(PREV).exists()

    def save_last(self, state: dict[str, Any], keep_previous: bool = True) -> None:
        """Write ``last.pt`` atomically; the one it replaces becomes ``prev.pt`` (with
        ``keep_previous``; otherwise it is replaced and no ``prev.pt`` is left)."""
        atomic_torch_save({**state, "checkpoint_format": CHECKPOINT_FORMAT}, self.file(LAST),
                          previous=self.file(PREV) if keep_previous else None)
        if not keep_previous:
            self.file(PREV).unlink(missing_ok=True)

    def save_best(self, epoch: int, model: dict[str, Any], cfg: RunConfig) -> None:
        """Write ``best.pt`` atomically: the model's weights at ``epoch`` (0-based) and the config."""
        atomic_torch_save({"epoch": epoch, "model": model, "config": cfg.to_dict(),
                           "checkpoint_format": CHECKPOINT_FORMAT}, self.file(BEST))

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

    def rewrite_history(self, cfg: RunConfig, rows: list[dict[str, Any]], command: list[str] | None = None) -> None:
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


def check_checkpoint(state: dict[str, Any], path: Path, cfg: RunConfig, banks: dict[str, int], run: RunFolder) -> None:
    """Refuse a checkpoint written under another config or for other data, in one line.

    Args:
        banks: the number of training images of each domain now (``{"bank_a": N_A, "bank_b": N_B}``).

    Raises:
        RunError: the checkpoint's config differs from the run's, or a bank's size from the data's.
    """
    keys = config_differences(plain(state.get("config")), cfg, ignore=RESUMABLE_KEYS)
    if keys:
        raise RunError(f"{path} was written under another config than {run.file(CONFIG)} "
                       f"(differs in {', '.join(keys[:6])}); refusing it")
    saved = state.get("model", {})
    for (name, want), domain in zip(banks.items(), cfg.domains):
        have = saved.get(name)
        if have is not None and have.shape[0] != want:
            raise RunError(f"the dataset changed since {path} was written: domain {domain} had "
                           f"{have.shape[0]} training images, now {want}")


def summarize(history: list[dict[str, Any]], cfg: RunConfig) -> dict[str, Any]:
    """Last-epoch and best-epoch results (``summary.json``). The best epoch is chosen as the
    reference does, on the mean P@(first k) of the two directions of the *evaluation* labels, and
    labelled so."""
    evaluated = [r for r in history if "eval" in r]
    if not evaluated:
        return {"split": cfg.split}
    last = evaluated[-1]
    best = max(evaluated, key=lambda r: r["score"])
    return {
        "split": cfg.split, "epochs": cfg.epochs, "backbone": cfg.backbone, "image_size": cfg.image_size,
        "seed": cfg.seed, "domains": list(cfg.domains), "method": cfg.method,
        "last": {"epoch": last["epoch"], "eval": last["eval"], **({"aligned": last["aligned"]} if "aligned" in last else {})},
        "best": {"epoch": best["epoch"], "eval": best["eval"],
                 "selection": f"max mean P@{cfg.eval_ks[0]} of both directions, chosen on the evaluation labels "
                              "(the reference's protocol; optimistic)"},
    }


def format_row(row: dict[str, Any], previous: dict[str, Any] | None = None) -> str:
    """One log line of a history row: epoch, lr, total loss, each direction's metrics, seconds; and
    the loss terms that switch on at this epoch (weighted above 0 now, 0 in ``previous``), which
    is why the total loss can jump."""
    parts = [f"epoch {row['epoch']}", f"lr {row['lr']:.2e}", f"loss {row.get('loss_total', float('nan')):.4f}"]
    if "eval" in row:
        for direction, m in row["eval"].items():
            parts.append(f"{direction} " + " ".join(f"{k} {v:.1f}" for k, v in m.items()))
    parts.append(f"{row['wall_seconds']:.1f}s")
    if previous is not None:
        on = [k[2:] for k, v in row.items() if k.startswith("w_") and v > 0 and not previous.get(k, 0) > 0]
        if on:
            parts.append("switched on: " + ", ".join(on))
    return " | ".join(parts)


def closing_lines(run_dir: Path, untrained: dict[str, dict[str, float]] | None, summary: dict[str, Any]) -> list[str]:
    """The end of a training run in a few lines: where it was saved, each direction's last epoch
    against the untrained model (P@1 and mAP), after the run's alignment stage when it has one, and
    the commands to run next."""
    last = summary.get("last", {})
    lines = [f"run saved in {run_dir} (last epoch {last.get('epoch')}; summary.json, history.jsonl, last.pt, best.pt)"]
    for direction, m in last.get("eval", {}).items():
        before = (untrained or {}).get(direction, {})
        change = "  ".join(f"{k} {before[k]:.1f} -> {m[k]:.1f} ({m[k] - before[k]:+.1f})" if k in before else
                           f"{k} {m[k]:.1f}" for k in ("P@1", "mAP") if k in m)
        lines.append(f"  {direction}: untrained -> last epoch: {change}")
    aligned = last.get("aligned")
    if aligned:  # the run's alignment stage, which retrieval applies
        lines.append(f"  after the {aligned['alignment']} alignment stage (what ucdir retrieve searches): " + "; ".join(
            f"{d} P@1 {m['P@1']:.1f} mAP {m['mAP']:.1f}" for d, m in aligned["eval"].items() if "P@1" in m and "mAP" in m))
    lines += ["next: ucdir evaluate " + str(run_dir) + "              (P@k and mAP; --which best, --align harmony)",
              "      ucdir retrieve " + str(run_dir) + " QUERY.jpg    (the top-k images of the other domain)"]
    return lines
