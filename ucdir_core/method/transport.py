"""The transport plan of ProtoOT (``protoot-spec.md`` section 3): Sinkhorn-Knopp as in SwAV, with a
non-uniform marginal over the prototypes.

Li, Shi, Yu & Wang, "Unsupervised Cross-Domain Image Retrieval via Prototypical Optimal
Transport", AAAI 2024, https://arxiv.org/abs/2402.18411.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def transport_plan(similarity: Tensor, marginal: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    r"""Soft assignment of N samples to K prototypes whose prototype masses follow ``marginal``.

    With :math:`Q = \exp(S / \epsilon)^\top` (K x N) divided by its total, each of ``iterations``
    rounds divides every prototype row by its sum and multiplies it by :math:`\beta_k`, then
    divides every sample column by its sum and by N. The result, times N and transposed, has rows
    that sum to 1 (one soft assignment per sample), and column sums that approach
    :math:`N \beta` as the iterations go on: no prototype is left empty and none takes all.

    No gradient is computed (the plan is a target). The exponential is taken as released, without
    subtracting a maximum; the similarities it receives lie in [-1, 1].

    Shape:
        similarity: (N, K); marginal: (K,), non-negative, summing to 1 -> (N, K).

    Raises:
        ValueError: shapes that do not match, or a marginal that is negative or does not sum to 1.
    """
    if similarity.ndim != 2 or marginal.shape != (similarity.shape[1],):
        raise ValueError(f"similarity (N, K) and marginal (K,) must match, got {tuple(similarity.shape)} and "
                         f"{tuple(marginal.shape)}")
    if (marginal < 0).any() or abs(float(marginal.sum()) - 1.0) > 1e-4:
        raise ValueError("the marginal must be non-negative and sum to 1")
    n = similarity.shape[0]
    q = torch.exp(similarity.double() / epsilon).t()  # K x N
    q = q / q.sum()
    beta = marginal.double().view(-1, 1)
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) * beta  # every prototype row carries beta_k
        q = q / q.sum(dim=0, keepdim=True) / n  # every sample column carries 1 / N
    return (q * n).t().to(similarity.dtype)  # N x K, rows sum to 1


def plan_similarity(embeddings: Tensor, prototypes: Tensor, mode: str = "normalised") -> Tensor:
    """The similarities the plan is computed from: cosine similarities of every row of
    ``embeddings`` to every prototype, L2-normalised along each row (``mode="normalised"``, as
    released) or left as they are (``"cosine"``, the opt-in correction).

    Shape:
        embeddings: (N, d); prototypes: (K, d), unit rows -> (N, K).
    """
    sim = embeddings @ prototypes.t()
    return F.normalize(sim, dim=1) if mode == "normalised" else sim


def marginal_of(assignments: Tensor, k: int) -> Tensor:
    """The share of the rows in each of ``k`` clusters (the marginal beta, ``protoot-spec.md`` 2).

    Shape:
        assignments: (N,) long -> (k,) float, summing to 1.
    """
    return torch.bincount(assignments, minlength=k).to(torch.float32) / assignments.numel()
