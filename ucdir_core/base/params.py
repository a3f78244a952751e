"""Frozen parameter dataclasses with declared valid ranges, and the epoch a schedule value names.

Every component (the run's shared part, each method, later an alignment stage) declares its
parameters as a frozen dataclass derived from :class:`Params`. A numeric field states its valid
range in its metadata (:func:`within`); :meth:`Params.check` refuses a value outside it in one line
naming the key and the range, so a config is checked whenever it is built: at the start of a run,
on resume (the saved config is rebuilt) and after every ``--set``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of valid values; ``None`` bounds are unbounded.

    ``finite`` refuses nan and +-inf. Applied to every element of a tuple value, and not to None.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.finite and isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        return not (self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)))

    def __str__(self) -> str:
        def num(v: float) -> str:
            return str(v) if isinstance(v, int) else f"{v:g}"

        if self.hi is None and self.lo is not None:
            return f"> {num(self.lo)}" if self.lo_open else f">= {num(self.lo)}"
        lo = "-inf" if self.lo is None else num(self.lo)
        return f"in {'(' if self.lo_open else '['}{lo}, {num(self.hi)}{')' if self.hi_open else ']'}"


#: ranges used by many keys
POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION_OPEN = Range(0, 1, lo_open=True, hi_open=True)
UNIT = Range(0, 1)


def within(rng: Range, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field whose values must lie in ``rng`` (checked by :meth:`Params.check`)."""
    if default is dataclasses.MISSING:
        return field(metadata={"range": rng}, **kw)
    return field(default=default, metadata={"range": rng}, **kw)


def one_of(*choices: str, default: str) -> Any:
    """A string field restricted to ``choices``."""
    return field(default=default, metadata={"choices": choices})


#: a schedule value: an int is a 0-based epoch; a float in [0, 1] a share of the run's epochs
EpochOrShare = int | float
EPOCH_OR_SHARE = "epoch_or_share"


def epoch_or_share(default: EpochOrShare) -> Any:
    """A schedule field: an int epoch (>= 0) or a float share of the run's epochs in [0, 1]."""
    return field(default=default, metadata={"kind": EPOCH_OR_SHARE})


def at_epoch(value: EpochOrShare, epochs: int) -> int:
    """The 0-based epoch a schedule value names in a run of ``epochs`` epochs: an int is that
    epoch; a float ``s`` in [0, 1] is ``floor(s * epochs)`` (0.5 of 200 epochs is epoch 100, of 5
    epochs epoch 2), so that a preset stated as a share of training holds when ``--epochs`` changes.
    """
    if isinstance(value, float):
        return math.floor(value * epochs + 1e-9)
    return int(value)


class Params:
    """Base of every component's frozen parameters: range checks and copies with changes.

    Subclasses are frozen dataclasses; their ``__post_init__`` calls :meth:`check` (and adds any
    rule that ties two fields together).
    """

    #: what this component is called in messages ("the run", "method ucdir", ...)
    owner: ClassVar[str] = "the run"

    def check(self) -> None:
        """Refuse a value outside its field's declared range or choices.

        Raises:
            ValueError: one line, ``KEY must be RANGE, got VALUE`` (e.g. ``momentum must be in [0, 1),
                got 2``), or ``must be one of``.
        """
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            rng, choices = f.metadata.get("range"), f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
            if f.metadata.get("kind") == EPOCH_OR_SHARE:
                check_epoch_or_share(f.name, value)
            if rng is None or value is None:
                continue
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in rng:
                    raise ValueError(f"{f.name} must be {rng}, got {value!r}")

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (checked again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def schedule_keys(self) -> tuple[str, ...]:
        """The keys whose values are epochs or shares of the run's epochs."""
        return tuple(f.name for f in fields(self) if f.metadata.get("kind") == EPOCH_OR_SHARE)  # type: ignore[arg-type]

    def pinned(self, epochs: int) -> Any:
        """A copy whose schedule shares are replaced by the epochs they name in a run of ``epochs``."""
        return self.replace(**{k: at_epoch(getattr(self, k), epochs) for k in self.schedule_keys()})

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def ranges(cls) -> dict[str, str]:
        """``{key: its valid values, as text}`` for every key with a declared range or choices."""
        out = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if "range" in f.metadata:
                out[f.name] = str(f.metadata["range"])
            elif "choices" in f.metadata:
                out[f.name] = " | ".join(f.metadata["choices"])
            elif f.metadata.get("kind") == EPOCH_OR_SHARE:
                out[f.name] = "an epoch >= 0, or a share of the epochs in [0, 1]"
        return out


def check_epoch_or_share(name: str, value: Any) -> None:
    """Refuse a schedule value that is neither an int epoch >= 0 nor a float share in [0, 1].

    Raises:
        ValueError: one line naming ``name``.
    """
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or \
        (isinstance(value, float) and 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be an epoch (an integer >= 0) or a share of the run's epochs (a number in "
                         f"[0, 1], e.g. 0.5 for half of training), got {value!r}")


def parse_value(type_str: Any, raw: str) -> Any:
    """The value a ``--set key=value`` string gives a field of type ``type_str`` (its annotation).

    Raises:
        ValueError: the text does not read as that type.
    """
    t = str(type_str)
    if raw.lower() in ("none", "null") and "None" in t:
        return None
    if t.startswith("tuple[int"):
        return tuple(_int(v) for v in raw.split(",") if v)
    if t.startswith("tuple[str"):
        return tuple(v for v in raw.split(",") if v)
    if t.startswith("bool"):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if t.startswith("EpochOrShare") or t.startswith("int | float"):
        try:
            return int(raw)
        except ValueError:
            return _float(raw)
    if t.startswith("int"):
        return _int(raw)
    if t.startswith("float"):
        return _float(raw)
    return raw


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"not an integer: {raw!r}") from None


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"not a number: {raw!r}") from None
