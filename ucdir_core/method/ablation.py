"""The paper's loss ablation as named config variants (same budget for every row)."""

from __future__ import annotations

from ucdir_core.base.config import UCDIRConfig

#: name -> which cluster-based losses are on (instance contrastive is always on)
ABLATIONS: dict[str, tuple[bool, bool, bool]] = {
    "instance": (False, False, False),
    "+cluster": (True, False, False),
    "+self_entropy": (True, True, False),
    "+distance_of_distance": (True, False, True),
    "full": (True, True, True),
}


def ablation_config(cfg: UCDIRConfig, name: str) -> UCDIRConfig:
    """``cfg`` with the losses of ablation row ``name`` switched off (weights 0).

    Rows: ``instance`` (instance contrastive only), ``+cluster`` (adds cluster-wise contrastive),
    ``+self_entropy`` (instance + cluster-wise + self-entropy), ``+distance_of_distance``
    (instance + cluster-wise + distance-of-distance), ``full`` (all four). The instance-only row
    never clusters (its clustering start moves past the last epoch; k-means would not change its
    result).

    Raises:
        ValueError: an unknown row name.
    """
    try:
        cw, se, dod = ABLATIONS[name]
    except KeyError:
        raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}") from None
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
