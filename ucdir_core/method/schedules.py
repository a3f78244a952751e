"""Per-epoch schedules of UCDIR (spec section 3): learning rate and loss weights.

Each schedule is a small callable of the 0-based epoch, so it can be plotted and tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ucdir_core.base.config import UCDIRConfig


@dataclass(frozen=True)
class CosineLR:
    """``lr(e) = base * 0.5 * (1 + cos(pi * e / epochs))``, set once per epoch."""

    base: float
    epochs: int

    def __call__(self, epoch: int) -> float:
        return self.base * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))


@dataclass(frozen=True)
class LinearRamp:
    """``start_value`` while ``e <= start``; linear up to ``sat_value`` at ``e = sat``; flat after."""

    start: int
    sat: int
    start_value: float
    sat_value: float

    def __call__(self, epoch: int) -> float:
        if epoch <= self.start:
            return self.start_value
        if epoch >= self.sat:
            return self.sat_value
        frac = (epoch - self.start) / (self.sat - self.start)
        return self.start_value + frac * (self.sat_value - self.start_value)


@dataclass(frozen=True)
class StepOn:
    """``value`` from epoch ``start`` on, 0 before."""

    start: int
    value: float

    def __call__(self, epoch: int) -> float:
        return self.value if epoch >= self.start else 0.0


@dataclass(frozen=True)
class ConstantLR:
    """``lr(e) = base`` at every epoch (ProtoOT's released scripts)."""

    base: float

    def __call__(self, epoch: int) -> float:
        return self.base


def lr_schedule(cfg: UCDIRConfig) -> CosineLR | ConstantLR:
    """The learning-rate schedule the config's ``lr_schedule`` names."""
    return CosineLR(cfg.lr, cfg.epochs) if cfg.lr_schedule == "cosine" else ConstantLR(cfg.lr)


@dataclass(frozen=True)
class LossWeights:
    """The weight of every UCDIR loss term at one epoch, and whether clustering runs."""

    instance_contrastive: float
    cluster_contrastive: float
    self_entropy: float
    distance_of_distance: float
    clustering: bool

    def as_dict(self) -> dict[str, float]:
        """``{term: weight}`` in the order of the terms."""
        return {"instance_contrastive": self.instance_contrastive, "cluster_contrastive": self.cluster_contrastive,
                "self_entropy": self.self_entropy, "distance_of_distance": self.distance_of_distance}


@dataclass(frozen=True)
class UCDIRSchedule:
    """Every schedule of a run, built from a config.

    Cluster-based terms need prototypes, so their weights are 0 before ``clustering_start``
    whatever their own start says (the reference computes them only once clustering is on).
    """

    lr: CosineLR | ConstantLR
    cluster_contrastive: LinearRamp
    self_entropy: StepOn
    distance_of_distance: StepOn
    instance_weight: float
    clustering_start: int

    @classmethod
    def from_config(cls, cfg: UCDIRConfig) -> "UCDIRSchedule":
        """The schedules the config's keys describe (spec section 3)."""
        return cls(
            lr=lr_schedule(cfg),
            cluster_contrastive=LinearRamp(cfg.cluster_contrastive_start, cfg.cluster_contrastive_sat,
                                           cfg.cluster_contrastive_weight_start, cfg.cluster_contrastive_weight_sat),
            self_entropy=StepOn(cfg.self_entropy_start, cfg.self_entropy_weight),
            distance_of_distance=StepOn(cfg.distance_of_distance_start, cfg.distance_of_distance_weight),
            instance_weight=cfg.instance_contrastive_weight,
            clustering_start=cfg.clustering_start,
        )

    def weights(self, epoch: int) -> LossWeights:
        on = epoch >= self.clustering_start
        return LossWeights(
            instance_contrastive=self.instance_weight,
            cluster_contrastive=self.cluster_contrastive(epoch) if on else 0.0,
            self_entropy=self.self_entropy(epoch) if on else 0.0,
            distance_of_distance=self.distance_of_distance(epoch) if on else 0.0,
            clustering=on,
        )

    def switch_on_epochs(self, epochs: int) -> dict[str, int | None]:
        """First epoch at which each cluster-based term has a nonzero weight (None: never)."""
        out: dict[str, int | None] = {}
        for name in ("cluster_contrastive", "self_entropy", "distance_of_distance"):
            out[name] = next((e for e in range(epochs) if getattr(self.weights(e), name) > 0), None)
        return out
