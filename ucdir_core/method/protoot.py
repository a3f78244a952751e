"""ProtoOT behind the method interface (``protoot-spec.md``): prototypes of each domain that move
with the transport plan of its memory bank, an in-domain loss onto them, and a cross-domain loss
onto the other domain's prototypes.

Li, Shi, Yu & Wang, "Unsupervised Cross-Domain Image Retrieval via Prototypical Optimal
Transport", AAAI 2024, https://arxiv.org/abs/2402.18411. It keeps UCDIR's model, banks and
evaluation (:mod:`ucdir_core.models.encoders`).

As released, and so by default: the prototypes come from k-means at epoch 0 only and then move
every step (``P_d <- normalise(Q_d^T bank_d)``); each epoch's k-means gives only the marginal, in
that k-means's cluster order (``marginal_order="kmeans"``); the plan's similarities are
L2-normalised per row (``transport_similarity="normalised"``); the cross-domain negatives are
L2-normalised while the positive is not (``cross_domain_negatives="normalised"``); domain d's bank
is transported onto the other domain's prototypes with d's own marginal. The three keys named
select the corrected variants (opt-in; ``docs/protoot.md``).
"""

from __future__ import annotations

from typing import Any

from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ucdir_core.base.pair import DomainPair
from ucdir_core.base.params import at_epoch
from ucdir_core.method.interface import EpochContext, Method, StepBatch
from ucdir_core.method.protoot_params import ProtoOTParams
from ucdir_core.method.prototype_losses import (bank_plan, cross_domain_loss, cross_domain_neighbour_loss,
                                                in_domain_loss, moved_prototypes)
from ucdir_core.method.transport import marginal_of


def matched_marginal(marginal: Tensor, centroids: Tensor, prototypes: Tensor) -> Tensor:
    """The marginal re-ordered to the prototypes: each k-means cluster matched one to one to the
    prototype nearest to its centroid (Hungarian algorithm on cosine similarity). The opt-in
    correction ``marginal_order="matched"``.

    Shape:
        marginal: (K,); centroids, prototypes: (K, d) unit rows -> (K,).
    """
    cost = -(prototypes @ centroids.t()).detach().cpu().double().numpy()  # K prototypes x K clusters
    rows, cols = linear_sum_assignment(cost)
    order = [0] * len(rows)
    for r, c in zip(rows, cols):
        order[r] = int(c)
    return marginal[order]


class ProtoOT(Method):
    """ProtoOT (spec sections 2-5): in-domain loss from the first epoch, cross-domain loss weighted
    ``cross_domain_weight`` from ``cross_domain_start``; prototypes kept between steps (and in the
    checkpoint). The opt-in ``cross_domain_neighbour_weight`` (beyond the spec; 0 by default) adds
    :func:`~ucdir_core.method.prototype_losses.cross_domain_neighbour_loss` from the same epoch.

    Raises:
        ValueError: more than one K in ``num_clusters`` (ProtoOT uses one, the class count), or a
            cross-domain term weighted above 0 whose start lies beyond the run's epochs.
    """

    name = "protoot"
    terms = ("in_domain", "cross_domain")  # and "cross_domain_neighbour" when it is weighted
    params: ProtoOTParams

    def __init__(self, params: ProtoOTParams, num_clusters: tuple[int, ...], epochs: int):
        super().__init__(params, num_clusters, epochs)
        if len(num_clusters) != 1:
            raise ValueError(f"ProtoOT uses one K (num_clusters), got {num_clusters}")
        if params.cross_domain_neighbour_weight > 0:
            self.terms = (*ProtoOT.terms, "cross_domain_neighbour")
        self.cross_domain_start = at_epoch(params.cross_domain_start, epochs)
        self.prototypes: DomainPair[Tensor] | None = None
        self.marginals: DomainPair[Tensor] | None = None
        self.epoch = 0
        self.check_switch_on({"cross_domain": ("cross_domain_start", params.cross_domain_weight),
                              "cross_domain_neighbour": ("cross_domain_start", params.cross_domain_neighbour_weight)})

    def weights(self, epoch: int) -> dict[str, float]:
        on = epoch >= self.cross_domain_start
        weights = {"in_domain": 1.0, "cross_domain": self.params.cross_domain_weight if on else 0.0,
                   "cross_domain_neighbour": self.params.cross_domain_neighbour_weight if on else 0.0}
        return {name: weights[name] for name in self.terms}

    def begin_epoch(self, context: EpochContext) -> None:
        """k-means of both banks: the marginals of this epoch, and the prototypes at epoch 0 (or
        when none were kept)."""
        self.epoch = context.epoch
        clustering = context.cluster(context.banks)
        k = self.num_clusters[0]
        marginals = clustering.map(lambda c: marginal_of(c.assignments[0], k))
        if self.prototypes is None:
            self.prototypes = clustering.map(lambda c: c.prototypes[0].clone())
        elif self.params.marginal_order == "matched":
            marginals = DomainPair(*(matched_marginal(m, c.prototypes[0], p)
                                     for m, c, p in zip(marginals, clustering, self.prototypes)))
        self.marginals = marginals

    def loss(self, batch: StepBatch) -> tuple[Tensor, dict[str, float]]:
        """In-domain loss of both domains, moving each domain's prototypes after its own loss;
        then, when on, the cross-domain loss onto the moved prototypes."""
        p = self.params
        if self.prototypes is None or self.marginals is None:
            raise ValueError("ProtoOT's prototypes are not set: begin_epoch must run before the first step")
        plan_kw = dict(epsilon=p.sinkhorn_epsilon, iterations=p.sinkhorn_iterations,
                       similarity=p.transport_similarity)
        in_domain, moved = [], []
        for q, k, bank, ids, protos, beta in zip(batch.q, batch.k, batch.banks, batch.ids, self.prototypes,
                                                 self.marginals):
            protos, beta = protos.to(bank.device), beta.to(bank.device)  # from a checkpoint: on the CPU
            plan = bank_plan(bank, protos, beta, **plan_kw)
            in_domain.append(in_domain_loss(q, k, bank, ids, protos, plan, p.temperature,
                                            p.in_domain_neighbour_weight, p.in_domain_prototype_weight))
            moved.append(moved_prototypes(plan, bank.detach()))
        self.prototypes = DomainPair(*moved)
        terms = {name: batch.q.a.new_zeros(()) for name in self.terms}
        terms["in_domain"] = in_domain[0] + in_domain[1]
        w = self.weights(self.epoch)
        if w["cross_domain"] > 0:
            cross = []
            for side in (0, 1):
                other = self.prototypes[1 - side]
                plan = bank_plan(batch.banks[side], other, self.marginals[side], **plan_kw)
                cross.append(cross_domain_loss(batch.q[side], batch.ids[side], other, plan, p.temperature,
                                               p.cross_domain_negatives, own_prototypes=self.prototypes[side]))
            terms["cross_domain"] = cross[0] + cross[1]
        if w.get("cross_domain_neighbour", 0.0) > 0:
            terms["cross_domain_neighbour"] = sum(
                cross_domain_neighbour_loss(batch.q[side], batch.k[side], batch.banks[1 - side], self.prototypes[side],
                                            self.prototypes[1 - side], p.temperature) for side in (0, 1))
        total = sum(w[name] * terms[name] for name in self.terms)
        return total, {name: float(v.detach()) for name, v in terms.items()}

    def state_dict(self) -> dict[str, Any]:
        if self.prototypes is None:
            return {}
        return {"prototypes_a": self.prototypes.a.detach().cpu(), "prototypes_b": self.prototypes.b.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "prototypes_a" in state:
            self.prototypes = DomainPair(state["prototypes_a"], state["prototypes_b"])
