"""The qualitative figures' material: sample images of a dataset, and retrieval grids whose queries
are chosen at quantiles of per-query precision (:func:`~ucdir_core.evaluation.metrics.per_query_precision`)
so that they show the typical case."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ucdir_core.base.arrays import unit_rows
from ucdir_core.base.errors import DataError
from ucdir_core.data.images import is_image_name, load_image
from ucdir_core.evaluation.metrics import per_query_precision
from ucdir_core.inference.loading import TrainedModel


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
                   precision: np.ndarray, top_k: int = 10, class_names: Sequence[str] | None = None
                   ) -> dict[str, list]:
    """Images for a retrieval grid: one row per picked query (its image, then its ``top_k``
    results from the other domain) with borders ``green`` (same class) or ``red``, a row label
    naming the quantile and the query's precision (saying so when the gallery holds fewer than
    ``top_k`` images of its class, whose number then caps the precision's k, as in
    :func:`per_query_precision`), and each image's class (``classes``, the query's first), so that
    a reader can check every border by eye. Labels serve this display and the borders only; nothing
    here trains.

    Args:
        emb, labels, paths: pairs (indexable by side) of (N_d, D) embeddings, (N_d,) labels and
            image paths of the evaluated images.
        picks: ``[(quantile, query index), ...]`` (:func:`quantile_queries`).
        precision: per-query precision of side ``q_side`` (:func:`per_query_precision`).
        class_names: the name of each label (label order); None: the labels as numbers.

    Returns:
        ``{"images", "borders", "classes"}``: one list per row (query first), and ``"row_labels"``.
    """
    q_emb, g_emb = np.asarray(emb[q_side], dtype=np.float32), np.asarray(emb[g_side], dtype=np.float32)
    q_emb, g_emb = unit_rows(q_emb), unit_rows(g_emb)
    q_lab, g_lab = np.asarray(labels[q_side]), np.asarray(labels[g_side])

    def name(label) -> str:
        return str(class_names[int(label)]) if class_names is not None else str(label)

    images, borders, classes, row_labels = [], [], [], []
    for quantile, qi in picks:
        top = np.argsort(-(g_emb @ q_emb[qi]), kind="stable")[:top_k]
        images.append([load_image(paths[q_side][qi])] + [load_image(paths[g_side][j]) for j in top])
        borders.append([None] + ["green" if g_lab[j] == q_lab[qi] else "red" for j in top])
        classes.append([name(q_lab[qi])] + [name(g_lab[j]) for j in top])
        k_i = min(top_k, int((g_lab == q_lab[qi]).sum()))  # per-query P@k counts the top k_i only
        capped = f"\n(top {k_i} = class size)" if k_i < top_k else ""
        row_labels.append(f"{100 * quantile:.0f}th percentile\nP@{top_k} {precision[qi]:.0f} %{capped}")
    return {"images": images, "borders": borders, "classes": classes, "row_labels": row_labels}


def evaluated_paths(trained: TrainedModel) -> list[list[str]]:
    """Image paths of a trained model's evaluated images, per side (in the order of its embeddings)."""
    return [list(d.test_eval.paths) for d in trained.inputs]


def sample_grid(root: str | Path, counts: dict[str, dict[str, int]], per_class: int, seed: int):
    """Rows of sample images, one row per (domain, class), ``per_class`` drawn with ``seed``:
    ``(rows of PIL images, row labels "domain/class")``; an unreadable file is left out of its row."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for d, per in counts.items():
        for c in sorted(per):
            files = sorted(p for p in (Path(root) / d / c).iterdir() if is_image_name(p))
            pick = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
            imgs = []
            for i in sorted(pick):
                try:
                    imgs.append(load_image(files[i]))
                except (OSError, DataError):
                    continue
            rows.append(imgs)
            labels.append(f"{d}/{c}")
    return rows, labels
