"""Cross-domain retrieval metrics (spec section 4), in bounded memory.

Queries are processed in blocks: each block's similarities to the whole gallery are computed,
reduced (a top-k for P@k; a per-row sort for mAP) and dropped, so peak memory is
``block x N_gallery`` floats whatever the number of queries. Similarity is cosine (rows are
L2-normalised here). Everything runs on the device of the inputs (CPU for numpy arrays).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def _prepare(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike):
    q = torch.as_tensor(query)
    g = torch.as_tensor(gallery, device=q.device)
    ql = torch.as_tensor(query_labels, device=q.device).long().view(-1)
    gl = torch.as_tensor(gallery_labels, device=q.device).long().view(-1)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query {tuple(q.shape)} and gallery {tuple(g.shape)} must be 2-D with the same width")
    if ql.numel() != q.shape[0] or gl.numel() != g.shape[0]:
        raise ValueError("one label per row is required")
    if g.shape[0] == 0 or q.shape[0] == 0:
        raise ValueError("query and gallery must be non-empty")
    q = F.normalize(q.float(), dim=1)
    g = F.normalize(g.float(), dim=1)
    return q, ql, g, gl


def _relevant_counts(ql: Tensor, gl: Tensor) -> Tensor:
    """r_i: number of gallery items with the query's label. Shape: (n_query,)."""
    n_classes = int(max(ql.max(), gl.max())) + 1
    if int(min(ql.min(), gl.min())) < 0:
        raise ValueError("labels must be non-negative integers")
    counts = torch.bincount(gl, minlength=n_classes)
    return counts[ql]


def precision_at_k(
    query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
    ks: Iterable[int] = (1, 5, 15), block_size: int = 1024,
) -> dict[int, float]:
    r"""Pooled, capped precision at k, in percent, as the reference computes it.

    For query i with label :math:`y_i`, :math:`r_i` = gallery items labelled :math:`y_i` and
    :math:`k_i = \min(k, r_i)`:

    .. math:: P@k = 100\,\frac{\sum_i \#\{y_i \text{ among the top } k_i\}}{\sum_i k_i}

    Pooled over queries (not a mean of per-query precisions); not the textbook P@k when
    :math:`r_i < k`. A query whose class is absent from the gallery (:math:`r_i = 0`) counts
    nowhere. NaN when no query has a relevant item.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    q, ql, g, gl = _prepare(query, query_labels, gallery, gallery_labels)
    r = _relevant_counts(ql, gl)  # n
    kmax = min(ks[-1], g.shape[0])
    hits = {k: 0 for k in ks}
    for start in range(0, q.shape[0], block_size):
        sims = q[start:start + block_size] @ g.t()  # B x m
        top = sims.topk(kmax, dim=1).indices  # B x kmax
        match = (gl[top] == ql[start:start + block_size, None]).long().cumsum(dim=1)  # B x kmax
        r_blk = r[start:start + block_size]
        for k in ks:
            k_i = torch.clamp(r_blk, max=min(k, kmax))  # B
            got = match.gather(1, (k_i - 1).clamp(min=0).view(-1, 1)).squeeze(1)
            hits[k] += int(torch.where(k_i > 0, got, torch.zeros_like(got)).sum())
    out = {}
    for k in ks:
        denom = int(torch.clamp(r, max=k).sum())
        out[k] = 100.0 * hits[k] / denom if denom else float("nan")
    return out


def mean_average_precision(
    query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
    block_size: int = 256,
) -> float:
    r"""Mean average precision over the whole ranking, in percent.

    :math:`AP_i = \frac{1}{r_i}\sum_{j=1}^{r_i} \frac{j}{\mathrm{rank}_j}` where
    :math:`\mathrm{rank}_j` is the position of the j-th relevant gallery item. Queries whose class
    is absent from the gallery are left out of the mean. Exact: each block of rows is sorted, and
    only the positions of relevant items are kept.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    """
    q, ql, g, gl = _prepare(query, query_labels, gallery, gallery_labels)
    r = _relevant_counts(ql, gl)
    ap_sum, n_valid = 0.0, 0
    positions = torch.arange(1, g.shape[0] + 1, device=q.device, dtype=torch.float32)
    for start in range(0, q.shape[0], block_size):
        sims = q[start:start + block_size] @ g.t()  # B x m
        order = sims.argsort(dim=1, descending=True)
        rel = (gl[order] == ql[start:start + block_size, None]).float()  # B x m, 1 where relevant
        del sims, order
        precision_at_hits = rel.cumsum(dim=1) / positions * rel  # B x m
        r_blk = r[start:start + block_size].float()
        valid = r_blk > 0
        ap = precision_at_hits.sum(dim=1) / r_blk.clamp(min=1)
        ap_sum += float(ap[valid].sum())
        n_valid += int(valid.sum())
    return 100.0 * ap_sum / n_valid if n_valid else float("nan")


def retrieval_report(
    emb_a: ArrayLike, labels_a: ArrayLike, emb_b: ArrayLike, labels_b: ArrayLike,
    ks: Sequence[int], names: tuple[str, str] = ("a", "b"), with_map: bool = True,
) -> dict[str, dict[str, float]]:
    """P@k and mAP in both directions: ``{"a->b": {"P@1": ..., "mAP": ...}, "b->a": {...}}``."""
    out = {}
    for (qn, qe, qlab), (gn, ge, glab) in (((names[0], emb_a, labels_a), (names[1], emb_b, labels_b)),
                                            ((names[1], emb_b, labels_b), (names[0], emb_a, labels_a))):
        row = {f"P@{k}": v for k, v in precision_at_k(qe, qlab, ge, glab, ks).items()}
        if with_map:
            row["mAP"] = mean_average_precision(qe, qlab, ge, glab)
        out[f"{qn}->{gn}"] = row
    return out


def selection_score(report: dict[str, dict[str, float]], k: int) -> float:
    """Mean P@k of the two directions: the reference's best-epoch criterion."""
    return float(np.mean([row[f"P@{k}"] for row in report.values()]))
