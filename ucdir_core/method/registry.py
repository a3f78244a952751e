"""The training methods by their config name (``method`` key; ``ucdir train --method NAME``)."""

from __future__ import annotations

from ucdir_core.base.params import Params
from ucdir_core.method.interface import Method
from ucdir_core.method.protoot import ProtoOT
from ucdir_core.method.ucdir import UCDIR

#: config name -> method class
METHODS: dict[str, type[Method]] = {UCDIR.name: UCDIR, ProtoOT.name: ProtoOT}


def build_method(params: Params, num_clusters: tuple[int, ...], epochs: int) -> Method:
    """The method whose parameters ``params`` are, for a run of ``epochs`` epochs with k-means of
    ``num_clusters`` (a run config gives ``cfg.method_params, cfg.num_clusters, cfg.epochs``).

    Raises:
        ValueError: parameters of no registered method, or parameters the method refuses (one line).
    """
    name = getattr(type(params), "method", None)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](params, num_clusters, epochs)
