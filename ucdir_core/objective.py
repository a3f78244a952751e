"""The total UCDIR objective of one step (spec section 2, "Total")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ucdir_core import losses
from ucdir_core.pair import DomainPair
from ucdir_core.schedules import LossWeights


@dataclass
class Clustering:
    """k-means result of one domain: per-image cluster ids and L2-normalised prototypes.

    Shape:
        assignments: list of (N,) long, one per K; prototypes: list of (K, d).
    """

    assignments: list[Tensor]
    prototypes: list[Tensor]

    def to(self, device: torch.device | str) -> "Clustering":
        """The same clustering with its tensors on ``device``."""
        return Clustering([a.to(device) for a in self.assignments], [p.to(device) for p in self.prototypes])


@dataclass(frozen=True)
class LossParams:
    temperature: float = 0.2
    threshold: float = 0.2
    se_temperature: float = 0.01
    dod_temperature: float = 0.01
    dod_center: bool = False
    se_center: bool = False


def centred_assignment_inputs(q: DomainPair[Tensor], banks: DomainPair[Tensor],
                              clustering: DomainPair[Clustering]) -> tuple[DomainPair[Tensor], DomainPair[Tensor]]:
    """Queries and prototypes with their own domain's bank mean subtracted, re-normalised.

    A deviation from the reference (``dod_center`` / ``se_center``, off in the paper presets). When
    the two domains' embeddings do not overlap, a query's soft assignment to the *other* domain's
    prototypes falls on the two or three prototypes nearest to its whole domain, whatever its
    class, so self-entropy and distance-of-distance act on a degenerate assignment. Removing each
    domain's mean first (the bank's mean: no labels, no gradient) compares the two domains' class
    structures instead of their offset, as the ``centered`` anchor does for retrieval.

    Shape:
        q: pair of (n, d); banks: pair of (N_d, d) -> (queries: pair of (n, d), prototypes: pair of (K, d)).
    """
    mean = banks.map(lambda b: b.detach().mean(0))
    queries = DomainPair(*(F.normalize(qd - m, dim=1) for qd, m in zip(q, mean)))
    protos = DomainPair(*(F.normalize(c.prototypes[0].detach() - m, dim=1) for c, m in zip(clustering, mean)))
    return queries, protos


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
    where ``L_se`` averages the four (feature, prototype) domain combinations and ``L_dod`` the two
    feature domains, each using the first clustering's prototypes. Terms whose weight is 0 are not
    computed and are reported as 0. With ``params.se_center`` / ``params.dod_center`` the soft
    assignments of that loss see :func:`centred_assignment_inputs` (a deviation; off by default).

    Shape:
        q, k: DomainPair of (n, d); banks: DomainPair of (N_d, d); ids: DomainPair of (n,).
    """
    zero = q.a.new_zeros(())
    inst = [losses.instance_contrastive(qd, kd, bd, idd, params.temperature) for qd, kd, bd, idd in zip(q, k, banks, ids)]
    terms = {"instance": sum(inst) / 2, "cluster": zero, "self_entropy": zero, "distance_of_distance": zero}
    needs_clusters = weights.cluster > 0 or weights.self_entropy > 0 or weights.distance_of_distance > 0
    if needs_clusters and clustering is None:
        raise ValueError("cluster-based losses are on but no clustering was given")
    if weights.cluster > 0:
        cw = [
            losses.cluster_contrastive(qd, kd, bd, idd, c.assignments, c.prototypes, params.temperature, params.threshold)
            for qd, kd, bd, idd, c in zip(q, k, banks, ids, clustering)
        ]
        terms["cluster"] = sum(cw) / 2
    if (weights.self_entropy > 0 and params.se_center) or (weights.distance_of_distance > 0 and params.dod_center):
        centred = centred_assignment_inputs(q, banks, clustering)
    protos = clustering.map(lambda c: c.prototypes[0]) if clustering is not None else None
    if weights.self_entropy > 0:
        qs, ps = centred if params.se_center else (q, protos)
        h = [losses.self_entropy(qd, p, params.se_temperature) for qd in qs for p in ps]
        terms["self_entropy"] = sum(h) / 4
    if weights.distance_of_distance > 0:
        qs, ps = centred if params.dod_center else (q, protos)
        dod = [losses.distance_of_distance(qd, ps.a, ps.b, params.dod_temperature) for qd in qs]
        terms["distance_of_distance"] = sum(dod) / 2
    total = (
        weights.instance * terms["instance"] + weights.cluster * terms["cluster"]
        + weights.self_entropy * terms["self_entropy"] + weights.distance_of_distance * terms["distance_of_distance"]
    )
    return total, {name: float(v.detach()) for name, v in terms.items()}
