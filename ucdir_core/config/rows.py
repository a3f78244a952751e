"""The rows of the method tables as configs: each row belongs to one method
(:data:`ucdir_core.method.params.METHOD_ROWS`) and is that method's config with its changes."""

from __future__ import annotations

from ucdir_core.config.run import RunConfig
from ucdir_core.method.params import METHOD_ROWS, ROWS, row_method

__all__ = ["ROWS", "row_config", "row_method"]


def row_config(cfg: RunConfig, row: str) -> RunConfig:
    """``cfg`` as table row ``row`` of the method ``cfg`` trains.

    UCDIR's rows switch losses off (weight 0): ``instance``, ``+cluster``, ``+self_entropy``,
    ``+distance_of_distance``, ``full``; ProtoOT's: ``protoot_in_domain`` (cross-domain weight 0)
    and ``protoot``.

    Raises:
        ValueError: an unknown row, or a row of another method than the one ``cfg`` trains (one line
            naming both and the preset to use, :func:`~ucdir_core.config.presets.preset_for_method`).
    """
    method = row_method(row)
    if method != cfg.method:
        raise ValueError(f"row {row} is a row of method {method}, but this config trains {cfg.method}; start from "
                         f"a {method} config (e.g. preset_for_method(NAME, {method!r}))")
    return cfg.replace(**METHOD_ROWS[method][row])
