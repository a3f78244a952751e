"""A benchmark's results file and the runs of an ablation, read back for the notebooks' figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ucdir_core.companion.experiments import run_name
from ucdir_core.companion.figures import ablation_directions
from ucdir_core.companion.paths import results_path
from ucdir_core.evaluation.anchors import REFERENCE_ANCHORS
from ucdir_core.method.params import ROWS
from ucdir_core.training import runs


#: table rows renamed since results files were written; a file written before is read under the new names
LEGACY_ROWS = {"centered": "centred"}


def read_results(path: str | Path) -> dict:
    """A benchmark's results file, its rows written under old names (:data:`LEGACY_ROWS`) renamed."""
    res = json.loads(Path(path).read_text())

    def renamed(split: Any) -> Any:
        return {LEGACY_ROWS.get(k, k): v for k, v in split.items()} if isinstance(split, dict) else split

    for part in ("results", "alignment"):
        if isinstance(res.get(part), dict):
            res[part] = {split: renamed(rows) for split, rows in res[part].items()}
    if isinstance(res.get("seeds"), dict):
        res["seeds"] = {seed: {split: renamed(rows) for split, rows in other.items()}
                        for seed, other in res["seeds"].items()}
    return res


def load_results(dataset: str) -> dict | None:
    """The dataset's benchmark results (``results/<dataset>.json``), or None when there are none."""
    path = results_path(dataset)
    return read_results(path) if path is not None else None


def ablation_histories(runs_dir: str | Path, cfg, rows: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """``{table row: its run's history}`` of the table rows' runs of ``cfg``'s pair found under
    ``runs_dir`` (``runs_dir / run_name(cfg, row)``; the runs ``02_ablations`` trains or reads). Rows
    without a run folder are left out."""
    out = {}
    for row in rows or ROWS:
        history = runs.RunFolder(Path(runs_dir) / run_name(cfg, row)).history()
        if history:
            out[row] = history
    return out


def has_alignment(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Whether any history row carries an ``alignment`` record."""
    return any("alignment" in r for rows in histories.values() for r in rows)


def ablation_over_directions(res: Mapping[str, Any], metrics: Sequence[str] = ("P@1", "mAP")):
    """The ablation figure of a benchmark results file (:func:`ucdir_core.companion.figures.ablation_directions`)
    and its caption.

    Uses ``res["results"][split][method][direction]`` for the rows ``baseline`` and every ablation,
    ``res["seeds"][s]`` (the first other seed) for the seed spread, and the anchor rows
    :data:`~ucdir_core.evaluation.anchors.REFERENCE_ANCHORS` where present.
    """
    methods = ["baseline", *(m for m in ROWS if any(m in split for split in res["results"].values()))]
    other_seeds = sorted(res.get("seeds", {}))
    seeds = res["seeds"][other_seeds[0]] if other_seeds else None
    fig = ablation_directions(res["results"], methods, metrics, seeds=seeds, anchors=REFERENCE_ANCHORS)
    directions = {d for split in res["results"].values() for m in methods for d in split.get(m, {})}
    anchors = [a for a in REFERENCE_ANCHORS if any(a in split for split in res["results"].values())]
    caption = (f"Loss ablation over all {len(directions)} retrieval directions, {res.get('dataset', '')}, "
               f"splits {', '.join(res['results'])}: each direction a point per method (one line per direction), "
               "black bar = mean over directions"
               + (f", open diamond = mean of seed {other_seeds[0]} where it was run" if seeds else "")
               + (f"; reference lines: {' and '.join(anchors)} (mean over directions)" if anchors else "")
               + f". Seed {res.get('seed')}; {res.get('regime', 'last epoch')}.")
    return fig, caption
