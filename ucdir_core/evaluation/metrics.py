"""Cross-domain retrieval metrics (spec section 4), in bounded memory.

The gallery is ordered by label once, so the items relevant to a query of class c are one
contiguous slice of columns. Queries are taken class by class, in blocks; each block's
similarities to the whole gallery (``block x N_gallery`` floats, the peak memory whatever the
number of queries) give P@k alone through a top-k, and mAP through one sort of each row: every score
is turned into an integer key that orders like the score and carries the item's relevance in its
lowest bit, so that the sorted keys give each relevant item's rank directly, ties included, and
the top k of P@k as well. Similarity is cosine (rows are L2-normalised here). Everything runs on
the device of the inputs (CPU for numpy arrays; there the sort is numpy's, over the rows in
torch's number of threads).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = np.ndarray | Tensor


def _prepare(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike):
    q = torch.as_tensor(query).detach()
    g = torch.as_tensor(gallery, device=q.device).detach()
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


_SORT_CHUNK = 1 << 19  # scores per task of the CPU sort (rows of one block, a few MiB)
_SORT_GROUP = 1 << 24  # with mAP, blocks whose similarities are computed, then sorted, together (64 MiB)


def _rank_keys(x: ArrayLike, start: int, end: int, wide: bool) -> ArrayLike:
    """Integer sort keys of the scores ``x`` (float32; a new array): ascending keys are descending
    scores, and the lowest bit is 1 for the relevant columns ``start:end``, 0 for the others.
    Shape: (B, m) -> (B, m), int32 (int64 when ``wide``).

    The float32 bits of a score, magnitude bits flipped when negative, order like the score (``-0.0``
    is first made ``+0.0``, its equal); times -2 they order the other way with a free lowest bit.
    Below 1.5 in magnitude (every cosine) that stays in an int32; ``wide`` (some score of 1.5 or
    more, inf or NaN) makes it an int64. Equal scores give keys equal but for that bit, so an
    irrelevant item comes before the relevant ones it ties with (the pessimistic order). Works on
    numpy arrays and on tensors alike.
    """
    x = x + 0.0  # -0.0 -> +0.0
    bits = x.view(np.int32 if isinstance(x, np.ndarray) else torch.int32)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # increasing with the score, |bits| < 2**30 - 2**22 below 1.5
    key = (bits.astype(np.int64) if isinstance(bits, np.ndarray) else bits.long()) if wide else bits
    key *= -2
    key[:, start:end] |= 1
    return key


def _ranked_rows_numpy(x: np.ndarray, start: int, end: int, kcs: Sequence[int],
                       wide: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_ranked_rows` of a float32 array, with numpy's sort."""
    (n, m), n_rel = x.shape, end - start
    if wide is None:
        wide = not (x.min() > -1.5 and x.max() < 1.5)  # NaN too
    key = _rank_keys(x, start, end, wide)
    key.sort(axis=1)
    rank = np.flatnonzero((key & 1) == 1).reshape(n, n_rel)  # row r, position p (best first) -> r m + p
    rank -= (np.arange(n) * m - 1)[:, None]  # p + 1: the ranks of the relevant items, best first
    j = np.arange(1, n_rel + 1, dtype=np.float64)
    ap = (j / rank).sum(axis=1) / n_rel
    hits = np.stack([(rank[:, :k] <= k).sum(axis=1) for k in kcs], axis=1) if kcs else np.zeros((n, 0), np.int64)
    split = np.zeros(n, dtype=bool)
    for k in kcs:
        if k < m:
            split |= (key[:, k - 1] >> 1) == (key[:, k] >> 1)
    return ap, hits, split


def _ranked_rows_torch(x: Tensor, start: int, end: int, kcs: Sequence[int],
                       wide: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_ranked_rows` of a float32 tensor, with ``torch.sort`` (as :func:`_ranked_rows_numpy`)."""
    (n, m), n_rel = x.shape, end - start
    if wide is None:
        wide = not bool((x.abs() < 1.5).all())  # NaN too
    key = _rank_keys(x, start, end, wide).sort(dim=1).values
    rank = (((key & 1) == 1).nonzero()[:, 1] + 1).view(n, n_rel)
    j = torch.arange(1, n_rel + 1, device=x.device, dtype=torch.float64)
    ap = (j / rank).sum(dim=1) / n_rel
    hits = torch.stack([(rank[:, :k] <= k).sum(dim=1) for k in kcs], dim=1) if kcs else rank[:, :0]
    split = torch.zeros(n, dtype=torch.bool, device=x.device)
    for k in kcs:
        if k < m:
            split |= (key[:, k - 1] >> 1) == (key[:, k] >> 1)
    return ap, hits, split


def _ranked_rows(sims: Tensor, start: int, end: int, kcs: Sequence[int] = (), pool: ThreadPoolExecutor | None = None,
                 threads: int = 1, wide: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
    r"""Average precision of each row of scores when columns ``start:end`` are the relevant ones
    (spec section 4: :math:`AP = \frac{1}{R}\sum_{j=1}^{R} j / \mathrm{rank}_j`), exact, and the
    relevant items among the top k of each row for each k in ``kcs`` (each at most R), from one sort.

    Ties between a relevant and an irrelevant score rank the irrelevant one first (the pessimistic
    order; ties among relevant items change nothing). Each row is sorted once as integer keys
    (:func:`_rank_keys`, best first); the j-th key marked relevant, at position :math:`p`, gives
    :math:`\mathrm{rank}_j = p + 1`. The top k are a set of their own unless the k-th and the
    (k+1)-th scores are equal: ``split`` marks the rows where that happens for some k, whose top k
    a top-k of the row must choose as :func:`_class_blocks` does. On the CPU the rows are sorted
    by numpy (several times faster than ``torch.sort`` there), in parts of at most about
    ``_SORT_CHUNK`` scores shared among the ``threads`` threads of ``pool``; elsewhere by
    ``torch.sort``. ``wide`` (int64 keys) is found from the scores when not given.

    Shape:
        sims: (B, m), float32, with ``0 <= start < end <= m`` -> ap (B,) float64, hits (B, len(kcs))
        int64, split (B,) bool.
    """
    return _ranked_blocks([(sims, start, end, kcs)], pool, threads, wide)[0]


def _ranked_blocks(blocks: Sequence[tuple[Tensor, int, int, Sequence[int]]], pool: ThreadPoolExecutor | None = None,
                   threads: int = 1, wide: bool | None = None) -> list[tuple[Tensor, Tensor, Tensor]]:
    """:func:`_ranked_rows` of several blocks ``(sims, start, end, kcs)`` at once: on the CPU their
    parts all go to the pool together, at least ``threads`` parts in all."""
    if not blocks or blocks[0][0].device.type != "cpu":
        return [_ranked_rows_torch(sims, start, end, kcs, wide) for sims, start, end, kcs in blocks]
    total = sum(sims.numel() for sims, *_ in blocks)
    tasks, owner = [], []
    for i, (sims, start, end, kcs) in enumerate(blocks):
        n_parts = max(-(-sims.numel() // _SORT_CHUNK), -(-threads * sims.numel() // total))
        for part in np.array_split(sims.numpy(), min(n_parts, sims.shape[0])):  # views of consecutive rows
            tasks.append((part, start, end, kcs, wide))
            owner.append(i)
    done = list((map if pool is None else pool.map)(lambda task: _ranked_rows_numpy(*task), tasks))
    return [tuple(torch.from_numpy(np.concatenate([d[j] for d, o in zip(done, owner) if o == i])) for j in range(3))
            for i in range(len(blocks))]


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
    one sort of each similarity row (:func:`_ranked_rows`; a relevant item tied with irrelevant ones
    ranks after them), which then gives P@k too (the same top k as a top-k would choose). ``ks=()``
    with ``with_map`` gives mAP alone. A query whose class is absent from the gallery counts nowhere;
    NaN when no query has a relevant item.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,).
    Returns:
        ``{"P@1": ..., "P@5": ..., "mAP": ...}``.
    Raises:
        ValueError: a k below 1, no k without ``with_map``, a block size below 1, shapes that do not
            fit, an empty side, or a negative label.
    """
    ks = sorted({int(k) for k in ks})
    if (not ks and not with_map) or (ks and ks[0] < 1):
        raise ValueError("ks must be positive integers (and may be empty only with with_map)")
    hits, denom = dict.fromkeys(ks, 0), dict.fromkeys(ks, 0)
    ap_sum, n_valid = 0.0, 0
    for block in _class_blocks(query, query_labels, gallery, gallery_labels, ks, block_size, with_map):
        for k in ks:
            k_c = min(k, block.n_relevant)  # at most ks[-1] and at most m
            hits[k] += int(block.hits[k_c].sum())
            denom[k] += k_c * block.rows.numel()
        if with_map:
            ap_sum += float(block.ap.sum())
            n_valid += block.rows.numel()
    out = {f"P@{k}": (100.0 * hits[k] / denom[k] if denom[k] else float("nan")) for k in ks}
    if with_map:
        out["mAP"] = 100.0 * ap_sum / n_valid if n_valid else float("nan")
    return out


@dataclass
class _Block:
    rows: Tensor  # (B,) indices of the block's queries
    hits: dict[int, Tensor]  # k_c -> (B,) relevant items among the top k_c, for k_c = min(k, R), k in ks
    ap: Tensor | None  # (B,) average precision of each query (float64), or None without mAP
    start: int  # the relevant gallery items are columns start:end
    end: int

    @property
    def n_relevant(self) -> int:
        return self.end - self.start


def _class_blocks(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
                  ks: Sequence[int], block_size: int, with_map: bool = False) -> Iterator[_Block]:
    """Blocks of queries of one class each (classes absent from the gallery left out), with the
    relevant items in their top ``min(k, R)`` for each k in ``ks`` and (``with_map``) their average
    precisions, from their similarities to the label-sorted gallery: the one pass that every metric
    here reads. Without mAP the top k come from a top-k of each row; with it, from the sort that mAP
    needs (:func:`_ranked_rows`), and from a top-k only in the rows where the k-th score ties the
    next one, so that the same items are counted either way."""
    if block_size < 1:
        raise ValueError("block_size must be positive")
    q, ql, g, gl = _prepare(query, query_labels, gallery, gallery_labels)
    counts = _class_counts(ql, gl)
    offsets = [0, *torch.cumsum(counts, 0).tolist()]
    g_sorted = g[torch.argsort(gl, stable=True)]  # relevant items of class c: offsets[c]:offsets[c + 1]
    kmax = min(max(ks), g.shape[0]) if ks else 0
    threads = torch.get_num_threads() if with_map and q.device.type == "cpu" else 1
    # |cosine| < 1.5, from Cauchy-Schwarz with the product's rounding, keeps the rank keys in int32
    wide = not float(q.norm(dim=1).max() * g.norm(dim=1).max()) * (1 + q.shape[1] * 2.0 ** -23) < 1.5

    def top_k_hits(sims: Tensor, start: int, end: int) -> Tensor:  # (B, kmax): relevant among the top j + 1
        top = sims.topk(kmax, dim=1).indices
        return ((top >= start) & (top < end)).long().cumsum(dim=1)

    def blocks() -> Iterator[tuple[Tensor, int, int, list[int]]]:  # (rows, start, end, kcs)
        for c in torch.unique(ql).tolist():
            start, end = offsets[c], offsets[c + 1]
            if end == start:
                continue  # class absent from the gallery: this query counts nowhere
            rows = (ql == c).nonzero().view(-1)
            kcs = sorted({min(k, end - start) for k in ks})
            for b in range(0, rows.numel(), block_size):
                yield rows[b:b + block_size], start, end, kcs

    if not with_map:
        for rows, start, end, kcs in blocks():
            found = top_k_hits(q[rows] @ g_sorted.t(), start, end) if kcs else None  # B x m similarities
            yield _Block(rows, {k: found[:, k - 1] for k in kcs}, None, start, end)
        return
    # With mAP, the similarities of consecutive blocks, up to _SORT_GROUP scores, are computed first and
    # then sorted together: torch's threads, idle once a product is done, hold a core for a while
    # (OpenMP's spin-wait) that the sort would otherwise wait for, once per group instead of per block.
    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
        group, size = [], 0
        for item in [*blocks(), None]:
            if group and (item is None or size + item[0].numel() * g.shape[0] > _SORT_GROUP):
                sims = [q[rows] @ g_sorted.t() for rows, *_ in group]  # B x m each
                ranked = _ranked_blocks([(s, *rest) for s, (_, *rest) in zip(sims, group)], pool, threads, wide)
                for (rows, start, end, kcs), s, (ap, hits, split) in zip(group, sims, ranked):
                    # a top-k where the sort leaves the top k open (or where scores may be NaN)
                    tied = (torch.ones_like(split) if wide else split).nonzero().view(-1)
                    if kcs and tied.numel():
                        top = top_k_hits(s[tied.to(s.device)], start, end)[:, [k - 1 for k in kcs]]
                        hits[tied] = top.to(hits.device)
                    yield _Block(rows, dict(zip(kcs, hits.unbind(1))), ap, start, end)
                del sims, ranked  # one group's similarities alive at a time
                group, size = [], 0
            if item is not None:
                group.append(item)
                size += item[0].numel() * g.shape[0]


def per_query_precision(query: ArrayLike, query_labels: ArrayLike, gallery: ArrayLike, gallery_labels: ArrayLike,
                        k: int = 10, block_size: int = 256) -> np.ndarray:
    r"""Per-query precision at ``k`` in percent: the per-query term of the capped P@k of
    :func:`retrieval_metrics`, from the same pass.

    For query i with :math:`r_i` relevant gallery items and :math:`k_i = \min(k, r_i)`: the share
    of its top :math:`k_i` results that have its label; NaN when its class is absent from the
    gallery. Pooling these over queries with weights :math:`k_i` gives P@k.

    Shape:
        query: (n, d); query_labels: (n,); gallery: (m, d); gallery_labels: (m,) -> (n,).
    Raises:
        ValueError: a k below 1, or inputs that :func:`retrieval_metrics` refuses.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    out = np.full(len(query_labels), np.nan)
    for block in _class_blocks(query, query_labels, gallery, gallery_labels, (k,), block_size):
        k_c = min(k, block.n_relevant)
        out[block.rows.cpu().numpy()] = (100.0 * block.hits[k_c].double() / k_c).cpu().numpy()
    return out


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
