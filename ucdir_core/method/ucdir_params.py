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

    def __post_init__(self) -> None:
        self.check()


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
