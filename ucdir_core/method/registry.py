"""The training methods by their config name (``method`` key; ``ucdir train --method NAME``)."""

from __future__ import annotations

from ucdir_core.base.config import UCDIRConfig
from ucdir_core.method.interface import Method
from ucdir_core.method.protoot import ProtoOT
from ucdir_core.method.ucdir import UCDIR

#: config name -> method class
METHODS: dict[str, type[Method]] = {UCDIR.name: UCDIR, ProtoOT.name: ProtoOT}


def build_method(cfg: UCDIRConfig) -> Method:
    """The method ``cfg.method`` names, built from ``cfg``.

    Raises:
        ValueError: an unknown method name (the message lists the known ones).
    """
    try:
        cls = METHODS[cfg.method]
    except KeyError:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(sorted(METHODS))}") from None
    return cls(cfg)
