"""Learning-rate schedules shared by every method (``../shared/ucdir-spec.md`` section 3; ProtoOT's
released scripts keep the rate constant). Each is a small callable of the 0-based epoch, set once
per epoch, so it can be plotted and tested."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ucdir_core.config.run import RunConfig


@dataclass(frozen=True)
class CosineLR:
    """``lr(e) = base * 0.5 * (1 + cos(pi * e / epochs))``, set once per epoch (UCDIR's)."""

    base: float
    epochs: int

    def __call__(self, epoch: int) -> float:
        return self.base * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))


@dataclass(frozen=True)
class ConstantLR:
    """``lr(e) = base`` at every epoch (ProtoOT's released scripts)."""

    base: float

    def __call__(self, epoch: int) -> float:
        return self.base


def lr_schedule(cfg: RunConfig) -> CosineLR | ConstantLR:
    """The learning-rate schedule the config's ``lr_schedule`` names."""
    return CosineLR(cfg.lr, cfg.epochs) if cfg.lr_schedule == "cosine" else ConstantLR(cfg.lr)
