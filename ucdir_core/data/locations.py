"""Where data lives: the folder for built-in data and caches, and a config's dataset root."""

from __future__ import annotations

import os
from pathlib import Path

from ucdir_core.base.errors import DataError
from ucdir_core.config.run import RunConfig
from ucdir_core.data.digits import build_digits


def default_data_home() -> Path:
    """Where built-in data and the view cache are written: ``$UCDIR_DATA`` or ``~/.cache/ucdir``."""
    return Path(os.environ.get("UCDIR_DATA", Path.home() / ".cache" / "ucdir"))


def resolve_root(cfg: RunConfig) -> Path:
    """The dataset root; for ``dataset="digits"`` without a root, the embedded digits (built once).

    Raises:
        DataError: a benchmark other than digits without a root.
    """
    if cfg.root is not None:
        return Path(cfg.root)
    if cfg.dataset == "digits":
        return build_digits(default_data_home() / "digits-seed0", seed=0)
    raise DataError(f"dataset {cfg.dataset!r} needs root=PATH (see `ucdir data prepare {cfg.dataset} --root DIR`)")
