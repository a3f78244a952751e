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


def cluster_jointly(embeddings: tuple[torch.Tensor, torch.Tensor], clustered: tuple[torch.Tensor, torch.Tensor],
                    settings: KMeansSettings) -> tuple[Clustering, Clustering]:
    """k-means of both domains' rows together, for every K: the clusters are found on ``clustered``
    (the same rows, e.g. after a label-free alignment) and each cluster's prototype is the unit mean
    of its rows of ``embeddings`` (the encoder's space, where the losses compare), shared by both
    domains (a cluster left empty keeps its k-means centroid). Seed = index of the K value.

    Shape:
        embeddings, clustered: (N_A, d) and (N_B, d') each -> one Clustering per domain, assignments
        (N_d,), prototypes (K, d), the same prototypes in both.
    """
    n_a = embeddings[0].shape[0]
    raw = torch.cat([e.float() for e in embeddings])
    pooled = torch.cat([c.float() for c in clustered])
    out_a, out_b = Clustering([], []), Clustering([], [])
    for i, k in enumerate(settings.ks):
        assign, centroids, _ = kmeans(pooled, int(k), seed=i, niter=settings.niter, nredo=settings.nredo,
                                      max_points_per_centroid=settings.max_points_per_centroid,
                                      min_points_per_centroid=settings.min_points_per_centroid)
        assign_t = torch.from_numpy(assign).to(raw.device)
        sums = torch.zeros(int(k), raw.shape[1], device=raw.device).index_add_(0, assign_t, raw)
        counts = torch.bincount(assign_t, minlength=int(k))
        if (counts == 0).any() and centroids.shape[1] == raw.shape[1]:
            sums[counts == 0] = torch.from_numpy(centroids).to(raw.device)[counts == 0]
        protos = F.normalize(sums, dim=1)
        out_a.assignments.append(assign_t[:n_a])
        out_b.assignments.append(assign_t[n_a:])
        out_a.prototypes.append(protos)
        out_b.prototypes.append(protos)
    return out_a, out_b


def joint_balance(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    r"""How evenly each joint cluster holds both domains: with :math:`f_d(c)` the share of domain
    :math:`d`'s rows in cluster :math:`c`, :math:`\min(f_A, f_B) / \max(f_A, f_B)` (1: in proportion
    to the domains' sizes, 0: one domain only or empty).

    Shape:
        a: (N_A,) long, b: (N_B,) long joint assignments in [0, k) -> (k,) float.
    """
    fa = torch.bincount(a, minlength=k).float() / max(a.numel(), 1)
    fb = torch.bincount(b, minlength=k).float() / max(b.numel(), 1)
    return torch.minimum(fa, fb) / torch.maximum(fa, fb).clamp_min(1e-12)


def _as_f32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
