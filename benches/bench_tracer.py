"""ControlPlaneTracer (issue 5) beside the OpenTelemetry SDK and the stdlib
``csv`` module, in the same run.

- ``tracer-span``: a root span, a child, one log on the child, both ended;
  ours writes the CSV rows (to /dev/null, through the real writer thread),
  OpenTelemetry exports to an InMemorySpanExporter via a SimpleSpanProcessor.
- ``tracer-writer``: log rows per second into a real file, flushed.
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeless_telemetry import ControlPlaneTracer, TelemetryLogLevel

LOOP = 1000
ROWS = 100_000
INFO = TelemetryLogLevel.INFO


@pytest.mark.benchmark(group="tracer-span")
def test_tracer_span__ours(benchmark: Any) -> None:
    tracer = ControlPlaneTracer(os.devnull)
    start = tracer.start_span

    def run() -> None:
        for _ in range(LOOP):
            root = start("deploy")
            child = root.child("place")
            child.log(INFO, "placed on node-1")
            child.end()
            root.end()

    benchmark.extra_info.update(
        role="ours", label="ControlPlaneTracer root+child+log, end()", items=LOOP
    )
    benchmark(run)
    tracer.close()
    assert tracer.stats()["rows_dropped"] == 0


@pytest.mark.benchmark(group="tracer-span")
def test_tracer_span__ours_with_blocks(benchmark: Any) -> None:
    tracer = ControlPlaneTracer(os.devnull)
    start = tracer.start_span

    def run() -> None:
        for _ in range(LOOP):
            with start("deploy") as root, root.child("place") as child:
                child.log(INFO, "placed on node-1")

    benchmark.extra_info.update(
        role="ours", label="ControlPlaneTracer root+child+log, with blocks", items=LOOP
    )
    benchmark(run)
    tracer.close()


@pytest.mark.benchmark(group="tracer-span")
def test_tracer_span__ours_current_span(benchmark: Any) -> None:
    tracer = ControlPlaneTracer(os.devnull)
    span, log = tracer.span, tracer.log

    def run() -> None:
        for _ in range(LOOP):
            with span("deploy"), span("place"):
                log(INFO, "placed on node-1")  # on the current span, "place"

    benchmark.extra_info.update(
        role="ours", label="ControlPlaneTracer tracer.span current spans + tracer.log", items=LOOP
    )
    benchmark(run)
    tracer.close()
    assert tracer.stats()["rows_dropped"] == 0


def _otel() -> tuple[Any, Any, Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("bench"), exporter, trace.set_span_in_context


@pytest.mark.benchmark(group="tracer-span")
def test_tracer_span__opentelemetry(benchmark: Any) -> None:
    tracer, exporter, in_context = _otel()

    def run() -> None:
        for _ in range(LOOP):
            root = tracer.start_span("deploy")
            child = tracer.start_span("place", context=in_context(root))
            child.add_event("placed on node-1", {"level": "INFO"})
            child.end()
            root.end()
        exporter.clear()  # bounded memory; spans are freed as ours are

    benchmark.extra_info.update(
        role="peer", label="OpenTelemetry SDK start_span+add_event, in-memory exporter", items=LOOP
    )
    benchmark(run)


@pytest.mark.benchmark(group="tracer-span")
def test_tracer_span__opentelemetry_current_span(benchmark: Any) -> None:
    tracer, exporter, _ = _otel()

    def run() -> None:
        for _ in range(LOOP):
            with tracer.start_as_current_span("deploy"), tracer.start_as_current_span(
                "place"
            ) as child:
                child.add_event("placed on node-1", {"level": "INFO"})
        exporter.clear()

    benchmark.extra_info.update(
        role="peer",
        label="OpenTelemetry SDK start_as_current_span (with), in-memory exporter",
        items=LOOP,
    )
    benchmark(run)


@pytest.mark.benchmark(group="tracer-writer")
def test_tracer_writer__ours(benchmark: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    tracers: list[ControlPlaneTracer] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        for t in tracers:
            t.close()
        tracers.append(ControlPlaneTracer(path))  # truncates: disk use stays bounded
        return (tracers[-1],), {}

    def run(tracer: ControlPlaneTracer) -> None:
        span = tracer.start_span("bulk")
        log = span.log
        for _ in range(ROWS):
            log(INFO, "function placed on node-1, 3 replicas")
        tracer.flush()

    benchmark.extra_info.update(
        role="ours", label="ControlPlaneTracer span.log rows to a file, flushed", items=ROWS
    )
    benchmark.pedantic(run, setup=setup, rounds=5)
    stats = tracers[-1].stats()
    tracers[-1].close()
    assert stats["rows_dropped"] == 0 and stats["rows_written"] >= ROWS


@pytest.mark.benchmark(group="tracer-writer")
def test_tracer_writer__stdlib_csv(benchmark: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    cid, parent = str(uuid.uuid4()), str(uuid.uuid4())

    def run() -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["timestamp_sec", "timestamp_ns", "event_type", "correlation_id",
                        "parent_id", "name", "level", "message"])
            row = w.writerow
            now = time.time_ns
            for _ in range(ROWS):
                sec, ns = divmod(now(), 1_000_000_000)
                row((sec, ns, "log", cid, parent, "bulk", "INFO",
                     "function placed on node-1, 3 replicas"))
            f.flush()

    benchmark.extra_info.update(
        role="peer", label="stdlib csv.writer writerow to a buffered file", items=ROWS
    )
    benchmark.pedantic(run, rounds=5)
