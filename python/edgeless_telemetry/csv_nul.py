"""Reading our CSV files with NUL in a field, on every supported Python.

The tracer and the collector's dataset write any text in a field, NUL
included (RFC 4180 allows it); Python 3.10's ``csv`` module refuses such
a line (``_csv.Error: line contains NUL``; 3.11 reads it), so a single
NUL in a span name or log message made the whole file unreadable for
``trace summary``, ``trace chrome`` and ``summary`` there. On 3.10 a NUL
goes through the reader as U+FFFE (a noncharacter, never written by us)
and `fields` puts it back; on 3.11 and later both are no-ops.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

_READS_NUL = sys.version_info >= (3, 11)
_STAND_IN = "\ufffe"


def lines(f: Iterable[str]) -> Iterable[str]:
    """``f``'s lines for ``csv.reader``, NUL stood in for where it must be."""
    if _READS_NUL:
        return f
    return (line.replace("\0", _STAND_IN) for line in f)


def fields(row: list[str]) -> list[str]:
    """A row read from `lines`, with its NULs back."""
    if _READS_NUL:
        return row
    return [field.replace(_STAND_IN, "\0") for field in row]
