"""Text for a terminal: paths and names printed so that no character in them can break a line or hide
a difference, and the one line an error shows.

A file name may hold any character but ``/`` and NUL: a newline would split a printed row in two, a
carriage return or an escape sequence would overwrite what is shown, and two class folders may look
alike while their names differ (``café`` typed as one code point or as ``e`` and a combining accent;
a trailing space; a zero-width space). JSON output quotes every string already; text output goes
through these functions.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from ucdir_core.base.errors import DataError

#: how torch re-raises, in the main process, an error raised in a DataLoader worker process
_WORKER_ERROR = re.compile(r"\ACaught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def printable(text: object) -> str:
    """``text`` (a path, a file or folder name) as one printed line may show it.

    Unchanged when every character prints (plain spaces and non-ASCII letters do); otherwise as a
    Python string literal, quoted, with a newline, tab, other control character or invisible format
    character written as its backslash escape (``'a\\nb.png'``), so that a name can neither split a
    row nor pass for another. Raises nothing.
    """
    s = str(text)
    return s if s.isprintable() else repr(s)


def escape_controls(text: object) -> str:
    """``text`` with every character that does not print written as its backslash escape (``\\n``,
    ``\\r``, ``\\x1b``, ``\\u200b``) and every other character kept: a message meant as one line (which
    may name a path) stays one line. Raises nothing."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def nfc(name: str) -> str:
    """``name`` in Unicode normalisation form NFC: the form names are compared in, so that a folder
    name typed as ``é`` (one code point) and one written as ``e`` plus a combining accent (as some file
    systems and archives store it) are the same name. Raises nothing."""
    return unicodedata.normalize("NFC", name)


def _looks(name: str) -> str:
    """What a reader sees of ``name``, roughly: compatibility forms folded (``ﬁ`` -> ``fi``), accents,
    spaces and invisible characters dropped."""
    folded = unicodedata.normalize("NFKD", name)
    return "".join(c for c in folded if c.isprintable() and not c.isspace() and not unicodedata.combining(c))


def distinguishable(names: Iterable[str]) -> dict[str, str]:
    """How to show each of ``names`` in one message so that two that differ look different: a name
    that looks like another of them (the same but for accents, spaces, Unicode normalisation or
    invisible characters) is shown by :func:`ascii` (``'caf\\xe9'``, ``'cafe\\u0301'``), every other
    one by :func:`printable`. Returns ``{name: shown}``. Raises nothing."""
    names = list(dict.fromkeys(names))
    seen: dict[str, int] = {}
    for n in names:
        seen[_looks(n)] = seen.get(_looks(n), 0) + 1
    return {n: ascii(n) if seen[_looks(n)] > 1 else printable(n) for n in names}


def worker_message(text: str) -> str:
    """The message of an error as raised in a DataLoader worker process, from ``text``, the message
    torch gives the same error type when it re-raises it in the main process (``Caught X in
    DataLoader worker process N.`` and the worker's traceback, whose last line holds the message);
    ``text`` itself when it is no such message. Raises nothing."""
    found = _WORKER_ERROR.match(text)
    if not found:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the last "[module.]X: message" line is the original's
        head, sep, rest = line.partition(": ")
        if sep and head.split(".")[-1] == found.group(1):
            return rest
    return lines[0]


def error_line(exc: BaseException) -> str:
    """The one line a command prints for ``exc``: its message (for an error re-raised from a
    DataLoader worker, the worker's own message) with control characters escaped. The message of a
    :class:`DataError` (one line by design) or an :class:`OSError` (one line naming a path) is kept
    whole, so that a newline in a path it names cannot cut it; any other is cut at its first line.
    The type's name when the message is empty. Raises nothing."""
    text = worker_message(str(exc)).strip()
    if not text:
        return type(exc).__name__
    return escape_controls(text if isinstance(exc, (DataError, OSError)) else text.splitlines()[0])
