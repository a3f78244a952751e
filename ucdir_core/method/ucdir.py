"""UCDIR behind the method interface: the total objective of one step (spec section 2, "Total")
and what it recomputes per epoch (k-means of both domains, spec section 3).

Hu & Lee, "Feature Representation Learning for Unsupervised Cross-domain Image Retrieval",
ECCV 2022, https://arxiv.org/abs/2207.09721.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from ucdir_core.base.config import UCDIRConfig
from ucdir_core.base.pair import DomainPair
from ucdir_core.method import losses
from ucdir_core.method.clustering import Clustering
from ucdir_core.method.interface import EpochContext, Method, StepBatch
from ucdir_core.method.schedules import LossWeights, UCDIRSchedule


@dataclass(frozen=True)
class LossParams:
    """The UCDIR losses' settings other than their weights; field names are the config's keys."""

    temperature: float = 0.2
    threshold: float = 0.2
    self_entropy_temperature: float = 0.01
    distance_of_distance_temperature: float = 0.01
    distance_of_distance_center: bool = False
    self_entropy_center: bool = False

    @classmethod
    def from_config(cls, cfg: UCDIRConfig) -> "LossParams":
        """The config's values of these keys, by name."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def centred_assignment_inputs(q: DomainPair[Tensor], banks: DomainPair[Tensor], prototypes: DomainPair[Tensor]
                              ) -> tuple[DomainPair[Tensor], DomainPair[Tensor]]:
    """Queries and prototypes with their own domain's bank mean subtracted, re-normalised.

    A deviation from the reference (``distance_of_distance_center`` / ``self_entropy_center``, off
    in the paper presets). When the two domains' embeddings do not overlap, a query's soft
    assignment to the *other* domain's prototypes falls on the two or three prototypes nearest to
    its whole domain, whatever its class, so self-entropy and distance-of-distance act on a
    degenerate assignment. Removing each domain's mean first (the bank's mean: no labels, no
    gradient) compares the two domains' class structures instead of their offset, as the
    ``centered`` anchor does for retrieval.

    Shape:
        q: pair of (n, d); banks: pair of (N_d, d); prototypes: pair of (K, d)
        -> (queries: pair of (n, d), prototypes: pair of (K, d)).
    """
    mean = banks.map(lambda b: b.detach().mean(0))
    queries = DomainPair(*(F.normalize(qd - m, dim=1) for qd, m in zip(q, mean)))
    protos = DomainPair(*(F.normalize(p.detach() - m, dim=1) for p, m in zip(prototypes, mean)))
    return queries, protos


def _self_entropy(q: DomainPair[Tensor], protos: DomainPair[Tensor], temperature: float) -> list[Tensor]:
    """The four (feature domain, prototype domain) entropies of one clustering (spec 2.3)."""
    return [losses.self_entropy(qd, p, temperature) for qd in q for p in protos]


def _distance_of_distance(q: DomainPair[Tensor], protos: DomainPair[Tensor], temperature: float) -> list[Tensor]:
    """The two feature domains' distance-of-distance of one clustering (spec 2.4)."""
    return [losses.distance_of_distance(qd, protos.a, protos.b, temperature) for qd in q]


def _assignment_terms(q: DomainPair[Tensor], banks: DomainPair[Tensor], clusterings: Sequence[DomainPair[Tensor]],
                      fn, temperature: float, center: bool) -> Tensor:
    """Mean of ``fn``'s terms over every clustering's prototypes (optionally centred first)."""
    values: list[Tensor] = []
    for protos in clusterings:
        qs, ps = centred_assignment_inputs(q, banks, protos) if center else (q, protos)
        values += fn(qs, ps, temperature)
    return sum(values) / len(values)


def ucdir_objective(
    q: DomainPair[Tensor],
    k: DomainPair[Tensor],
    banks: DomainPair[Tensor],
    ids: DomainPair[Tensor],
    clustering: DomainPair[Clustering] | None,
    weights: LossWeights,
    params: LossParams,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the four losses over both domains, and the value of each term.

    ``L = (w_inst (L_inst^A + L_inst^B) + w_cw (L_cw^A + L_cw^B)) / 2 + w_se L_se + w_dod L_dod``
    where, as the reference computes them with several K, ``L_se`` averages the four (feature,
    prototype) domain combinations of every clustering (4 x nK terms) and ``L_dod`` the two feature
    domains of every clustering (2 x nK), and the cluster-wise loss averages over clusterings
    (:func:`~ucdir_core.method.losses.cluster_contrastive`). Terms whose weight is 0 are not
    computed and are reported as 0. With ``params.self_entropy_center`` /
    ``params.distance_of_distance_center`` the soft assignments of that loss see
    :func:`centred_assignment_inputs` (a deviation; off by default).

    Shape:
        q, k: DomainPair of (n, d); banks: DomainPair of (N_d, d); ids: DomainPair of (n,).

    Raises:
        ValueError: a cluster-based weight is on and ``clustering`` is None.
    """
    zero = q.a.new_zeros(())
    inst = [losses.instance_contrastive(qd, kd, bd, idd, params.temperature)
            for qd, kd, bd, idd in zip(q, k, banks, ids)]
    terms = {"instance_contrastive": sum(inst) / 2, "cluster_contrastive": zero, "self_entropy": zero,
             "distance_of_distance": zero}
    needs_clusters = weights.cluster_contrastive > 0 or weights.self_entropy > 0 or weights.distance_of_distance > 0
    if needs_clusters and clustering is None:
        raise ValueError("cluster-based losses are on but no clustering was given")
    if weights.cluster_contrastive > 0:
        cw = [
            losses.cluster_contrastive(qd, kd, bd, idd, c.assignments, c.prototypes, params.temperature, params.threshold)
            for qd, kd, bd, idd, c in zip(q, k, banks, ids, clustering)
        ]
        terms["cluster_contrastive"] = sum(cw) / 2
    per_k = ([DomainPair(pa, pb) for pa, pb in zip(clustering.a.prototypes, clustering.b.prototypes)]
             if clustering is not None else [])
    if weights.self_entropy > 0:
        terms["self_entropy"] = _assignment_terms(q, banks, per_k, _self_entropy, params.self_entropy_temperature,
                                                  params.self_entropy_center)
    if weights.distance_of_distance > 0:
        terms["distance_of_distance"] = _assignment_terms(q, banks, per_k, _distance_of_distance,
                                                          params.distance_of_distance_temperature,
                                                          params.distance_of_distance_center)
    total = (
        weights.instance_contrastive * terms["instance_contrastive"]
        + weights.cluster_contrastive * terms["cluster_contrastive"]
        + weights.self_entropy * terms["self_entropy"] + weights.distance_of_distance * terms["distance_of_distance"]
    )
    return total, {name: float(v.detach()) for name, v in terms.items()}


class UCDIR(Method):
    """UCDIR (spec sections 2-3): instance and cluster-wise contrastive, self-entropy and
    distance-of-distance, with k-means of both domains' evaluation embeddings at the start of
    every epoch from ``clustering_start`` on."""

    name = "ucdir"
    terms = ("instance_contrastive", "cluster_contrastive", "self_entropy", "distance_of_distance")

    def __init__(self, cfg: UCDIRConfig):
        super().__init__(cfg)
        self.schedule = UCDIRSchedule.from_config(cfg)
        self.params = LossParams.from_config(cfg)
        self.clustering: DomainPair[Clustering] | None = None
        self._weights = self.schedule.weights(0)

    def weights(self, epoch: int) -> dict[str, float]:
        return self.schedule.weights(epoch).as_dict()

    def begin_epoch(self, context: EpochContext) -> None:
        """k-means of both domains' training embeddings (key encoder) once clustering is on."""
        self._weights = self.schedule.weights(context.epoch)
        self.clustering = context.cluster(context.train_embeddings()) if self._weights.clustering else None

    def loss(self, batch: StepBatch) -> tuple[Tensor, dict[str, float]]:
        return ucdir_objective(batch.q, batch.k, batch.banks, batch.ids, self.clustering, self._weights, self.params)

    def switch_on_epochs(self, epochs: int) -> dict[str, int | None]:
        return self.schedule.switch_on_epochs(epochs)
