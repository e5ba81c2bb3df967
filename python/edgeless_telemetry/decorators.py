"""Decorator support for the Rust timers and span scopes.

``@handle.invocation()`` and ``@tracer.span("name")`` land here: the object
passes a factory that makes a fresh, idle context manager (its ``_fresh``),
and each call of the decorated function runs inside ``with fresh():``, so
calls that overlap (threads, asyncio tasks, recursion) never share one.
Whether to await is decided once, here, from the function itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def decorate(fresh: Callable[[], AbstractContextManager[Any]], func: F) -> F:
    """``func`` wrapped so that each call runs inside ``with fresh():``.

    ``async def`` functions get an ``async def`` wrapper (the block covers
    the awaited call, not just making the coroutine). Generator functions
    are refused with ``TypeError``: calling one only makes the generator,
    so there is no call to time; put the ``with`` block inside instead.
    """
    if not callable(func):
        raise TypeError(f"can only decorate a callable, not {type(func).__name__}")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"cannot decorate generator function {getattr(func, '__qualname__', func)!r}: "
            "a call only creates the generator; use a with block inside it"
        )
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return await func(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        with fresh():
            return func(*args, **kwargs)

    return run  # type: ignore[return-value]
