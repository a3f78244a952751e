"""Every method's parameter class and table rows by the method's name; torch-free, so that the
config layer can read them without loading a model (the methods themselves: :mod:`.registry`)."""

from __future__ import annotations

from typing import Any

from ucdir_core.base.params import Params
from ucdir_core.method import protoot_params, ucdir_params

#: method name -> its frozen parameter class
METHOD_PARAMS: dict[str, type[Params]] = {"ucdir": ucdir_params.UCDIRParams, "protoot": protoot_params.ProtoOTParams}
#: method name -> its table rows (row name -> parameter changes), in table order
METHOD_ROWS: dict[str, dict[str, dict[str, Any]]] = {"ucdir": ucdir_params.ROWS, "protoot": protoot_params.ROWS}
#: method name -> the row that is the whole method (every loss on)
FULL_ROW: dict[str, str] = {"ucdir": "full", "protoot": "protoot"}
#: method name -> its name in titles and prose
TITLES: dict[str, str] = {"ucdir": "UCDIR", "protoot": "ProtoOT"}
#: every table row, in the tables' order
ROWS: tuple[str, ...] = tuple(r for rows in METHOD_ROWS.values() for r in rows)


def params_class(method: str) -> type[Params]:
    """The parameter class of ``method``.

    Raises:
        ValueError: an unknown method (the message lists the known ones).
    """
    try:
        return METHOD_PARAMS[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(sorted(METHOD_PARAMS))}") from None


def owners(key: str) -> list[str]:
    """The methods whose parameters include ``key`` (empty: no method's)."""
    return [name for name, cls in METHOD_PARAMS.items() if key in cls.keys()]


def row_method(row: str) -> str:
    """The method a table row trains.

    Raises:
        ValueError: an unknown row (the message lists them).
    """
    for method, rows in METHOD_ROWS.items():
        if row in rows:
            return method
    raise ValueError(f"unknown table row {row!r}; known: {', '.join(ROWS)}")
