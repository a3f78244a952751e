"""The rows of the method tables as named config variants of one CPU preset (same budget for every
row): the paper's loss ablation of UCDIR, and ProtoOT with its own ablation beside it."""

from __future__ import annotations

from ucdir_core.base.config import PROTOOT_CPU, UCDIRConfig

#: UCDIR's rows: name -> which cluster-based losses are on (instance contrastive is always on)
ABLATIONS: dict[str, tuple[bool, bool, bool]] = {
    "instance": (False, False, False),
    "+cluster": (True, False, False),
    "+self_entropy": (True, True, False),
    "+distance_of_distance": (True, False, True),
    "full": (True, True, True),
}
#: ProtoOT's rows: the in-domain loss only, and both losses (the method)
PROTOOT_ROWS: tuple[str, ...] = ("protoot_in_domain", "protoot")
#: every trained row of the tables, in their order
ROWS: tuple[str, ...] = (*ABLATIONS, *PROTOOT_ROWS)


def ablation_config(cfg: UCDIRConfig, name: str) -> UCDIRConfig:
    """``cfg`` (a UCDIR CPU preset) as table row ``name``.

    UCDIR's rows switch losses off (weight 0): ``instance`` (instance contrastive only),
    ``+cluster`` (adds cluster-wise contrastive), ``+self_entropy`` (instance + cluster-wise +
    self-entropy), ``+distance_of_distance`` (instance + cluster-wise + distance-of-distance),
    ``full`` (all four). The instance-only row never clusters (its clustering start moves past the
    last epoch; k-means would not change its result).

    ProtoOT's rows train ProtoOT on the same data, backbone, input pipeline and epochs with its
    CPU-regime values (:data:`~ucdir_core.base.config.PROTOOT_CPU`): ``protoot`` (in-domain and
    cross-domain losses) and ``protoot_in_domain`` (the cross-domain weight set to 0).

    Raises:
        ValueError: an unknown row name.
    """
    if name in PROTOOT_ROWS:
        protoot = cfg.replace(**PROTOOT_CPU)
        return protoot.replace(cross_domain_weight=0.0) if name == "protoot_in_domain" else protoot
    try:
        cw, se, dod = ABLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown table row {name!r}; known: {', '.join(ROWS)}") from None
    changes: dict = {}
    if not cw:
        changes.update(cluster_contrastive_weight_start=0.0, cluster_contrastive_weight_sat=0.0)
    if not se:
        changes.update(self_entropy_weight=0.0)
    if not dod:
        changes.update(distance_of_distance_weight=0.0)
    if not (cw or se or dod):
        changes.update(clustering_start=cfg.epochs)
    return cfg.replace(**changes)
