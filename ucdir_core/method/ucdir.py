"""UCDIR behind the method interface: the total objective of one step (spec section 2, "Total")
and what it recomputes per epoch (k-means of both domains, spec section 3).

Hu & Lee, "Feature Representation Learning for Unsupervised Cross-domain Image Retrieval",
ECCV 2022, https://arxiv.org/abs/2207.09721.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ucdir_core.base.pair import DomainPair
from ucdir_core.base.params import at_epoch
from ucdir_core.method import losses
from ucdir_core.method.clustering import Clustering, joint_balance
from ucdir_core.method.interface import EpochContext, Method, StepBatch
from ucdir_core.method.schedules import LinearRamp, StepOn
from ucdir_core.method.ucdir_params import UCDIRParams


@dataclass(frozen=True)
class LossWeights:
    """The weight of every UCDIR loss term at one epoch, and whether clustering runs."""

    instance_contrastive: float
    cluster_contrastive: float
    self_entropy: float
    distance_of_distance: float
    clustering: bool
    aligned_target: float = 0.0  #: the opt-in aligned-target term (UCDIRParams.aligned_target_weight)

    def as_dict(self) -> dict[str, float]:
        """``{term: weight}`` in the order of the terms."""
        return {"instance_contrastive": self.instance_contrastive, "cluster_contrastive": self.cluster_contrastive,
                "self_entropy": self.self_entropy, "distance_of_distance": self.distance_of_distance,
                "aligned_target": self.aligned_target}


@dataclass(frozen=True)
class UCDIRSchedule:
    """UCDIR's per-epoch loss weights (spec section 3), its schedule values resolved to epochs.

    Cluster-based terms need prototypes, so their weights are 0 before ``clustering_start``
    whatever their own start says (the reference computes them only once clustering is on).
    """

    cluster_contrastive: LinearRamp
    self_entropy: StepOn
    distance_of_distance: StepOn
    instance_weight: float
    clustering_start: int
    aligned_target: float = 0.0  # its weight from clustering_start on

    @classmethod
    def from_params(cls, p: UCDIRParams, epochs: int) -> "UCDIRSchedule":
        """The schedules ``p`` describes in a run of ``epochs`` epochs."""
        return cls(
            cluster_contrastive=LinearRamp(at_epoch(p.cluster_contrastive_ramp_after, epochs),
                                           at_epoch(p.cluster_contrastive_ramp_end, epochs),
                                           p.cluster_contrastive_weight_initial, p.cluster_contrastive_weight),
            self_entropy=StepOn(at_epoch(p.self_entropy_start, epochs), p.self_entropy_weight),
            distance_of_distance=StepOn(at_epoch(p.distance_of_distance_start, epochs), p.distance_of_distance_weight),
            instance_weight=p.instance_contrastive_weight,
            clustering_start=at_epoch(p.clustering_start, epochs),
            aligned_target=p.aligned_target_weight,
        )

    def weights(self, epoch: int) -> LossWeights:
        on = epoch >= self.clustering_start
        return LossWeights(
            instance_contrastive=self.instance_weight,
            cluster_contrastive=self.cluster_contrastive(epoch) if on else 0.0,
            self_entropy=self.self_entropy(epoch) if on else 0.0,
            distance_of_distance=self.distance_of_distance(epoch) if on else 0.0,
            clustering=on,
            aligned_target=self.aligned_target if on else 0.0,
        )


def centred_assignment_inputs(q: DomainPair[Tensor], banks: DomainPair[Tensor], prototypes: DomainPair[Tensor]
                              ) -> tuple[DomainPair[Tensor], DomainPair[Tensor]]:
    """Queries and prototypes with their own domain's bank mean subtracted, re-normalised.

    A deviation from the reference (``distance_of_distance_centred`` / ``self_entropy_centred``, off
    in the paper presets). When the two domains' embeddings do not overlap, a query's soft
    assignment to the *other* domain's prototypes falls on the two or three prototypes nearest to
    its whole domain, whatever its class, so self-entropy and distance-of-distance act on a
    degenerate assignment. Removing each domain's mean first (the bank's mean: no labels, no
    gradient) compares the two domains' class structures instead of their offset, as the
    ``centred`` anchor does for retrieval.

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
                      fn, temperature: float, centred: bool) -> Tensor:
    """Mean of ``fn``'s terms over every clustering's prototypes (optionally centred first)."""
    values: list[Tensor] = []
    for protos in clusterings:
        qs, ps = centred_assignment_inputs(q, banks, protos) if centred else (q, protos)
        values += fn(qs, ps, temperature)
    return sum(values) / len(values)


def _across_cluster_contrastive(q: DomainPair[Tensor], k: DomainPair[Tensor], banks: DomainPair[Tensor],
                                ids: DomainPair[Tensor], joint: DomainPair[Clustering], params: UCDIRParams) -> Tensor:
    """The cluster-wise loss with positives across domains: each domain's queries against its own
    bank followed by the other's (ids stay valid), positives by the joint assignments; the other
    domain's slots of a joint cluster whose :func:`~ucdir_core.method.clustering.joint_balance` is
    below ``params.cluster_contrastive_across_min_balance`` are no positives. Mean of both domains."""
    cw = []
    for qd, kd, bd, bo, idd, c, co in zip(q, k, banks, banks.swap(), ids, joint, joint.swap()):
        assignments = []
        for own, other, protos in zip(c.assignments, co.assignments, c.prototypes):
            if params.cluster_contrastive_across_min_balance > 0:
                balanced = joint_balance(own, other, protos.shape[0]) >= params.cluster_contrastive_across_min_balance
                other = torch.where(balanced[other], other, torch.full_like(other, -1))
            assignments.append(torch.cat([own, other]))
        cw.append(losses.cluster_contrastive(qd, kd, torch.cat([bd, bo]), idd, assignments, c.prototypes,
                                             params.temperature, params.threshold))
    return sum(cw) / 2


def ucdir_objective(
    q: DomainPair[Tensor],
    k: DomainPair[Tensor],
    banks: DomainPair[Tensor],
    ids: DomainPair[Tensor],
    clustering: DomainPair[Clustering] | None,
    weights: LossWeights,
    params: UCDIRParams,
    in_domain: DomainPair[Clustering] | None = None,
    targets: DomainPair[Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the four losses over both domains, and the value of each term.

    ``L = (w_inst (L_inst^A + L_inst^B) + w_cw (L_cw^A + L_cw^B)) / 2 + w_se L_se + w_dod L_dod``
    where, as the reference computes them with several K, ``L_se`` averages the four (feature,
    prototype) domain combinations of every clustering (4 x nK terms) and ``L_dod`` the two feature
    domains of every clustering (2 x nK), and the cluster-wise loss averages over clusterings
    (:func:`~ucdir_core.method.losses.cluster_contrastive`). Terms whose weight is 0 are not
    computed and are reported as 0. With ``params.self_entropy_centred`` /
    ``params.distance_of_distance_centred`` the soft assignments of that loss see
    :func:`centred_assignment_inputs` (a deviation; off by default).

    ``clustering`` is each domain's k-means, or with ``params.cluster_contrastive_across`` the joint
    one (positives across domains, :func:`_across_cluster_contrastive`); ``in_domain`` is then the
    per-domain k-means beside it, for the in-domain share of the cluster-wise loss
    (``1 - params.cluster_contrastive_across_share``) and for self-entropy and distance-of-distance.
    With ``params.aligned_target_weight`` above 0 the terms hold ``aligned_target`` as well
    (:func:`~ucdir_core.method.losses.aligned_target`, the mean of both domains), its weight
    ``weights.aligned_target`` and its ``targets`` the training embeddings after the run's alignment stage.

    Shape:
        q, k: DomainPair of (n, d); banks: DomainPair of (N_d, d); ids: DomainPair of (n,).

    Raises:
        ValueError: a cluster-based weight is on and ``clustering`` is None, the across share is
            below 1 and ``in_domain`` is None, or the aligned-target weight is on and ``targets`` is None.
    """
    zero = q.a.new_zeros(())
    inst = [losses.instance_contrastive(qd, kd, bd, idd, params.temperature)
            for qd, kd, bd, idd in zip(q, k, banks, ids)]
    terms = {"instance_contrastive": sum(inst) / 2, "cluster_contrastive": zero, "self_entropy": zero,
             "distance_of_distance": zero}
    needs_clusters = weights.cluster_contrastive > 0 or weights.self_entropy > 0 or weights.distance_of_distance > 0
    if needs_clusters and clustering is None:
        raise ValueError("cluster-based losses are on but no clustering was given")
    share = params.cluster_contrastive_across_share if params.cluster_contrastive_across else 0.0
    if share < 1 and in_domain is None and params.cluster_contrastive_across and needs_clusters:
        raise ValueError("cluster_contrastive_across_share below 1 needs the per-domain clustering (in_domain)")
    in_domain = in_domain if params.cluster_contrastive_across else clustering
    if weights.cluster_contrastive > 0:
        terms["cluster_contrastive"] = q.a.new_zeros(())
        if share > 0:
            terms["cluster_contrastive"] = share * _across_cluster_contrastive(q, k, banks, ids, clustering, params)
        if share < 1:
            cw = [losses.cluster_contrastive(qd, kd, bd, idd, c.assignments, c.prototypes, params.temperature,
                                             params.threshold)
                  for qd, kd, bd, idd, c in zip(q, k, banks, ids, in_domain)]
            terms["cluster_contrastive"] = terms["cluster_contrastive"] + (1 - share) * sum(cw) / 2
    assigning = in_domain if in_domain is not None else clustering
    per_k = ([DomainPair(pa, pb) for pa, pb in zip(assigning.a.prototypes, assigning.b.prototypes)]
             if assigning is not None else [])
    if weights.self_entropy > 0:
        terms["self_entropy"] = _assignment_terms(q, banks, per_k, _self_entropy, params.self_entropy_temperature,
                                                  params.self_entropy_centred)
    if weights.distance_of_distance > 0:
        terms["distance_of_distance"] = _assignment_terms(q, banks, per_k, _distance_of_distance,
                                                          params.distance_of_distance_temperature,
                                                          params.distance_of_distance_centred)
    if params.aligned_target_weight > 0:
        terms["aligned_target"] = zero
    if weights.aligned_target > 0:
        if targets is None:
            raise ValueError("the aligned-target term is on but no targets were given")
        terms["aligned_target"] = sum(losses.aligned_target(qd, td, idd) for qd, td, idd in zip(q, targets, ids)) / 2
    total = (
        weights.instance_contrastive * terms["instance_contrastive"]
        + weights.cluster_contrastive * terms["cluster_contrastive"]
        + weights.self_entropy * terms["self_entropy"] + weights.distance_of_distance * terms["distance_of_distance"]
        + (weights.aligned_target * terms["aligned_target"] if weights.aligned_target > 0 else 0.0)
    )
    return total, {name: float(v.detach()) for name, v in terms.items()}


class UCDIR(Method):
    """UCDIR (spec sections 2-3): instance and cluster-wise contrastive, self-entropy and
    distance-of-distance, with k-means of both domains' evaluation embeddings at the start of
    every epoch from ``clustering_start`` on.

    Raises:
        ValueError: a cluster-based term weighted above 0 that never switches on within the run.
    """

    name = "ucdir"
    terms = ("instance_contrastive", "cluster_contrastive", "self_entropy", "distance_of_distance")
    params: UCDIRParams

    def __init__(self, params: UCDIRParams, num_clusters: tuple[int, ...], epochs: int):
        super().__init__(params, num_clusters, epochs)
        self.schedule = UCDIRSchedule.from_params(params, epochs)
        self.clustering: DomainPair[Clustering] | None = None  # the joint one with cluster_contrastive_across
        self.in_domain: DomainPair[Clustering] | None = None  # per-domain, beside it (across share below 1)
        self.targets: DomainPair[Tensor] | None = None  # the aligned-target term's targets of this epoch
        if params.aligned_target_weight > 0:
            self.terms = (*UCDIR.terms, "aligned_target")
        self._weights = self.schedule.weights(0)
        self.check_switch_on({
            "cluster_contrastive": ("cluster_contrastive_ramp_end", params.cluster_contrastive_weight),
            "self_entropy": ("self_entropy_start", params.self_entropy_weight),
            "distance_of_distance": ("distance_of_distance_start", params.distance_of_distance_weight),
            "aligned_target": ("clustering_start", params.aligned_target_weight)})

    def weights(self, epoch: int) -> dict[str, float]:
        weights = self.schedule.weights(epoch).as_dict()
        return {name: weights[name] for name in self.terms}

    def begin_epoch(self, context: EpochContext) -> None:
        """k-means of both domains' training embeddings (key encoder) once clustering is on: per
        domain, or jointly with ``cluster_contrastive_across`` (and per domain beside it when its share
        is below 1); and the aligned-target term's targets, the training embeddings after the run's
        alignment stage, when that term is on.

        Raises:
            ValueError: the context lacks what an opt-in term needs (``cluster_jointly``, ``align``).
        """
        self._weights = self.schedule.weights(context.epoch)
        across = self.params.cluster_contrastive_across
        cluster = context.cluster_jointly if across else context.cluster
        if self._weights.clustering and cluster is None:
            raise ValueError("cluster_contrastive_across needs a trainer that clusters both domains jointly")
        self.clustering = cluster(context.train_embeddings()) if self._weights.clustering else None
        self.in_domain = (context.cluster(context.train_embeddings())
                          if self._weights.clustering and across and self.params.cluster_contrastive_across_share < 1
                          else None)
        if self._weights.aligned_target > 0 and context.align is None:
            raise ValueError("aligned_target_weight needs a trainer that applies the run's alignment stage")
        self.targets = context.align(context.train_embeddings()) if self._weights.aligned_target > 0 else None

    def loss(self, batch: StepBatch) -> tuple[Tensor, dict[str, float]]:
        return ucdir_objective(batch.q, batch.k, batch.banks, batch.ids, self.clustering, self._weights, self.params,
                               self.in_domain, self.targets)
