"""Cross-domain retrieval metrics (spec section 4), in bounded memory and without a full sort.

The gallery is ordered by label once, so the items relevant to a query of class c are one
contiguous slice of columns. Queries are taken class by class, in blocks; each block's
similarities to the whole gallery (``block x N_gallery`` floats, the peak memory whatever the
number of queries) give P@k through a top-k, and mAP through exact rank counting: only the
relevant scores are sorted, and every irrelevant score is placed among them by binary search, which
gives each relevant item's rank without sorting the row. Similarity is cosine (rows are
L2-normalised here). Everything runs on the device of the inputs (CPU for numpy arrays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

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


def _class_counts(ql: Tensor, gl: Tensor) -> Tensor:
    """Gallery items per label, for every label of either side. Shape: (n_labels,)."""
    if int(min(ql.min(), gl.min())) < 0:
        raise ValueError("labels must be non-negative integers")
    return torch.bincount(gl, minlength=int(max(ql.max(), gl.max())) + 1)


def _average_precision_rows(sims: Tensor, start: int, end: int) -> Tensor:
    r"""Exact AP of each row when columns ``start:end`` are the relevant ones. Shape: (B, m) -> (B,).

    For the relevant scores sorted ascending, :math:`s_{(0)} \le \dots \le s_{(R-1)}`, the item at
    ascending index a is the j-th relevant (j = R - a) and its rank is j plus the irrelevant
    items scoring at least as high. ``searchsorted`` gives, for each irrelevant score, how many
    relevant scores it reaches; a histogram of that and a suffix sum give the counts. Ties between
    a relevant and an irrelevant score rank the irrelevant one first (the pessimistic order).
    """
    n_rel = end - start
    rel_sorted = sims[:, start:end].sort(dim=1).values  # B x R ascending
    hist = torch.zeros(sims.shape[0], n_rel + 1, dtype=torch.float32, device=sims.device)
    for part in (sims[:, :start], sims[:, end:]):
        if part.shape[1]:
            reach = torch.searchsorted(rel_sorted, part.contiguous(), right=True)  # B x n, in [0, R]
            hist.scatter_add_(1, reach, torch.ones(reach.shape, dtype=hist.dtype, device=hist.device))
    above = hist.flip(1).cumsum(1).flip(1)[:, 1:].double()  # B x R: irrelevant above relevant #a
    j = torch.arange(n_rel, 0, -1, device=sims.device, dtype=torch.float64)  # R .. 1
    return (j / (j + above)).sum(dim=1) / n_rel


def retrieval_metrics(
    query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
    ks: Iterable[int] = (1, 5, 15), with_map: bool = True, block_size: int = 256,
) -> dict[str, float]:
    r"""P@k for every k in ``ks`` and (``with_map``) mAP, in percent, in one pass over the gallery.

    P@k is pooled and capped, as the reference computes it: for query i with label :math:`y_i`,
    :math:`r_i` = gallery items labelled :math:`y_i` and :math:`k_i = \min(k, r_i)`,

    .. math:: P@k = 100\,\frac{\sum_i \#\{y_i \text{ among the top } k_i\}}{\sum_i k_i}

    (not a mean of per-query precisions; not the textbook P@k when :math:`r_i < k`). mAP is over
    the whole ranking, :math:`AP_i = \frac{1}{r_i}\sum_{j=1}^{r_i} j / \mathrm{rank}_j`, exact, by
    rank counting (:func:`_average_precision_rows`). A query whose class is absent from the
    gallery counts nowhere; NaN when no query has a relevant item.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    Returns:
        ``{"P@1": ..., "P@5": ..., "mAP": ...}``.
    """
    ks = sorted({int(k) for k in ks})
    if (not ks and not with_map) or (ks and ks[0] < 1):
        raise ValueError("ks must be positive integers (and may be empty only with with_map)")
    hits, denom = dict.fromkeys(ks, 0), dict.fromkeys(ks, 0)
    ap_sum, n_valid = 0.0, 0
    for block in _class_blocks(query, query_labels, gallery, gallery_labels, ks, block_size):
        for k in ks:
            k_c = min(k, block.n_relevant)  # <= kmax: at most ks[-1] and at most m
            hits[k] += int(block.found[:, k_c - 1].sum())
            denom[k] += k_c * block.rows.numel()
        if with_map:
            ap_sum += float(_average_precision_rows(block.sims, block.start, block.end).sum())
            n_valid += block.rows.numel()
    out = {f"P@{k}": (100.0 * hits[k] / denom[k] if denom[k] else float("nan")) for k in ks}
    if with_map:
        out["mAP"] = 100.0 * ap_sum / n_valid if n_valid else float("nan")
    return out


@dataclass
class _Block:
    rows: Tensor  # (B,) indices of the block's queries
    sims: Tensor  # (B, m) similarities to the label-sorted gallery
    found: Tensor | None  # (B, kmax) relevant items among the top j + 1, or None without ks
    start: int  # the relevant gallery items are columns start:end
    end: int

    @property
    def n_relevant(self) -> int:
        return self.end - self.start


def _class_blocks(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
                  ks: Sequence[int], block_size: int) -> Iterator[_Block]:
    """Blocks of queries of one class each (classes absent from the gallery left out), with their
    similarities to the label-sorted gallery and the running count of relevant items in their top
    ``max(ks)``: the one pass that every metric here reads."""
    if block_size < 1:
        raise ValueError("block_size must be positive")
    q, ql, g, gl = _prepare(query, query_labels, gallery, gallery_labels)
    counts = _class_counts(ql, gl)
    offsets = [0, *torch.cumsum(counts, 0).tolist()]
    g_sorted = g[torch.argsort(gl, stable=True)]  # relevant items of class c: offsets[c]:offsets[c + 1]
    kmax = min(max(ks), g.shape[0]) if ks else 0
    for c in torch.unique(ql).tolist():
        start, end = offsets[c], offsets[c + 1]
        if end == start:
            continue  # class absent from the gallery: this query counts nowhere
        rows = (ql == c).nonzero().view(-1)
        for b in range(0, rows.numel(), block_size):
            sims = q[rows[b:b + block_size]] @ g_sorted.t()  # B x m
            found = None
            if ks:
                top = sims.topk(kmax, dim=1).indices
                found = ((top >= start) & (top < end)).long().cumsum(dim=1)  # B x kmax
            yield _Block(rows[b:b + block_size], sims, found, start, end)


def per_query_precision(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
                        k: int = 10, block_size: int = 256) -> np.ndarray:
    r"""Per-query precision at ``k`` in percent: the per-query term of the capped P@k of
    :func:`retrieval_metrics`, from the same pass.

    For query i with :math:`r_i` relevant gallery items and :math:`k_i = \min(k, r_i)`: the share
    of its top :math:`k_i` results that have its label; NaN when its class is absent from the
    gallery. Pooling these over queries with weights :math:`k_i` gives P@k.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,) -> (n,).
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    out = np.full(len(query_labels), np.nan)
    for block in _class_blocks(query, query_labels, gallery, gallery_labels, (k,), block_size):
        k_c = min(k, block.n_relevant)
        out[block.rows.cpu().numpy()] = (100.0 * block.found[:, k_c - 1].double() / k_c).cpu().numpy()
    return out


def precision_at_k(
    query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
    ks: Iterable[int] = (1, 5, 15), block_size: int = 256,
) -> dict[int, float]:
    """Pooled, capped precision at k, in percent: ``{k: P@k}`` (see :func:`retrieval_metrics`).

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    """
    res = retrieval_metrics(query, query_labels, gallery, gallery_labels, ks, with_map=False, block_size=block_size)
    return {int(key[2:]): v for key, v in res.items()}


def mean_average_precision(
    query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
    block_size: int = 256,
) -> float:
    r"""Mean average precision over the whole ranking, in percent (see :func:`retrieval_metrics`).

    Queries whose class is absent from the gallery are left out of the mean.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    """
    return retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=(), block_size=block_size)["mAP"]


def retrieval_report(
    emb_a: ArrayLike, labels_a: ArrayLike, emb_b: ArrayLike, labels_b: ArrayLike,
    ks: Sequence[int], names: tuple[str, str] = ("a", "b"), with_map: bool = True,
) -> dict[str, dict[str, float]]:
    """P@k and mAP in both directions: ``{"a->b": {"P@1": ..., "mAP": ...}, "b->a": {...}}``."""
    out = {}
    for (qn, qe, qlab), (gn, ge, glab) in (((names[0], emb_a, labels_a), (names[1], emb_b, labels_b)),
                                            ((names[1], emb_b, labels_b), (names[0], emb_a, labels_a))):
        out[f"{qn}->{gn}"] = retrieval_metrics(qe, qlab, ge, glab, ks, with_map=with_map)
    return out


def selection_score(report: dict[str, dict[str, float]], k: int) -> float:
    """Mean P@k of the two directions: the reference's best-epoch criterion."""
    return float(np.mean([row[f"P@{k}"] for row in report.values()]))
