"""Type checks for the Python wrappers' set-up arguments, naming the
argument. PyO3 names a wrong argument only in an exception note, which
Python 3.10 does not show; and these wrappers use some arguments (compare
sizes, split a URL, open a dataset) before the Rust core sees them.
The core's own arguments are checked by name in ``rust/args.rs``."""

from __future__ import annotations

import operator
import os


def require(owner: str, name: str, value: object, kind: type, what: str) -> None:
    """TypeError unless ``value`` is a ``kind`` (a bool is no int here)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{owner}: {name} must be {what}, got {type(value).__name__}")


def integer(owner: str, name: str, value: object) -> int:
    """``value`` as an int: anything with ``__index__`` (``numpy.int64``,
    and a bool, as the core's own sizes take it); TypeError naming
    ``name`` otherwise."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__}") from None


def path_or_none(owner: str, name: str, value: str | os.PathLike[str] | None) -> str | None:
    """``os.fspath(value)``, or None; TypeError naming ``name`` otherwise."""
    if value is None:
        return None
    try:
        path = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str):
        raise TypeError(
            f"{owner}: {name} must be a path (a str or os.PathLike), got {type(value).__name__}")
    return path
