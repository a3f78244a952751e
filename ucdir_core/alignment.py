"""How well two domains mix and how well classes separate in an embedding."""

from __future__ import annotations

import numpy as np


def _knn(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest neighbours (cosine) of every row, itself excluded. Shape: (N, k)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, k + 1)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for i, row in enumerate(idx):
        row = row[row != i][:k]
        out[i] = row
    return out


def domain_mixing(emb_a: np.ndarray, emb_b: np.ndarray, k: int = 10) -> float:
    """Fraction of each image's k nearest neighbours (in A and B together) from the other domain,
    divided by the fraction expected if domains were perfectly mixed; averaged over both domains
    with equal weight. 0 = domains fully apart, about 1 = indistinguishable.
    """
    x = np.concatenate([emb_a, emb_b])
    dom = np.r_[np.zeros(len(emb_a), int), np.ones(len(emb_b), int)]
    nn = _knn(x, k)
    other = (dom[nn] != dom[:, None]).mean(axis=1)
    n = len(x) - 1
    expected = np.where(dom == 0, len(emb_b) / n, len(emb_a) / n)
    ratio = other / expected
    return float((ratio[dom == 0].mean() + ratio[dom == 1].mean()) / 2)


def class_separation(emb_a: np.ndarray, labels_a: np.ndarray, emb_b: np.ndarray, labels_b: np.ndarray,
                     k: int = 10) -> float:
    """k-NN class agreement in percent: share of each image's k nearest neighbours (both domains
    together) that have its class."""
    x = np.concatenate([emb_a, emb_b])
    y = np.r_[labels_a, labels_b]
    nn = _knn(x, k)
    return float(100 * (y[nn] == y[:, None]).mean())


def umap_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """UMAP to 2-D with cosine distance. Shape: (N, d) -> (N, 2)."""
    import umap

    return umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), metric="cosine", random_state=seed,
                     n_jobs=1).fit_transform(x)
