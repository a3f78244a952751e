"""The four UCDIR losses (spec section 2) as pure functions; :mod:`ucdir_core.method.ucdir` combines them.

All inputs are L2-normalised embeddings. Every function returns a scalar tensor whose gradient
reaches ``q`` only: keys, memory banks and prototypes are detached inside.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-8


def instance_contrastive(q: Tensor, k: Tensor, bank: Tensor, ids: Tensor, temperature: float) -> Tensor:
    r"""Instance contrastive loss of one domain (spec 2.1).

    .. math::
        \mathcal{L}_{inst} = -\frac1n \sum_i \log
        \frac{\exp(q_i\cdot k_i/T)}{\exp(q_i\cdot k_i/T) + \sum_{j\neq t_i}\exp(q_i\cdot B_j/T)}

    The positive is the key ``k_i``; the negatives are every memory-bank slot except the image's
    own slot ``t_i = ids[i]``.

    Shape:
        q, k: (n, d); bank: (N, d); ids: (n,) long. Returns a scalar.
    """
    _check_ids(ids, bank.shape[0])
    bank = bank.detach()
    logits = q @ bank.t()  # n x N
    pos = (q * k.detach()).sum(dim=1, keepdim=True)  # n x 1
    logits = logits.scatter(1, ids.view(-1, 1), pos)  # own slot replaced by the positive
    return F.cross_entropy(logits / temperature, ids)


def cluster_contrastive(
    q: Tensor,
    k: Tensor,
    bank: Tensor,
    ids: Tensor,
    assignments: Tensor | Sequence[Tensor],
    prototypes: Tensor | Sequence[Tensor],
    temperature: float,
    threshold: float,
) -> Tensor:
    r"""Cluster-wise contrastive loss of one domain (spec 2.2).

    With :math:`s_{ij} = q_i\cdot B_j / T` over all N slots (own slot included),
    :math:`\log p_{ij} = s_{ij} - \operatorname{logsumexp}_j s_{ij}` and positives
    :math:`M_{ij} = [c(t_i) = c(j)]`:

    .. math::
        l_i = \frac{\sum_j M_{ij}\log p_{ij}}{\sum_j M_{ij} + 10^{-8}},\quad
        w_i = [\operatorname{softmax}_K(k_i P^\top / T)_{c(t_i)} > \text{threshold}],\quad
        \mathcal{L}_{cw} = -\frac{\sum_i w_i l_i}{\sum_i w_i + 10^{-8}}

    Given several clusterings (sequences of assignments and prototypes), the positive mask of the
    c-th is the product of the masks of clusterings 0..c and the losses are averaged, as the
    reference does.

    Shape:
        q, k: (n, d); bank: (N, d); ids: (n,) long; assignments: (N,) long;
        prototypes: (K, d). Returns a scalar.
    """
    _check_ids(ids, bank.shape[0])
    if isinstance(assignments, Tensor):
        assignments, prototypes = [assignments], [prototypes]  # type: ignore[list-item]
    if len(assignments) != len(prototypes) or not assignments:
        raise ValueError("assignments and prototypes must be non-empty and of equal length")
    bank, k = bank.detach(), k.detach()
    log_prob = F.log_softmax(q @ bank.t() / temperature, dim=1)  # n x N
    mask = torch.ones_like(log_prob)
    losses = []
    for assign, protos in zip(assignments, prototypes):
        if assign.shape[0] != bank.shape[0]:
            raise ValueError(f"assignments has {assign.shape[0]} entries, bank has {bank.shape[0]} slots")
        own = assign[ids]  # n
        mask = mask * (own.view(-1, 1) == assign.view(1, -1)).to(log_prob.dtype)  # n x N
        mean_log_prob_pos = (mask * log_prob).sum(1) / (mask.sum(1) + _EPS)  # n
        conf = F.softmax(k @ protos.detach().t() / temperature, dim=1)  # n x K
        keep = (conf.gather(1, own.view(-1, 1)).squeeze(1) > threshold).to(log_prob.dtype)  # n
        losses.append(-(keep * mean_log_prob_pos).sum() / (keep.sum() + _EPS))
    return torch.stack(losses).mean()


def self_entropy(q: Tensor, prototypes: Tensor, temperature: float) -> Tensor:
    r"""Mean entropy of the soft assignment of ``q`` to ``prototypes`` (spec 2.3, one of four terms).

    .. math:: H = \frac1n\sum_i -\sum_k \sigma(z_i)_k \log\sigma(z_i)_k,\quad z = qP^\top/\tau_{se}

    Lies in :math:`[0, \log K]`. The trainer averages it over the four (feature domain,
    prototype domain) combinations.

    Shape:
        q: (n, d); prototypes: (K, d). Returns a scalar.
    """
    z = q @ prototypes.detach().t() / temperature  # n x K
    log_p = F.log_softmax(z, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def distance_of_distance(q: Tensor, prototypes_a: Tensor, prototypes_b: Tensor, temperature: float = 0.01) -> Tensor:
    r"""Distance-of-distance loss of one feature set (spec 2.4).

    With soft assignments :math:`a_i = \sigma(q_i P_A^\top/0.01)`, :math:`b_i = \sigma(q_i P_B^\top/0.01)`
    and in-batch distances :math:`D^A_{ij} = 1-\cos(a_i,a_j)`, :math:`D^B_{ij} = 1-\cos(b_i,b_j)`:

    .. math:: \mathcal{L}_{dod} = \frac1n \sum_i \sum_j (D^A_{ij} - D^B_{ij})^2

    It compares only the geometry of the two assignment spaces, so it is invariant to the order
    of either prototype set and needs no matching between A's and B's clusters.

    Shape:
        q: (n, d); prototypes_a: (K_A, d); prototypes_b: (K_B, d). Returns a scalar.
    """
    a = F.normalize(F.softmax(q @ prototypes_a.detach().t() / temperature, dim=1), dim=1)  # n x K_A
    b = F.normalize(F.softmax(q @ prototypes_b.detach().t() / temperature, dim=1), dim=1)  # n x K_B
    dist_a = 1.0 - a @ a.t()  # n x n
    dist_b = 1.0 - b @ b.t()  # n x n
    return ((dist_a - dist_b) ** 2).sum(dim=1).mean()


def _check_ids(ids: Tensor, n_slots: int) -> None:
    if ids.dtype != torch.long:
        raise TypeError(f"ids must be a long tensor, got {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_slots):
        raise IndexError(f"ids must lie in [0, {n_slots}), got range [{int(ids.min())}, {int(ids.max())}]")


def aligned_target(q: Tensor, targets: Tensor, ids: Tensor) -> Tensor:
    r"""Aligned-target term of one domain (beyond the reference; the trial "aligned by what?"):
    :math:`\mathcal{L} = \frac{1}{n}\sum_i (1 - q_i \cdot t_{\mathrm{id}_i})`, the cosine distance of
    each query to its own image's target, the training embedding after a label-free alignment
    stage (no gradient to the targets).

    Shape:
        q: (n, d) unit rows; targets: (N, d) unit rows; ids: (n,) long. Returns a scalar.
    """
    _check_ids(ids, targets.shape[0])
    return (1.0 - (q * targets.detach()[ids]).sum(1)).mean()
