"""Where the companion reads and writes, and how it shows a path: the project root, a notebook's
output folders, a benchmark's results file, and paths as a committed file may show them (never
the absolute path of the machine that made it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ucdir_core.config.presets import PRESETS
from ucdir_core.config.run import RunConfig


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` above ``start`` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").exists() and (p / "ucdir_core").is_dir():
            return p
    return here


def dataset_name(data: str) -> str:
    """``digits`` or the benchmark a root folder holds (its folder name), else ``folder``."""
    if data == "digits":
        return "digits"
    name = Path(data).name.lower().replace("-", "_")
    return name if name in PRESETS else "folder"


def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` as a caption, a printed line or a results file may show it.

    Relative paths are kept as given (the notebooks and the command line read them relative to
    the project root). An absolute path under the project root, or beside it (under the root's
    parent, e.g. ``../shared/data/pacs``), becomes relative to the project root; one under the
    home folder becomes ``~/...``; any other is left as given.
    """
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    root = Path(root).resolve() if root is not None else project_root()
    p = Path(os.path.normpath(p))
    for base, prefix in ((root, "."), (root.parent, "..")):
        try:
            return str(Path(prefix) / p.relative_to(base))  # Path("./x") prints as "x"
        except ValueError:
            continue
    try:
        return str(Path("~") / p.relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


def dataset_location(cfg) -> str:
    """Where a config's images come from, as a caption shows it: the root by :func:`display_path`,
    or ``embedded`` for the digits built offline."""
    return display_path(cfg.root) if cfg.root else "embedded"


def config_text(cfg) -> str:
    """The run config as indented JSON, with the dataset root shown by :func:`display_path`."""
    d = cfg.to_dict()
    if d.get("root"):
        d["root"] = display_path(d["root"])
    return json.dumps(d, indent=2, sort_keys=True)


class OutputDirs:
    """Where a notebook writes: ``figures`` (committed ``figures/<dataset>`` for real runs,
    ``reports/<dataset>-smoke/figures`` for smoke runs) and ``runs`` (run folders)."""

    def __init__(self, cfg: RunConfig, smoke: bool):
        root = project_root()
        tag = cfg.dataset + ("-smoke" if smoke else "")
        self.figures = root / "reports" / tag / "figures" if smoke else root / "figures" / cfg.dataset
        self.runs = root / "runs" / tag
        self.figures.mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)


def output_dirs(cfg: RunConfig, smoke: bool) -> OutputDirs:
    return OutputDirs(cfg, smoke)


def results_path(dataset: str) -> Path | None:
    """``results/<dataset>.json`` of the project when it exists (a benchmark's results file)."""
    path = project_root() / "results" / f"{dataset}.json"
    return path if path.exists() else None
