"""Types of the Rust extension; checked against it by mypy's stubtest."""

import os
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, final

from typing_extensions import Self, disjoint_base

_F = TypeVar("_F", bound=Callable[..., Any])

__version__: str
"""The package version (Cargo.toml's, the one source of truth)."""

@final
class TelemetryEvent:
    @staticmethod
    def function_instantiate(seconds: float) -> TelemetryEvent: ...
    @staticmethod
    def function_init(seconds: float) -> TelemetryEvent: ...
    @staticmethod
    def function_invocation_completed(seconds: float) -> TelemetryEvent: ...
    @staticmethod
    def function_stop(seconds: float) -> TelemetryEvent: ...
    @staticmethod
    def function_transfer(seconds: float) -> TelemetryEvent: ...
    @staticmethod
    def function_exit(status: int) -> TelemetryEvent: ...
    @staticmethod
    def function_log_entry(level: int | str, target: str, message: str) -> TelemetryEvent: ...
    @property
    def kind(self) -> str: ...
    @property
    def function_time(self) -> int | None: ...
    @property
    def duration_s(self) -> float | None: ...
    @property
    def status(self) -> int | None: ...
    @property
    def level(self) -> int | None: ...
    @property
    def target(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class TelemetryHandle:
    def fork(self, child_tags: dict[str, str]) -> TelemetryHandle: ...
    @property
    def tags(self) -> dict[str, str]: ...
    def observe(self, event: TelemetryEvent, event_tags: dict[str, str] | None = None) -> None: ...
    def function_instantiate(self, seconds: float) -> None: ...
    def function_init(self, seconds: float) -> None: ...
    def invocation_completed(self, seconds: float, event_type: str | None = None) -> None: ...
    def function_stop(self, seconds: float) -> None: ...
    def function_transfer(self, seconds: float) -> None: ...
    def function_exit(self, status: int) -> None: ...
    def log(self, level: int | str, target: str, message: str) -> None: ...
    def observe_many(
        self,
        kind: int,
        values: Any,
        *,
        timestamps_ns: Any | None = None,
        event_type: str | None = None,
    ) -> int: ...
    def invocation(self, event_type: str | None = None, *, on_error: int | None = ...) -> Timer:
        """Times a block (``with fn.invocation():``) or each call of a
        decorated function, sync or ``async def`` (``@fn.invocation()``), and
        records it as ``invocation_completed``.

        ``event_type="CALL"`` marks calls, anything else casts; without it
        the handle's ``EVENT_TYPE`` tag decides, as for
        ``invocation_completed``. An exception leaving the block still
        records the duration and propagates. ``on_error`` (default ``None``:
        the instance goes on) is the ``FunctionExitStatus`` to record with
        ``function_exit`` when an ``Exception`` leaves the block, for
        runtimes where a failed call ends the instance (as in EDGELESS:
        ``FunctionExitStatus.CODE_ERROR``).

        Raises ``TypeError``/``ValueError`` for an ``on_error`` that is not a
        ``FunctionExitStatus`` or ``None``. Costs about 3x a bare
        ``invocation_completed`` call (the README's bench table).
        """
    def timed_instantiate(self, *, on_error: int | None = ...) -> Timer:
        """Like ``invocation``, recording ``function_instantiate``
        (``function_count`` +1). An ``Exception`` leaving the block records
        the duration, then ``function_exit(on_error)``, by default
        ``FunctionExitStatus.INTERNAL_ERROR`` (the runtime could not make
        the instance), so ``function_count`` is back where it was.
        ``on_error=None`` records no exit."""
    def timed_init(self, *, on_error: int | None = ...) -> Timer:
        """Like ``invocation``, recording ``function_init``. An
        ``Exception`` leaving the block ends the instance: the duration,
        then ``function_exit(on_error)``, by default
        ``FunctionExitStatus.CODE_ERROR`` (init runs the function's code).
        ``on_error=None`` records no exit."""
    def timed_stop(self, *, on_error: int | None = ...) -> Timer:
        """Like ``invocation``, recording ``function_stop``. A stop that
        succeeds records no exit (the runtime records
        ``function_exit(OK)`` when the instance is gone); an ``Exception``
        leaving the block records the duration, then
        ``function_exit(on_error)``, by default
        ``FunctionExitStatus.CODE_ERROR``. ``on_error=None`` records no exit."""
    def timed_transfer(self, *, on_error: int | None = ...) -> Timer:
        """Like ``invocation``, recording ``function_transfer``; by default
        an exception records no exit (``on_error=None``)."""

@final
class Timer:
    """Times one block at a time, or each call of a decorated function, and
    records the duration (monotonic clock, seconds) through its handle.

    Made by ``TelemetryHandle.invocation``, ``timed_instantiate``,
    ``timed_init``, ``timed_stop`` and ``timed_transfer``. Only
    ``Exception`` subclasses count as failures: ``KeyboardInterrupt``,
    ``SystemExit`` and ``asyncio.CancelledError`` record the duration but no
    exit. After a block that recorded an exit, do not record another.
    """

    def __enter__(self) -> Self:
        """Starts the clock. Raises ``RuntimeError`` if this timer is already
        timing a block (make one per block, or decorate)."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool:
        """Records the duration (and the exit status, see the class); never
        raises, never swallows the exception (returns ``False``)."""
    def __call__(self, func: _F) -> _F:
        """Decorates ``func`` (sync or ``async def``): each call is timed by
        a fresh timer, so overlapping calls (threads, tasks) never share
        one. Raises ``TypeError`` for generator functions."""
    def _fresh(self) -> Timer:
        """A new idle timer like this one (used per decorated call)."""

@final
class TelemetryProcessor:
    def __new__(cls, targets: Iterable[object], *, log: bool = True) -> Self: ...
    def get_handle(self, tags: dict[str, str] | None = None) -> TelemetryHandle: ...
    @property
    def targets(self) -> tuple[object, ...]: ...
    def stats(self) -> dict[str, int]: ...

@disjoint_base
class PerformanceTarget:
    def __new__(
        cls,
        capacity: int = 100000,
        *,
        log_capacity: int = 10000,
        log_bytes: int = 4194304,
        max_message_bytes: int = 65536,
        max_functions: int = 10000,
    ) -> Self: ...
    @property
    def capacity(self) -> int: ...
    def stats(self) -> dict[str, int]: ...
    def _drain_raw(
        self,
    ) -> tuple[list[list[tuple[str, bytearray, bytearray]]], list[tuple[str, list[tuple[int, str, str]]]]]: ...

@disjoint_base
class PrometheusTarget:
    def __new__(
        cls,
        metrics_url: str = "",
        *,
        buckets: Iterable[float] | None = None,
        namespace: str | None = None,
        const_labels: dict[str, str] | None = None,
        max_series: int = 10000,
        web_config: str | os.PathLike[str] | None = None,
    ) -> Self:
        """``web_config``: an exporter-toolkit web configuration file (YAML,
        read with PyYAML): ``tls_server_config`` (``cert_file``, ``key_file``,
        ``client_auth_type`` NoClientCert / VerifyClientCertIfGiven /
        RequireAndVerifyClientCert, ``client_ca_file``, ``min_version`` and
        ``max_version`` TLS12 / TLS13; relative paths are to the file's
        folder) and ``basic_auth_users`` (user: bcrypt hash). With TLS,
        ``metrics_url`` may be ``https://`` and ``url`` is. A missing file
        raises OSError naming it; a bad one (not PEM, key not matching the
        certificate, an option we do not support) ValueError naming it."""
    def reload_web_config(self) -> None:
        """Reads the web config and its files again (certificate rotation);
        new connections use them. On error the running one stays.
        RuntimeError without a ``web_config``."""
    def serve(self, metrics_url: str) -> None: ...
    def render(self, openmetrics: bool = False) -> bytes: ...
    @property
    def url(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    def stats(self) -> dict[str, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...

@final
class CollectorCore:
    def __new__(
        cls,
        *,
        redis_url: str | None = None,
        dataset_path: str | None = None,
        append: bool = False,
        additional_header: str | None = None,
        additional_fields: str | None = None,
        max_redis_queue_bytes: int = 268435456,
        members_per_command: int = 1000,
        redis_ack_timeout_s: float = 2.0,
        max_entries_per_body: int = 1048576,
        max_decoded_bytes: int = 268435456,
        layout: str = "plain",
    ) -> Self: ...
    def ingest(self, body: bytes, node_id: str | None = None) -> tuple[int, str]: ...
    def flush(self, timeout_s: float) -> bool: ...
    def close(self, timeout_s: float) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def redis_last_error(self) -> str: ...

@final
class CollectorServer:
    def __new__(
        cls,
        core: CollectorCore,
        host: str,
        port: int,
        *,
        token: str | None = None,
        node_tokens: dict[str, str] | None = None,
        max_body_bytes: int = 16777216,
        max_inflight_bytes: int = 67108864,
        read_timeout_s: float = 10.0,
        max_connections: int = 256,
        web_config: str | os.PathLike[str] | None = None,
    ) -> Self:
        """``web_config`` as for ``PrometheusTarget``; its
        ``basic_auth_users`` and a token cannot be combined (ValueError)."""
    @property
    def url(self) -> str: ...
    def reload_web_config(self) -> None: ...
    @property
    def token_required(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

def drain_encode(
    target: PerformanceTarget,
    node_id: str,
    nonce: int,
    first_sequence: int,
    refresh_deadline: int,
    max_batch_bytes: int,
) -> list[tuple[int, int, int, bytes]]: ...

@final
class ReporterCore:
    """The NodeReporter's drain, encode, pending queue and HTTP sending.

    One call per period (`flush`) does it all, with the GIL released but
    for the drain. A forked child that touches it gets a fresh state (new
    nonce, sequence from 1, nothing pending, no connection); the parent's
    is left untouched.
    """

    def __new__(
        cls,
        target: PerformanceTarget,
        orchestrator_url: str,
        node_id: str,
        *,
        max_pending_bytes: int = 67108864,
        max_batch_bytes: int = 4194304,
        timeout_s: float = 5.0,
        refresh_s: int = 6,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        client_cert_file: str | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> Self:
        """Raises ValueError naming ``orchestrator_url`` unless it is
        ``http://host[:port][/path]``, and for a bad node id, timeout, size
        or token; ``refresh_s`` is added to now for ``refresh_deadline``."""
    def flush(self, budget_s: float | None = None) -> bool:
        """Drains the target, queues its bodies (oldest dropped past
        ``max_pending_bytes``, counted) and sends pending bodies oldest
        first, each request within ``timeout_s``, all within ``budget_s``
        seconds when given. True if nothing is left pending."""
    def close(self) -> None:
        """Closes the kept-alive connection (after a send in progress)."""
    def after_fork_in_child(self) -> None:
        """For the fork hook in a child: discards (and counts) the samples
        and log entries the target inherited; the parent sends them."""
    def stats(self) -> dict[str, int]:
        """Counters and pending gauges; never waits for a send in progress."""
    @property
    def nonce(self) -> int:
        """This process's random node-instance nonce."""
    @property
    def last_error(self) -> str:
        """The last failure ("" if none yet), kept after later successes."""
    @property
    def failing_since(self) -> float | None:
        """Start of the current run of failed sends (seconds since the
        epoch), None if the last send went through."""
    @property
    def node_id(self) -> str: ...

@final
class Span:
    def child(self, name: str) -> Span: ...
    def traceparent(self) -> str:
        """The W3C ``traceparent`` header naming this span as the parent, to
        hand to another process: ``00-<trace id>-<span id>-01``, where the
        trace id is the root span's ``correlation_id`` (32 hex digits) and
        the span id the low 64 bits of this span's ``correlation_id``.
        Continue it with ``tracer.start_span(name, traceparent=...)``."""
    @property
    def trace_id(self) -> str:
        """The W3C trace id: the root span's ``correlation_id`` as 32 hex
        digits (for a span continued from a bare ``parent_id``, that id)."""
    def log(self, level: int | str, message: str) -> None: ...
    def end(self) -> None: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def ended(self) -> bool: ...
    def __enter__(self) -> Span: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool: ...

@final
class ControlPlaneTracer:
    def __new__(
        cls,
        output_path: str | os.PathLike[str] | None = None,
        *,
        append: bool = False,
        max_pending_bytes: int = 16777216,
        max_message_bytes: int = 65536,
    ) -> Self: ...
    def start_span(
        self,
        name: str,
        *,
        parent_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> Span:
        """Starts a span and writes its ``span_start`` row.

        Its parent, first match wins: ``parent_id`` (a correlation id from
        elsewhere), ``traceparent`` (a W3C header from ``Span.traceparent``
        in another process: the span's ``parent_id`` column is then the
        parent's correlation id, so both processes' CSVs read as one
        trace), the current span (inside a ``tracer.span(...)`` block of
        this thread or task), else none: a new trace.

        Raises ``TypeError``/``ValueError`` for a bad name, a ``parent_id``
        that is not a UUID, a malformed ``traceparent`` (the message quotes
        it), or both ``parent_id`` and ``traceparent``. Costs well under a
        microsecond; checking for a current span costs nothing until a
        ``tracer.span`` block has ever been entered in the process.
        """
    def span(
        self,
        name: str,
        *,
        parent_id: str | uuid.UUID | None = None,
        traceparent: str | None = None,
    ) -> SpanScope:
        """A span that is current while it runs: ``with tracer.span("x") as
        s:`` or ``@tracer.span("x")`` on a sync or ``async def`` function
        (each call gets its own span). Inside, ``start_span`` and ``log`` of
        any tracer attach to it, per thread and per asyncio task (a
        ``contextvars.ContextVar``; a task sees the span current where it
        was created). Without ``parent_id``/``traceparent`` the span is a
        child of the span current on entry. Raises like ``start_span``."""
    def current_span(self) -> Span | None:
        """The span of the innermost ``tracer.span(...)`` block running in
        this thread or asyncio task, or ``None``."""
    def log(self, level: int | str, message: str) -> None:
        """A ``log`` row: on the current span inside a ``tracer.span(...)``
        block, else a row of no span (empty ids and name), as upstream.
        Raises for a bad level or a non-str message."""
    def flush(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def output_path(self) -> str | None: ...
    def stats(self) -> dict[str, int]: ...
    def __enter__(self) -> ControlPlaneTracer: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool: ...

@final
class SpanScope:
    """What ``ControlPlaneTracer.span`` returns: a context manager that
    starts a span, makes it current and ends it, and a decorator doing the
    same around each call."""

    def __enter__(self) -> Span:
        """Starts the span and makes it current; returns it. Raises
        ``RuntimeError`` if this scope's block is already running."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool:
        """Restores the previous current span and ends this one; an
        exception is first logged on it at ERROR and propagates."""
    def __call__(self, func: _F) -> _F:
        """Decorates ``func`` (sync or ``async def``): each call runs in its
        own span, current for the call. Raises ``TypeError`` for generator
        functions."""
    def _fresh(self) -> SpanScope:
        """A new scope like this one (used per decorated call)."""
