"""Run folders: resolved config, JSONL history, atomic checkpoints."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ucdir_core.config import UCDIRConfig

CONFIG = "config.json"
HISTORY = "history.jsonl"
LAST = "last.pt"
BEST = "best.pt"
SPLIT = "split.json"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n").encode())


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class RunFolder:
    """One run's folder: ``config.json``, ``history.jsonl``, ``last.pt``, ``best.pt``, ``split.json``,
    ``manifest.json`` and ``summary.json``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return self.file(CONFIG).exists()

    def start(self, cfg: UCDIRConfig, command: list[str] | None = None) -> None:
        """Create the folder and write the config and the history's first line (command + config)."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.file(CONFIG), cfg.to_dict())
        header = {"command": command if command is not None else sys.argv, "config": cfg.to_dict(), "time": time.time()}
        atomic_write_bytes(self.file(HISTORY), (json.dumps(header, default=_default) + "\n").encode())

    def config(self) -> UCDIRConfig:
        if not self.exists():
            raise FileNotFoundError(f"no run at {self.path} (missing {CONFIG})")
        return UCDIRConfig.from_dict(json.loads(self.file(CONFIG).read_text()))

    def append_history(self, row: dict[str, Any]) -> None:
        with open(self.file(HISTORY), "a") as fh:
            fh.write(json.dumps(row, default=_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Epoch rows of the history (the header line is left out)."""
        if not self.file(HISTORY).exists():
            return []
        rows = [json.loads(line) for line in self.file(HISTORY).read_text().splitlines() if line.strip()]
        return [r for r in rows if "epoch" in r]

    def truncate_history(self, last_epoch: int) -> None:
        """Keep the header and the rows of epochs ``<= last_epoch`` (used on resume)."""
        lines = self.file(HISTORY).read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", -1) <= last_epoch]
        atomic_write_bytes(self.file(HISTORY), ("\n".join(kept) + "\n").encode())
