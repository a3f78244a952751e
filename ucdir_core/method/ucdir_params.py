"""UCDIR's own parameters (``../shared/ucdir-spec.md`` sections 2-3), with their defaults, valid
ranges and the table rows of its loss ablation. Free of torch, so that a config can be read and
checked without loading a model.

Defaults are the reference's argparse values where the shipped scripts do not override them; the
presets (:mod:`ucdir_core.config.presets`) hold the shipped scripts' values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ucdir_core.base.params import (NON_NEGATIVE, POSITIVE, UNIT, EpochOrShare, Params, epoch_or_share,
                                    within)


@dataclass(frozen=True)
class UCDIRParams(Params):
    """UCDIR's loss settings and per-epoch schedule (Hu & Lee, ECCV 2022).

    Schedule values (``*_start``, ``cluster_contrastive_ramp_*``) are an int epoch (0-based) or a
    float share of the run's epochs in [0, 1] (:func:`~ucdir_core.base.params.at_epoch`).
    ``*_start`` is the first epoch a term is on. The cluster-wise weight follows the reference's
    ramp: ``cluster_contrastive_weight_initial`` through epoch ``cluster_contrastive_ramp_after``
    (inclusive), then linear up to ``cluster_contrastive_weight`` at ``cluster_contrastive_ramp_end``,
    flat after. Cluster-based terms are 0 before ``clustering_start`` whatever their own schedule.

    Raises:
        ValueError: a value outside its range (one line naming the key and the range).
    """

    method: ClassVar[str] = "ucdir"
    owner: ClassVar[str] = "method ucdir"
    #: the keys a divergence of this method can come from, besides the shared lr and momentum
    divergence_keys: ClassVar[tuple[str, ...]] = ("temperature", "self_entropy_temperature",
                                                  "distance_of_distance_temperature")

    temperature: float = within(POSITIVE, 0.2)  #: T of the instance and cluster-wise contrastive losses
    threshold: float = within(UNIT, 0.2)  #: confidence filter of the cluster-wise loss (a softmax probability)
    instance_contrastive_weight: float = within(NON_NEGATIVE, 1.0)
    clustering_start: EpochOrShare = epoch_or_share(20)  #: k-means, and the cluster-based losses, from this epoch
    #: the cluster-wise weight holds its initial value through this epoch, then rises linearly ...
    cluster_contrastive_ramp_after: EpochOrShare = epoch_or_share(20)
    cluster_contrastive_ramp_end: EpochOrShare = epoch_or_share(100)  #: ... to its full value at this epoch
    cluster_contrastive_weight_initial: float = within(NON_NEGATIVE, 0.0)  #: the weight before the ramp
    cluster_contrastive_weight: float = within(NON_NEGATIVE, 0.5)  #: the weight at and after the ramp's end
    self_entropy_temperature: float = within(POSITIVE, 0.01)  #: tau_se of the self-entropy's soft assignment
    self_entropy_weight: float = within(NON_NEGATIVE, 1.0)
    self_entropy_start: EpochOrShare = epoch_or_share(100)
    distance_of_distance_weight: float = within(NON_NEGATIVE, 0.5)
    distance_of_distance_start: EpochOrShare = epoch_or_share(100)
    #: fixed soft-assignment temperature of distance-of-distance
    distance_of_distance_temperature: float = within(POSITIVE, 0.01)
    #: centre queries and prototypes by their own domain's bank mean before distance-of-distance's soft
    #: assignments (a deviation from the reference, off in the paper presets;
    #: ucdir_core.method.ucdir.centred_assignment_inputs)
    distance_of_distance_centred: bool = False
    self_entropy_centred: bool = False  #: the same centring before self-entropy's soft assignments
    #: cluster-wise positives across domains (beyond the reference, opt-in; a trial of issue "aligned by
    #: what?"): k-means of both domains' training embeddings together, after the run's alignment stage
    #: when it has one; each query's positives are the slots of both banks in its joint cluster, in a
    #: softmax over both banks, and both domains share the joint clusters' prototypes
    cluster_contrastive_across: bool = False
    #: with ``cluster_contrastive_across``: the other domain's slots are positives only in joint clusters
    #: whose balance is at least this (:func:`~ucdir_core.method.clustering.joint_balance`: the smaller of
    #: the two domains' shares of their own domain over the larger); 0: in every joint cluster
    cluster_contrastive_across_min_balance: float = within(UNIT, 0.0)
    #: with ``cluster_contrastive_across``: the share of the cluster-wise loss taken across domains; the
    #: rest is the reference's in-domain term on per-domain k-means (below 1: both clusterings every epoch,
    #: and self-entropy and distance-of-distance use the per-domain one, as the reference does)
    cluster_contrastive_across_share: float = within(UNIT, 1.0)
    #: weight of the aligned-target term (beyond the reference, opt-in; a trial of issue "aligned by
    #: what?"): from ``clustering_start`` on, each query is pulled toward its own image's training
    #: embedding after the run's alignment stage, refitted at the start of every epoch
    #: (:func:`~ucdir_core.method.losses.aligned_target`); needs an alignment stage; 0: off
    aligned_target_weight: float = within(NON_NEGATIVE, 0.0)

    def __post_init__(self) -> None:
        self.check()
        if not self.cluster_contrastive_across and (self.cluster_contrastive_across_min_balance > 0
                                                    or self.cluster_contrastive_across_share < 1):
            raise ValueError("cluster_contrastive_across_min_balance and cluster_contrastive_across_share need "
                             "cluster_contrastive_across=true")

    @property
    def needs_alignment_stage(self) -> tuple[str, ...]:
        """The keys set here that need the run's alignment stage (``alignment`` other than none)."""
        return ("aligned_target_weight",) if self.aligned_target_weight > 0 else ()


#: the rows of UCDIR's loss ablation (the paper's Table 4), as parameter changes: instance
#: contrastive always on; ``instance`` never clusters (its clustering start is the run's end)
ROWS: dict[str, dict[str, Any]] = {
    "instance": dict(cluster_contrastive_weight_initial=0.0, cluster_contrastive_weight=0.0, self_entropy_weight=0.0,
                     distance_of_distance_weight=0.0, clustering_start=1.0),
    "+cluster": dict(self_entropy_weight=0.0, distance_of_distance_weight=0.0),
    "+self_entropy": dict(distance_of_distance_weight=0.0),
    "+distance_of_distance": dict(self_entropy_weight=0.0),
    "full": {},
}
