"""k-means per domain with faiss (spec section 3), on the GPU when faiss has one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Clustering:
    """k-means result of one domain: per-image cluster ids and L2-normalised prototypes, one entry
    per K value.

    Shape:
        assignments: list of (N,) long, one per K; prototypes: list of (K, d).
    """

    assignments: list[Tensor]
    prototypes: list[Tensor]

    def to(self, device: torch.device | str) -> "Clustering":
        """The same clustering with its tensors on ``device``."""
        return Clustering([a.to(device) for a in self.assignments], [p.to(device) for p in self.prototypes])


def kmeans(
    x: np.ndarray | torch.Tensor,
    k: int,
    *,
    seed: int = 0,
    niter: int = 20,
    nredo: int = 5,
    max_points_per_centroid: int = 2000,
    min_points_per_centroid: int = 2,
    use_gpu: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """faiss k-means: (assignments (N,) int64, centroids (K, d) float32, inertia).

    ``use_gpu=None`` uses faiss's GPU build when it reports a GPU.

    Raises:
        ValueError: ``k`` is below 1 or above the number of points.
    """
    import faiss

    x = _as_f32(x)
    n, d = x.shape
    if k < 1 or k > n:
        raise ValueError(f"cannot make {k} clusters from {n} points")
    if use_gpu is None:
        use_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    km = faiss.Kmeans(
        d, k, niter=niter, nredo=nredo, seed=seed, verbose=False, gpu=bool(use_gpu),
        max_points_per_centroid=max_points_per_centroid, min_points_per_centroid=min_points_per_centroid,
    )
    km.train(x)
    dist, assign = km.index.search(x, 1)
    return assign[:, 0].astype(np.int64), km.centroids.copy(), float(dist.sum())


def cluster_domain(embeddings: torch.Tensor, ks: Sequence[int], **kmeans_kwargs) -> Clustering:
    """Cluster one domain's embeddings for every K; seed = index of the K value (as the reference).

    Shape:
        embeddings: (N, d) -> Clustering with assignments (N,) and prototypes (K, d), unit rows,
        on the embeddings' device.
    """
    assignments, prototypes = [], []
    for i, k in enumerate(ks):
        assign, centroids, _ = kmeans(embeddings, int(k), seed=i, **kmeans_kwargs)
        assignments.append(torch.from_numpy(assign).to(embeddings.device))
        prototypes.append(F.normalize(torch.from_numpy(centroids), dim=1).to(embeddings.device))
    return Clustering(assignments, prototypes)


@dataclass(frozen=True)
class KMeansSettings:
    """The per-epoch k-means every method runs: the K values and faiss's settings (shared config
    keys ``num_clusters``, ``kmeans_iters``, ``kmeans_restarts``, ``kmeans_max_points_per_centroid``,
    ``kmeans_min_points_per_centroid``)."""

    ks: tuple[int, ...]
    niter: int = 20
    nredo: int = 5
    max_points_per_centroid: int = 2000
    min_points_per_centroid: int = 2

    def cluster(self, embeddings: torch.Tensor) -> Clustering:
        """:func:`cluster_domain` of one domain's embeddings with these settings."""
        return cluster_domain(embeddings, self.ks, niter=self.niter, nredo=self.nredo,
                              max_points_per_centroid=self.max_points_per_centroid,
                              min_points_per_centroid=self.min_points_per_centroid)


def _as_f32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
