"""Type checks for what the Python wrappers use themselves (split a URL,
copy a mapping) before the Rust core sees it, naming the argument: PyO3
names a wrong argument only in an exception note, which Python 3.10 does
not show. Everything the core takes is checked by name in
``rust/args.rs``."""

from __future__ import annotations


def require(owner: str, name: str, value: object, kind: type, what: str) -> None:
    """TypeError unless ``value`` is a ``kind``."""
    if not isinstance(value, kind):
        raise TypeError(f"{owner}: {name} must be {what}, got {type(value).__name__}")
