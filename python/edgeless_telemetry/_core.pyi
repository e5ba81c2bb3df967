"""Types of the Rust extension; checked against it by mypy's stubtest."""

import os
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, final

from typing_extensions import Self, disjoint_base

from .stats import (
    CollectorCoreStats,
    ControlPlaneTracerStats,
    NodeReporterStats,
    OrchestratorCollectorStats,
    PerformanceTargetStats,
    PrometheusTargetStats,
    TelemetryProcessorStats,
)

_F = TypeVar("_F", bound=Callable[..., Any])

__version__: str
"""The package version (Cargo.toml's, the one source of truth)."""

@final
class TelemetryEvent:
    """One telemetry event (EDGELESS ``TelemetryEvent``), for
    ``TelemetryHandle.observe`` and for Python targets, which receive one.

    Made by the static constructors; immutable. Unlike the handle's fast
    methods these validate and raise: they are for the generic path, not
    the hot one.
    """

    @staticmethod
    def function_instantiate(seconds: float) -> TelemetryEvent:
        """An instantiate duration in seconds. Raises ``ValueError`` for a
        NaN, infinite or negative one, ``TypeError`` for a non-number."""
    @staticmethod
    def function_init(seconds: float) -> TelemetryEvent:
        """An init duration in seconds; raises like ``function_instantiate``."""
    @staticmethod
    def function_invocation_completed(seconds: float) -> TelemetryEvent:
        """An invocation duration in seconds (call or cast as the ``EVENT_TYPE``
        tag says); raises like ``function_instantiate``."""
    @staticmethod
    def function_stop(seconds: float) -> TelemetryEvent:
        """A stop duration in seconds; raises like ``function_instantiate``."""
    @staticmethod
    def function_transfer(seconds: float) -> TelemetryEvent:
        """A transfer duration in seconds; raises like ``function_instantiate``."""
    @staticmethod
    def function_exit(status: int) -> TelemetryEvent:
        """An instance's exit with a ``FunctionExitStatus``. Raises
        ``ValueError`` for a status out of range."""
    @staticmethod
    def function_log_entry(level: int | str, target: str, message: str) -> TelemetryEvent:
        """A log entry; ``level`` a ``TelemetryLogLevel``, 0..4 or its name.
        Raises ``ValueError``/``TypeError`` for a bad level or non-str texts."""
    @property
    def kind(self) -> str:
        """The event's name, e.g. ``"function_invocation_completed"``."""
    @property
    def function_time(self) -> int | None:
        """The ``FunctionTime`` of a duration event, else ``None``."""
    @property
    def duration_s(self) -> float | None:
        """The duration in seconds of a duration event, else ``None``."""
    @property
    def status(self) -> int | None:
        """The ``FunctionExitStatus`` of an exit event, else ``None``."""
    @property
    def level(self) -> int | None:
        """The ``TelemetryLogLevel`` of a log entry, else ``None``."""
    @property
    def target(self) -> str | None:
        """The target (logger name) of a log entry, else ``None``."""
    @property
    def message(self) -> str | None:
        """The message of a log entry, else ``None``."""
    def __eq__(self, other: object, /) -> bool:
        """Equal when kind and every field are equal."""

@final
class TelemetryHandle:
    """Tagged entry point for one function instance (or node, or component),
    made by ``TelemetryProcessor.get_handle`` or ``fork``.

    Its tags are resolved to series once, when it is made; an event is then
    one call into Rust, about 60 ns through a PerformanceTarget and a
    PrometheusTarget (the README's bench table). The event methods never
    raise for bad event data: it is dropped and counted in
    ``TelemetryProcessor.stats()``. They raise only an interrupt
    (``KeyboardInterrupt``, ``SystemExit``: not an ``Exception``) that a
    signal handler raised inside a Python target or ``logging`` handler
    the event ran, once the event has been through every target.
    Thread-safe; a live handle with both targets costs about 2 KB, its
    series included.
    """

    def fork(self, child_tags: dict[str, str]) -> TelemetryHandle:
        """A new handle with the merged tags (child tags win), e.g. a
        function's under its node's. Raises ``TypeError`` for non-str keys
        or values, ``ValueError`` for a ``FUNCTION_ID`` that is not a UUID, a
        tag over 4096 bytes or more than 64 tags. Resolves series: setup
        cost, not per event."""
    @property
    def tags(self) -> dict[str, str]:
        """A copy of the handle's tags."""
    def observe(self, event: TelemetryEvent, event_tags: dict[str, str] | None = None) -> None:
        """The generic path (EDGELESS ``TelemetryHandleAPI::observe``).
        Event tags other than ``EVENT_TYPE`` are merged over the handle's and
        resolved for this event only, which is slower; prefer a forked
        handle. ``event_tags`` that are not a dict of str are dropped and
        counted (``dropped_invalid_type``), never raised."""
    def function_instantiate(self, seconds: float) -> None:
        """Records an instantiate duration (``function_count`` +1). One call
        into Rust, about 60 ns; a bad duration is dropped and counted, never
        raised."""
    def function_init(self, seconds: float) -> None:
        """Records an init duration; costs and drops like
        ``function_instantiate``."""
    def invocation_completed(self, seconds: float, event_type: str | None = None) -> None:
        """Records an invocation duration. ``event_type="CALL"`` marks a
        call, any other str a cast; without it the handle's ``EVENT_TYPE``
        tag decides (a cast when absent). A non-str ``event_type`` or a bad
        duration is dropped and counted, never raised. One call into Rust,
        about 60 ns through both targets (the keyword adds about 20 ns)."""
    def function_stop(self, seconds: float) -> None:
        """Records a stop duration; costs and drops like
        ``function_instantiate``."""
    def function_transfer(self, seconds: float) -> None:
        """Records a transfer duration; costs and drops like
        ``function_instantiate``."""
    def function_exit(self, status: int) -> None:
        """Records the instance's exit with a ``FunctionExitStatus``
        (``function_count`` -1); a status out of range is dropped and
        counted (``dropped_invalid_value``), never raised."""
    def log(self, level: int | str, target: str, message: str) -> None:
        """Records a function log entry; ``level`` a ``TelemetryLogLevel``,
        0..4 or its name. Messages over the PerformanceTarget's
        ``max_message_bytes`` and targets over 256 bytes are cut (counted
        there), lone surrogates
        escaped (``lossy_strings``), non-str values go through ``str()``; a
        bad level is dropped and counted, never raised."""
    def observe_many(
        self,
        kind: int,
        values: Any,
        *,
        timestamps_ns: Any | None = None,
        event_type: str | None = None,
    ) -> int:
        """Records many durations of one ``FunctionTime`` at once (for
        runtimes that aggregate). ``values`` is any 1-D array-like of
        seconds; ``timestamps_ns``, if given, one int64 per value (else all
        get now); a scalar is one value. Invalid values and timestamps
        (NaN, infinite, negative) are dropped and counted; a ``kind`` out
        of range, an array that is not 1-D or a length mismatch raises
        ``ValueError``, text (``"1.5"``, a list of str, an object array
        holding str) ``TypeError``, recording nothing; an interrupt (see
        the class) stops it at that value and is raised. Returns how many
        were recorded. About 21 ns a sample from a numpy array, through
        both targets."""
    def invocation(self, event_type: str | None = None, *, on_error: int | None = ...) -> Timer:
        """Times a block (``with fn.invocation():``) or each call of a
        decorated function, sync or ``async def`` (``@fn.invocation()``), and
        records it as ``invocation_completed``.

        ``event_type="CALL"`` marks calls, any other str casts; without it
        the handle's ``EVENT_TYPE`` tag decides, as for
        ``invocation_completed``. An exception leaving the block still
        records the duration and propagates. ``on_error`` (default ``None``:
        the instance goes on) is the ``FunctionExitStatus`` to record with
        ``function_exit`` when an ``Exception`` leaves the block, for
        runtimes where a failed call ends the instance (as in EDGELESS:
        ``FunctionExitStatus.CODE_ERROR``).

        Raises ``TypeError``/``ValueError`` for an ``on_error`` that is not a
        ``FunctionExitStatus`` or ``None``, ``TypeError`` for an
        ``event_type`` that is not a str or ``None``. Costs about 3x a bare
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
    ``timed_init``, ``timed_stop`` and ``timed_transfer``. A ``with``
    block costs about 195 ns (2.6-2.7x a bare ``invocation_completed``);
    a decorated call adds one Python frame. Only
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
        swallows the exception (returns ``False``), raises only an interrupt
        a target got while recording (see ``TelemetryHandle``)."""
    def __call__(self, func: _F) -> _F:
        """Decorates ``func`` (sync or ``async def``): each call is timed by
        a fresh timer, so overlapping calls (threads, tasks) never share
        one. Raises ``TypeError`` for generator functions."""
    def _fresh(self) -> Timer:
        """A new idle timer like this one (used per decorated call)."""

@final
class TelemetryProcessor:
    """Fans each event out to its targets, in order (EDGELESS chain
    semantics: a target answering ``ChainResult.FINAL`` ends the chain, so
    put the PerformanceTarget before the PrometheusTarget).

    Targets are ``PerformanceTarget``, ``PrometheusTarget`` or any Python
    object with a ``handle(event, tags)`` method returning a
    ``ChainResult`` (called with the GIL; one that raises is counted in
    ``stats()["target_errors"]`` and the chain goes on).
    """

    def __new__(cls, targets: Iterable[object], *, log: bool = True) -> Self:
        """``log=True`` also passes function log entries to Python's
        ``logging`` (logger ``edgeless_telemetry``; other events at DEBUG,
        only while DEBUG is on). Raises ``TypeError`` for a target that is
        neither native nor has a ``handle`` method."""
    def get_handle(self, tags: dict[str, str] | None = None) -> TelemetryHandle:
        """A handle carrying ``tags`` (for example ``NODE_ID``,
        ``FUNCTION_ID``). Raises ``TypeError`` for non-str keys or values,
        ``ValueError`` for a ``FUNCTION_ID`` that is not a UUID or oversized
        tags (over 4096 bytes, more than 64)."""
    @property
    def targets(self) -> tuple[object, ...]:
        """The target objects, in chain order."""
    def stats(self) -> TelemetryProcessorStats:
        """Events the hot path dropped, by reason (cumulative); a fresh dict,
        reads atomics only, never waits."""

@disjoint_base
class PerformanceTarget:
    """Bounded store of raw samples per function (EDGELESS
    PerformanceTarget); ``edgeless_telemetry.PerformanceTarget`` subclasses
    it to add ``get_metrics``. 16 bytes per buffered sample."""

    def __new__(
        cls,
        capacity: int = 100000,
        *,
        log_capacity: int = 10000,
        log_bytes: int = 4194304,
        max_message_bytes: int = 65536,
        max_functions: int = 10000,
    ) -> Self:
        """``capacity`` samples per function and ``FunctionTime`` (a ring:
        the oldest is overwritten, counted); ``log_capacity`` entries and
        ``log_bytes`` bytes of log per function; messages cut at
        ``max_message_bytes``, targets at 256 bytes; at most
        ``max_functions`` functions at once.
        Raises ``ValueError`` naming the limit for one of zero, negative or
        past 2**64."""
    @property
    def capacity(self) -> int:
        """Samples kept per function and ``FunctionTime``."""
    def stats(self) -> PerformanceTargetStats:
        """Cumulative counters (recorded, dropped, refused) and what waits
        to be drained; a drain does not reset them. Takes the GIL to count
        what is pending."""
    def _drain_raw(
        self,
    ) -> tuple[list[list[tuple[str, bytearray, bytearray]]], list[tuple[str, list[tuple[int, str, str]]]]]: ...

@disjoint_base
class PrometheusTarget:
    """EDGELESS's Prometheus families (``function_count``,
    ``execution_times``, ``transfer_times``) as lock-free atomic series,
    served on ``GET /metrics`` by a Rust HTTP server that never takes the
    GIL. Ends the chain (``FINAL``) for the events it handles. About 310
    bytes per histogram series, at most ``max_series`` per family.
    """

    def __new__(
        cls,
        metrics_url: str = "",
        *,
        buckets: Iterable[float] | None = None,
        namespace: str | None = None,
        const_labels: dict[str, str] | None = None,
        max_series: int = 10000,
        native: bool = False,
        native_schema: int = 3,
        native_max_buckets: int = 100,
        native_zero_threshold: float = 2.938735877055719e-39,
        web_config: str | os.PathLike[str] | None = None,
    ) -> Self:
        """``metrics_url`` like ``http://127.0.0.1:7003`` (port 0 picks a
        free one; ``""`` serves nothing, use ``render()``). Raises
        ``ValueError`` for a malformed URL, bad buckets (empty, unsorted,
        negative, NaN, over 128), an invalid namespace or label name;
        ``OSError`` when the port cannot be bound.

        `native=True` adds Prometheus native histogram buckets to
        `execution_times` and `transfer_times`, beside the classic `buckets`
        (text and OpenMetrics scrapes are unchanged). They are served in the
        Prometheus protobuf format to scrapers that ask for it (Prometheus
        with `--enable-feature=native-histograms`), and by
        `render(protobuf=True)`.

        `native_schema` (-4 to 8): starting resolution; each power of two is
        split into 2**schema buckets (3: bucket bounds 9% apart).
        `native_max_buckets` (16 to 4096): counters per series, 4 bytes each
        (12 once one bucket of the series has passed 2**31 observations);
        a series whose durations spread wider halves its resolution
        (schema - 1) until they fit. `native_zero_threshold`: durations at
        or below it (and negative or NaN ones) count in the zero bucket.
        Raises `ValueError` for settings out of range, even with
        `native=False`.

        ``web_config``: an exporter-toolkit web configuration file (YAML,
        read with PyYAML): ``tls_server_config`` (``cert_file``, ``key_file``,
        ``client_auth_type`` NoClientCert / VerifyClientCertIfGiven /
        RequireAndVerifyClientCert, ``client_ca_file``, ``min_version`` and
        ``max_version`` TLS12 / TLS13; relative paths are to the file's
        folder) and ``basic_auth_users`` (user: bcrypt hash). With TLS,
        ``metrics_url`` may be ``https://`` and ``url`` is. A missing file
        raises OSError naming it; a bad one (not PEM, key not matching the
        certificate, an option we do not support) ValueError naming it."""
    def reload_web_config(self) -> None:
        """Reads the web config and its files again (certificate rotation):
        new connections use them, and a kept-alive connection from its next
        request, after which it closes. On error (``ValueError``/``OSError``
        as at construction) the running one stays. The server also reloads
        by itself within about a second of the files changing (see
        ``stats()["web_config_reloads"]``). RuntimeError without a
        ``web_config``."""
    def serve(self, metrics_url: str) -> None:
        """Starts serving ``GET /metrics`` when no server runs in this
        process (a target made with ``""``, after ``close()``, or in a
        forked child). Raises ``RuntimeError`` if one runs, else as the
        constructor does."""
    def render(self, openmetrics: bool = False, *, protobuf: bool = False) -> bytes:
        """The exposition: Prometheus text 0.0.4, OpenMetrics 1.0.0 (ending
        in ``# EOF``), or (`protobuf=True`) length-delimited
        `io.prometheus.client.MetricFamily` messages, the only format
        carrying native buckets; `ValueError` if both are asked. Renders
        with the GIL released: about 4-5 ms for 10,000 histogram series."""
    @property
    def url(self) -> str | None:
        """``http://host:port/metrics`` as bound, or ``None`` without a
        server (or after ``close()``, or in a forked child)."""
    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0), or ``None`` without a server."""
    def stats(self) -> PrometheusTargetStats:
        """Series and refused label sets per family, scrapes served and the
        HTTP server's counts; a fresh dict, reads atomics only."""
    def close(self) -> None:
        """Stops the server and frees the port; idempotent. The series stay
        and ``render()`` still works."""
    def __enter__(self) -> Self:
        """Returns the target itself."""
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        """Calls ``close()``; an exception propagates."""

@final
class CollectorCore:
    """The collector's storage half: checks, de-duplicates and stores
    bodies into Redis (a bounded queue and a writer thread) and/or the CSV
    dataset, without the GIL. ``OrchestratorCollector`` wraps it."""

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
    ) -> Self:
        """Opens the CSV dataset (``dataset_path`` prefix) and starts the
        Redis writer thread (``redis_url``); limits as for
        ``OrchestratorCollector``. Raises ``ValueError`` for a bad URL,
        layout or limit, ``OSError`` when the dataset cannot be opened or
        the Redis writer cannot start."""
    def ingest(self, body: bytes, node_id: str | None = None) -> tuple[int, str]:
        """Stores one received ``UpdateNodeRequest`` body; returns (HTTP
        status, reason) as the collector answers it. With ``node_id``, a body
        for another node is refused (403). Never raises for a bad body
        (400). Runs without the GIL: about 0.8 µs a sample into Redis."""
    def flush(self, timeout_s: float) -> bool:
        """Waits (GIL released) until Redis acknowledged everything queued;
        False on timeout, True at once without Redis."""
    def close(self, timeout_s: float) -> None:
        """Refuses further batches, gives Redis up to ``timeout_s`` (GIL
        released), stops the writer; what is left is counted in
        ``redis_entries_abandoned``."""
    def stats(self) -> CollectorCoreStats:
        """Batches, samples, refusals and, with Redis, the ``redis_*``
        counts and gauges; a fresh dict, reads atomics."""
    def redis_last_error(self) -> str:
        """What Redis last answered instead of storing (an error reply, or
        why it could not be reached), in full; "" if nothing yet."""

@final
class CollectorServer:
    """The collector's HTTP server (hyper, never taking the GIL): binds at
    construction, serves from ``start()`` until ``stop()``;
    ``OrchestratorCollector`` wraps it."""

    def __new__(
        cls,
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
        """Binds ``host:port`` now (``OSError`` if taken); limits as for
        ``OrchestratorCollector``. Raises ``ValueError`` for a bad limit,
        token or host. ``web_config`` as for ``PrometheusTarget``; its
        ``basic_auth_users`` and a token cannot be combined (ValueError)."""
    @property
    def url(self) -> str:
        """``http://host:port`` as bound (the real port when 0 was asked)."""
    def reload_web_config(self) -> None:
        """Reads the web config and its files again (certificate rotation),
        as ``PrometheusTarget.reload_web_config`` does; the server also
        reloads by itself when the files change. On error the running one
        stays."""
    @property
    def token_required(self) -> bool:
        """Whether requests need a bearer token."""
    def attach(self, core: CollectorCore) -> None:
        """The core that stores what the server receives; once, before
        ``start()``. Not a constructor argument so that the port is bound
        and the settings checked before a core opens (and, without
        ``append``, empties) its dataset."""
    def start(self) -> None:
        """Starts serving; ``RuntimeError`` if started (or stopped) before,
        or without a core attached."""
    def stop(self) -> None:
        """Stops serving and frees the port (waiting connections are closed,
        requests being stored finish); idempotent."""
    def stats(self) -> OrchestratorCollectorStats:
        """The core's counts and the HTTP ones (also ``GET /stats``)."""

def drain_encode(
    target: PerformanceTarget,
    node_id: str,
    nonce: int,
    first_sequence: int,
    refresh_deadline: int,
    max_batch_bytes: int,
) -> list[tuple[int, int, int, bytes]]:
    """Drains ``target`` (with the GIL, only moving buffers) and encodes
    what it held as ``UpdateNodeRequest`` bodies without the GIL: one
    ``(sequence, samples, log_entries, body)`` per body of at most about
    ``max_batch_bytes``, numbered from ``first_sequence``; an empty target
    gives an empty list. About 23 ns a sample."""

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
    def stats(self) -> NodeReporterStats:
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
    def node_id(self) -> str:
        """The node id every body carries."""

@final
class Span:
    """One span of a ``ControlPlaneTracer``: its ``span_start`` row is
    written when it starts, its ``span_end`` row once, by ``end()``, the end
    of a ``with`` block or the drop of its last reference, whichever comes
    first. Thread-safe."""

    def child(self, name: str) -> Span:
        """Starts a child span (``parent_id`` = this ``correlation_id``);
        allowed after this span ended. Raises ``TypeError``/``ValueError``
        for a name that is not a str, empty or over 4096 bytes."""
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
    def log(self, level: int | str, message: str) -> None:
        """A ``log`` row carrying this span's ids and name; allowed after the
        span ended. ``level`` a ``TelemetryLogLevel``, 0..4 or its name.
        Raises ``ValueError``/``TypeError`` for a bad level, ``TypeError``
        for a non-str message; a message over ``max_message_bytes`` is cut
        (counted)."""
    def end(self) -> None:
        """Writes the ``span_end`` row; only the first call (or the ``with``
        exit, or the drop) does."""
    @property
    def correlation_id(self) -> str:
        """This span's id (a UUID string); the ``parent_id`` of its children."""
    @property
    def parent_id(self) -> str | None:
        """The parent's ``correlation_id``, ``None`` for a root span."""
    @property
    def name(self) -> str:
        """The span's name."""
    @property
    def ended(self) -> bool:
        """Whether the ``span_end`` row was written."""
    def __enter__(self) -> Span:
        """Returns the span itself (already started); does not make it
        current (``tracer.span`` does)."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool:
        """Ends the span; an exception leaving the block is first logged on
        it at ERROR and propagates (returns ``False``)."""

@final
class ControlPlaneTracer:
    """Records the control plane's steps as spans, in the tracer CSV format
    (``span_start``, ``span_end`` and ``log`` rows). Rows are formatted in
    Rust into a bounded buffer that a background thread writes out; callers
    never wait for the disk (a full buffer drops the row, counted). A root
    span, a child and a log row cost about 0.8 µs.
    """

    def __new__(
        cls,
        output_path: str | os.PathLike[str] | None = None,
        *,
        append: bool = False,
        max_pending_bytes: int = 16777216,
        max_message_bytes: int = 65536,
    ) -> Self:
        """Opens the output (``None``, ``"-"`` or ``""``: stdout; a path's
        directories are created) and starts the writer thread. The file is
        truncated and gets the header, or with ``append=True`` keeps its
        rows. Raises ``OSError`` naming a path that cannot be opened,
        ``ValueError`` for a non-empty file without the tracer header."""
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
    def flush(self) -> None:
        """Waits (GIL released) until every row so far is written to the OS
        (or, while the output refuses them, tried once and held)."""
    def close(self) -> None:
        """Writes what is pending and closes the output; later rows are
        dropped and counted (``rows_after_close``). Idempotent."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (or the tracer was inherited
        through fork)."""
    @property
    def output_path(self) -> str | None:
        """The file written to, or ``None`` for stdout."""
    def stats(self) -> ControlPlaneTracerStats:
        """Rows queued, written, pending, dropped and lost; bytes;
        truncations; a fresh dict."""
    def __enter__(self) -> ControlPlaneTracer:
        """Returns the tracer itself."""
    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> bool:
        """Calls ``close()``; never swallows an exception (returns ``False``)."""

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
