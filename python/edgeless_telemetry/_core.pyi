"""Types of the Rust extension; checked against it by mypy's stubtest."""

import os
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any, final

from typing_extensions import Self, disjoint_base

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
    ) -> Self: ...
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
    ) -> Self: ...
    @property
    def url(self) -> str: ...
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
    def start_span(self, name: str, *, parent_id: str | uuid.UUID | None = None) -> Span: ...
    def log(self, level: int | str, message: str) -> None: ...
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
