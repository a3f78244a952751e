"""ProtoOT's two losses (``protoot-spec.md`` sections 4 and 5) as pure functions.

Queries carry the gradient; keys, banks and prototypes are detached inside, and the transport
plans are computed without gradient (:mod:`ucdir_core.method.transport`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ucdir_core.method.transport import plan_similarity, transport_plan


def _contrast(positive: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of ``[positive, negatives] / T`` with the positive as target.

    Shape:
        positive: (n,); negatives: (n, m) -> scalar.
    """
    logits = torch.cat([positive.view(-1, 1), negatives], dim=1) / temperature
    return F.cross_entropy(logits, logits.new_zeros(logits.shape[0], dtype=torch.long))


def _others(scores: Tensor, index: Tensor) -> Tensor:
    """Every column of ``scores`` except column ``index[i]`` of row i. Shape: (n, K) -> (n, K - 1)."""
    keep = torch.ones_like(scores, dtype=torch.bool).scatter(1, index.view(-1, 1), False)
    return scores[keep].view(scores.shape[0], scores.shape[1] - 1)


def nearest_neighbours(k: Tensor, bank: Tensor, ids: Tensor) -> Tensor:
    """For each key, the most similar bank slot other than its own (spec 4.1). The reference
    L2-normalises each row of similarities first, which does not change a row's argmax.

    Shape:
        k: (n, d); bank: (N, d); ids: (n,) long -> (n,) long.
    """
    sim = k.detach() @ bank.detach().t()  # n x N
    sim = sim.scatter(1, ids.view(-1, 1), float("-inf"))  # own slot excluded
    return sim.argmax(dim=1)


def in_domain_loss(q: Tensor, k: Tensor, bank: Tensor, ids: Tensor, prototypes: Tensor, plan: Tensor,
                   temperature: float = 0.2, neighbour_weight: float = 0.5, prototype_weight: float = 0.1) -> Tensor:
    r"""In-domain loss of one domain (spec 4.1-4.4).

    Image i's prototype is :math:`m_i = \arg\max_k Q[t_i, k]` (``plan`` over the whole bank). Its
    query is contrasted three times against the other K - 1 prototypes, with three positives:

    .. math::
        \mathcal{L} = \mathrm{CE}(q_i\cdot k_i) + w_{nn}\,\mathrm{CE}(q_i\cdot B_{nn_i})
                      + w_{p}\,\mathrm{CE}(q_i\cdot P_{m_i}),\quad
        \mathrm{CE}(s) = -\log\frac{e^{s/T}}{e^{s/T} + \sum_{j\neq m_i} e^{q_i\cdot P_j/T}}

    where :math:`nn_i` is the key's nearest other bank slot (:func:`nearest_neighbours`). There
    are no bank negatives.

    Shape:
        q, k: (n, d); bank: (N, d); ids: (n,) long; prototypes: (K, d); plan: (N, K). Returns a scalar.
    """
    bank, prototypes, k = bank.detach(), prototypes.detach(), k.detach()
    m = plan[ids].argmax(dim=1)  # n
    scores = q @ prototypes.t()  # n x K
    negatives = _others(scores, m)  # n x (K - 1)
    nn = nearest_neighbours(k, bank, ids)
    loss = _contrast((q * k).sum(1), negatives, temperature)
    loss = loss + neighbour_weight * _contrast((q * bank[nn]).sum(1), negatives, temperature)
    return loss + prototype_weight * _contrast(scores.gather(1, m.view(-1, 1)).squeeze(1), negatives, temperature)


def cross_domain_loss(q: Tensor, ids: Tensor, other_prototypes: Tensor, plan: Tensor, temperature: float = 0.2,
                      negatives: str = "normalised", own_prototypes: Tensor | None = None) -> Tensor:
    r"""Cross-domain loss of one domain d onto the other domain's prototypes (spec 5).

    ``plan`` is domain d's bank transported onto the other domain's prototypes (with d's own
    marginal, as released); image i's cross prototype is :math:`c_i = \arg\max_k C[t_i, k]`. The
    positive is :math:`q_i\cdot P^e_{c_i}`; the negatives are the other K - 1 entries of
    :math:`q_i P_e^\top`, L2-normalised along the row first (``negatives="normalised"``, as
    released: the positive is not) or as they are (``"cosine"``, the opt-in correction).

    With ``"cosine"`` every logit is a dot product with one of the other domain's prototypes, so
    adding one vector v to all of them shifts every logit by :math:`q_i\cdot v` and leaves the
    loss unchanged: its gradient in :math:`q_i` lies in the span of differences of those
    prototypes and has no component that moves a domain towards the other as a whole. The
    opt-in ``"joint"`` (beyond the spec) adds the K prototypes of domain d itself
    (``own_prototypes``) to the negatives: a query must then be nearer to its cross prototype than
    to its own domain's prototypes, which pulls on the offset between the domains.

    Shape:
        q: (n, d); ids: (n,) long; other_prototypes: (K, d); plan: (N_d, K);
        own_prototypes: (K', d), required by ``"joint"``. Returns a scalar.

    Raises:
        ValueError: ``negatives="joint"`` without ``own_prototypes``.
    """
    c = plan[ids].argmax(dim=1)  # n
    scores = q @ other_prototypes.detach().t()  # n x K
    positive = scores.gather(1, c.view(-1, 1)).squeeze(1)
    rows = F.normalize(scores, dim=1) if negatives == "normalised" else scores
    rest = _others(rows, c)
    if negatives == "joint":
        if own_prototypes is None:
            raise ValueError('cross_domain_negatives="joint" needs the own domain\'s prototypes')
        rest = torch.cat([rest, q @ own_prototypes.detach().t()], dim=1)  # n x (2K - 1)
    return _contrast(positive, rest, temperature)


def cross_domain_neighbour_loss(q: Tensor, k: Tensor, other_bank: Tensor, own_prototypes: Tensor,
                                other_prototypes: Tensor, temperature: float = 0.2) -> Tensor:
    r"""A cross-domain neighbour positive (beyond the spec, opt-in ``cross_domain_neighbour_weight``):
    each query of domain d is pulled to its key's nearest slot in the other domain's bank,
    :math:`n_i = \arg\max_j k_i\cdot B^e_j`, against the prototypes of both domains:

    .. math::
        \mathcal{L} = -\log\frac{e^{q_i\cdot B^e_{n_i}/T}}{e^{q_i\cdot B^e_{n_i}/T}
                      + \sum_j e^{q_i\cdot P^d_j/T} + \sum_j e^{q_i\cdot P^e_j/T}}

    With the own domain's prototypes among the negatives it acts image by image on the gap
    between the domains (what domain mixing measures), where the prototype losses act on
    clusters only.

    Shape:
        q, k: (n, d); other_bank: (N_e, d); own_prototypes: (K, d); other_prototypes: (K', d).
        Returns a scalar.
    """
    other_bank = other_bank.detach()
    nn = (k.detach() @ other_bank.t()).argmax(dim=1)
    negatives = torch.cat([q @ own_prototypes.detach().t(), q @ other_prototypes.detach().t()], dim=1)
    return _contrast((q * other_bank[nn]).sum(1), negatives, temperature)


@torch.no_grad()
def bank_plan(bank: Tensor, prototypes: Tensor, marginal: Tensor, epsilon: float, iterations: int,
              similarity: str = "normalised") -> Tensor:
    """The transport plan of a whole bank onto a set of prototypes (spec 3, 4.2, 5.1).

    Shape:
        bank: (N, d); prototypes: (K, d); marginal: (K,) -> (N, K).
    """
    return transport_plan(plan_similarity(bank, prototypes, similarity), marginal, epsilon, iterations)


@torch.no_grad()
def moved_prototypes(plan: Tensor, bank: Tensor) -> Tensor:
    """The prototypes after a step: the transport-weighted means of the bank, unit rows (spec 4.5).

    Shape:
        plan: (N, K); bank: (N, d) -> (K, d).
    """
    return F.normalize(plan.t() @ bank, dim=1)
