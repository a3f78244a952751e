"""What the notebooks show and how their executed copies are kept readable.

- :func:`show_figure`: save a Figure with its caption (:func:`ucdir_core.viz.save_figure`) and
  display it inline, once, as a PNG of moderate resolution.
- :func:`display_path`: a path as a committed file may show it (relative to the project, never
  the absolute path of the machine that made it).
- :func:`per_query_precision`, :func:`quantile_queries`, :func:`retrieval_grid`: the qualitative
  figure's queries, chosen at quantiles of per-query precision so that it shows the typical case.
- :func:`ablation_histories`, :func:`has_alignment`: the per-epoch records of the ablation runs.
- :func:`code_cells`, :func:`report_drift`: an executed report against its source notebook.

Nothing here runs at import: the module picks no matplotlib backend and changes no setting.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

#: resolution (dots per inch) of the figures shown inline, and so stored in executed notebooks;
#: the files under ``figures/`` keep their own (``save_figure``'s ``dpi``)
DISPLAY_DPI = 72
#: the same for grids of many images (their saved files keep more detail)
GRID_DISPLAY_DPI = 60


def _project_root() -> Path:
    from ucdir_core.companion import project_root

    return project_root()


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
    root = Path(root).resolve() if root is not None else _project_root()
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


def figure_png(fig, dpi: int = DISPLAY_DPI) -> bytes:
    """The figure as PNG bytes (tight bounding box, no software stamp)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def show_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, pdf: bool = False,
                dpi: int = 150, display_dpi: int = DISPLAY_DPI) -> None:
    """Save ``fig`` under ``figures_dir`` (PNG at ``dpi``, PDF with ``pdf``, ``caption`` beside it),
    display it inline as a PNG at ``display_dpi``, and close it.

    The figure is displayed as an image rather than through the kernel's matplotlib backend, so a
    notebook shows it the same way in JupyterLab and under papermill, at a resolution that keeps
    executed notebooks small; closing it keeps the inline backend from showing it a second time.
    Outside IPython nothing is displayed. Returns None, so a cell ending with it prints nothing.
    """
    import matplotlib.pyplot as plt

    from ucdir_core.viz import save_figure

    save_figure(fig, name, figures_dir, pdf=pdf, caption=caption, dpi=dpi)
    if in_ipython():
        from IPython.display import Image, display

        display(Image(data=figure_png(fig, display_dpi), format="png"))
    plt.close(fig)


def in_ipython() -> bool:
    """Whether this runs in IPython (a notebook's kernel, or the IPython shell)."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython comes with the notebooks extra only
        return False
    return get_ipython() is not None


def results_path(dataset: str) -> Path | None:
    """``results/<dataset>.json`` of the project when it exists (a benchmark's results file)."""
    path = _project_root() / "results" / f"{dataset}.json"
    return path if path.exists() else None


# --- the qualitative figure -------------------------------------------------------------------

def per_query_precision(query: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                        k: int = 10, block_size: int = 1024) -> np.ndarray:
    r"""Per-query precision at ``k`` in percent, cosine similarity.

    For query i with :math:`r_i` relevant gallery items and :math:`k_i = \min(k, r_i)`: the share
    of its top :math:`k_i` results that have its label (the per-query term of the reference's
    capped P@k, :func:`ucdir_core.metrics.retrieval_metrics`); NaN when its class is absent from
    the gallery. Ties in similarity are broken by gallery index.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,) -> (n,).
    """
    q = np.asarray(query, dtype=np.float32)
    g = np.asarray(gallery, dtype=np.float32)
    ql, gl = np.asarray(query_labels), np.asarray(gallery_labels)
    q = q / np.linalg.norm(q, axis=1, keepdims=True).clip(min=1e-12)
    g = g / np.linalg.norm(g, axis=1, keepdims=True).clip(min=1e-12)
    labels, counts = np.unique(gl, return_counts=True)
    relevant = dict(zip(labels.tolist(), counts.tolist()))
    k = min(k, len(g))
    out = np.full(len(q), np.nan)
    for b in range(0, len(q), block_size):
        sims = q[b:b + block_size] @ g.T  # B x m
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # B x k
        hits = gl[top] == ql[b:b + block_size, None]  # B x k
        for row, label in enumerate(ql[b:b + block_size].tolist()):
            k_i = min(k, relevant.get(label, 0))
            if k_i:
                out[b + row] = 100.0 * hits[row, :k_i].mean()
    return out


def quantile_queries(precision: np.ndarray, quantiles: Sequence[float] = (0.1, 0.5, 0.9),
                     seed: int = 0) -> list[tuple[float, int]]:
    """The query at each quantile of ``precision``: ``[(quantile, query index), ...]``.

    Queries are ranked by precision (NaN left out), ties in a seeded random order; the query at
    quantile q is the one of rank ``round(q * (n - 1))``, so its precision is the q-quantile
    (``numpy.quantile(..., method="nearest")`` up to ties) and the pick among equal precisions
    changes with ``seed`` only.
    """
    precision = np.asarray(precision, dtype=float)
    valid = np.flatnonzero(~np.isnan(precision))
    if not len(valid):
        raise ValueError("no query has a relevant gallery item")
    tie = np.random.default_rng(seed).permutation(len(valid))
    ranked = valid[np.lexsort((tie, precision[valid]))]
    return [(float(q), int(ranked[int(round(q * (len(ranked) - 1)))])) for q in quantiles]


def retrieval_grid(emb, labels, paths, q_side: int, g_side: int, picks: Sequence[tuple[float, int]],
                   precision: np.ndarray, top_k: int = 10) -> dict[str, list]:
    """Images for a retrieval grid: one row per picked query (its image, then its ``top_k``
    results from the other domain) with borders ``green`` (same class) or ``red``, and a row label
    naming the quantile and the query's precision.

    Args:
        emb, labels, paths: pairs (indexable by side) of (N_d, D) embeddings, (N_d,) labels and
            image paths of the evaluated images.
        picks: ``[(quantile, query index), ...]`` (:func:`quantile_queries`).
        precision: per-query precision of side ``q_side`` (:func:`per_query_precision`).
    """
    from ucdir_core.images import load_image

    q_emb, g_emb = np.asarray(emb[q_side], dtype=np.float32), np.asarray(emb[g_side], dtype=np.float32)
    q_emb = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True).clip(min=1e-12)
    g_emb = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True).clip(min=1e-12)
    q_lab, g_lab = np.asarray(labels[q_side]), np.asarray(labels[g_side])
    images, borders, row_labels = [], [], []
    for quantile, qi in picks:
        top = np.argsort(-(g_emb @ q_emb[qi]), kind="stable")[:top_k]
        images.append([load_image(paths[q_side][qi])] + [load_image(paths[g_side][j]) for j in top])
        borders.append([None] + ["green" if g_lab[j] == q_lab[qi] else "red" for j in top])
        row_labels.append(f"{100 * quantile:.0f}th percentile\nP@{top_k} {precision[qi]:.0f} %")
    return {"images": images, "borders": borders, "row_labels": row_labels}


# --- histories of the ablation runs -----------------------------------------------------------

def ablation_histories(runs_dir: str | Path, cfg, methods: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """``{method: history rows}`` of the ablation runs of ``cfg``'s pair found under ``runs_dir``
    (``runs_dir / run_name(cfg, method)``; the runs ``02_ablations`` trains or reads). Methods
    without a run folder are left out."""
    from ucdir_core import runs
    from ucdir_core.ablation import ABLATIONS
    from ucdir_core.companion import run_name

    out = {}
    for method in methods or ABLATIONS:
        rows = runs.RunFolder(Path(runs_dir) / run_name(cfg, method)).history()
        if rows:
            out[method] = rows
    return out


def has_alignment(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Whether any history row carries an ``alignment`` record."""
    return any("alignment" in r for rows in histories.values() for r in rows)


# --- executed reports against their sources ---------------------------------------------------

def code_cells(nb: Mapping[str, Any]) -> list[str]:
    """Sources of the code cells of a notebook (nbformat node or JSON dict), without the cell
    papermill injects (tagged ``injected-parameters``)."""
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        src = cell["source"]
        out.append("".join(src) if isinstance(src, list) else src)
    return out


def report_drift(report: Mapping[str, Any], source: Mapping[str, Any]) -> list[str]:
    """How an executed report's code differs from its source notebook's: one line per differing
    code cell (empty when they agree)."""
    a, b = code_cells(report), code_cells(source)
    problems = [f"code cell {i}: report and source differ" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(a) != len(b):
        problems.append(f"{len(a)} code cells in the report, {len(b)} in the source")
    return problems


def relative_papermill_paths(nb: Mapping[str, Any], root: str | Path) -> None:
    """Replace the absolute input and output paths papermill records in a notebook's metadata by
    paths relative to ``root`` (in place)."""
    meta = nb.get("metadata", {}).get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = display_path(meta[key], root)


def evaluated_paths(trainer) -> list[list[str]]:
    """Image paths of a trainer's evaluated images, per side (in the order of its embeddings)."""
    return [list(d.test_eval.paths) for d in trainer.inputs]


# --- the ablation over every direction of a benchmark results file ----------------------------

#: the anchor rows a results file may hold, drawn as reference lines (below and above the ablation)
ANCHORS = ("centered", "oracle")


def load_results(dataset: str) -> dict | None:
    """The dataset's benchmark results (``results/<dataset>.json``), or None when there are none."""
    path = results_path(dataset)
    return json.loads(path.read_text()) if path is not None else None


def ablation_over_directions(res: Mapping[str, Any], metrics: Sequence[str] = ("P@1", "mAP")):
    """The ablation figure of a benchmark results file (:func:`ucdir_core.viz.ablation_directions`)
    and its caption.

    Uses ``res["results"][split][method][direction]`` for the rows ``baseline`` and every ablation,
    ``res["seeds"][s]`` (the first other seed) for the seed spread, and the anchor rows
    :data:`ANCHORS` where present.
    """
    from ucdir_core.ablation import ABLATIONS
    from ucdir_core.viz import ablation_directions

    methods = ["baseline", *ABLATIONS]
    other_seeds = sorted(res.get("seeds", {}))
    seeds = res["seeds"][other_seeds[0]] if other_seeds else None
    fig = ablation_directions(res["results"], methods, metrics, seeds=seeds, anchors=ANCHORS)
    directions = {d for split in res["results"].values() for m in methods for d in split.get(m, {})}
    anchors = [a for a in ANCHORS if any(a in split for split in res["results"].values())]
    caption = (f"Loss ablation over all {len(directions)} retrieval directions, {res.get('dataset', '')}, "
               f"splits {', '.join(res['results'])}: each direction a point per method (one line per direction), "
               "black bar = mean over directions"
               + (f", open diamond = mean of seed {other_seeds[0]} where it was run" if seeds else "")
               + (f"; reference lines: {' and '.join(anchors)} (mean over directions)" if anchors else "")
               + f". Seed {res.get('seed')}; {res.get('regime', 'last epoch')}.")
    return fig, caption


#: calls in a notebook cell that make a figure (each such cell must show it, :func:`show_figure`)
FIGURE_CALLS = ("class_counts_figure(", "image_grid(", "training_curves(", "ablation_bars(", "umap_panels(",
                "ablation_directions(", "alignment_curves(", "ablation_over_directions(")


def output_problems(nb: Mapping[str, Any]) -> list[str]:
    """What an executed notebook shows that a reader should not see, or fails to show: stderr
    output (warnings), errors, and cells that make a figure (:data:`FIGURE_CALLS`) with neither an
    image among their outputs nor a note (Markdown) saying why there is none. One line per
    problem; empty when there is none."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        outputs = cell.get("outputs", [])
        for o in outputs:
            if o["output_type"] == "stream" and o.get("name") == "stderr":
                text = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                problems.append(f"cell {i}: stderr: {text.strip()[:200]}")
            elif o["output_type"] == "error":
                problems.append(f"cell {i}: error {o.get('ename')}: {o.get('evalue', '')[:200]}")
        makes_figure = any(call in src for call in FIGURE_CALLS)
        shown = any("image/png" in o.get("data", {}) for o in outputs)
        noted = any("text/markdown" in o.get("data", {}) for o in outputs)  # says why there is no figure
        if makes_figure and not (shown or noted):
            problems.append(f"cell {i}: makes a figure but shows no image")
    return problems
