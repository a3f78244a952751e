"""Per-epoch loss-weight schedules of the methods (``../shared/ucdir-spec.md`` section 3).

Each schedule is a small callable of the 0-based epoch, so it can be plotted and tested. The
learning-rate schedules, shared by every method, are in :mod:`ucdir_core.training.schedules`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearRamp:
    """``initial`` while ``e <= after``; linear up to ``full`` at ``e = end``; flat after (the
    reference's ramp of the cluster-wise weight: at epoch ``after`` it still holds ``initial``)."""

    after: int
    end: int
    initial: float
    full: float

    def __call__(self, epoch: int) -> float:
        if epoch <= self.after:
            return self.initial
        if epoch >= self.end:
            return self.full
        frac = (epoch - self.after) / (self.end - self.after)
        return self.initial + frac * (self.full - self.initial)


@dataclass(frozen=True)
class StepOn:
    """``value`` from epoch ``start`` on, 0 before."""

    start: int
    value: float

    def __call__(self, epoch: int) -> float:
        return self.value if epoch >= self.start else 0.0
