"""Workloads shared by the benchmarks, the memory and the thread measurements.

Our path and each peer's path are built here once so that every measurement
compares the same work: the same four labels, the same EDGELESS buckets, the
same attribute set for OpenTelemetry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

from edgeless_telemetry import PerformanceTarget, PrometheusTarget, TelemetryProcessor

NODE_ID = "bench-node"
FUNCTION_TYPE = "python"
FUNCTION_ID = "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"
# EDGELESS buckets (0.1 ... 1.0; prometheus_client adds +Inf: eleven).
BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
LABELS = ("node_id", "function_id", "function_type", "invocation_type")
LABEL_VALUES = (NODE_ID, FUNCTION_ID, FUNCTION_TYPE, "Cast")
DURATION = 0.003
# Calls per measured round in per-event groups: amortises the timer.
CALLS = 1000


def function_id(i: int) -> str:
    """A distinct, valid, cheap-to-make UUID string per integer."""
    return str(uuid.UUID(int=i, version=4))


def tag(benchmark: Any, role: str, label: str, items: int) -> None:
    """Marks a benchmark per the convention the report reads."""
    benchmark.extra_info.update(role=role, label=label, items=items)


def has_real_prometheus() -> bool:
    """False while PrometheusTarget is the placeholder that keeps no series."""
    return hasattr(PrometheusTarget, "render")


def render(prom: PrometheusTarget) -> bytes | None:
    """The exposition, or None from the placeholder target."""
    fn = getattr(prom, "render", None)
    return fn() if fn is not None else None


def close(prom: PrometheusTarget) -> None:
    fn = getattr(prom, "close", None)
    if fn is not None:
        fn()


def prometheus_target(max_series: int | None = None) -> PrometheusTarget:
    """A PrometheusTarget without a server, holding up to ``max_series``
    series per family when the target has such a bound."""
    if max_series is not None and has_real_prometheus():
        return PrometheusTarget("", max_series=max_series)  # type: ignore[call-arg,unused-ignore]
    return PrometheusTarget("")


def ours(capacity: int = 100_000, max_series: int | None = None,
         **perf_kw: int) -> tuple[PerformanceTarget, PrometheusTarget, TelemetryProcessor]:
    """Both targets in one processor, as a node runs them (log target on)."""
    perf = PerformanceTarget(capacity=capacity, **perf_kw)
    prom = prometheus_target(max_series)
    return perf, prom, TelemetryProcessor([perf, prom])


def fork_function(processor: TelemetryProcessor, fid: str = FUNCTION_ID) -> Any:
    """A function instance's handle: node handle forked with function tags."""
    node = processor.get_handle({"NODE_ID": NODE_ID})
    return node.fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": FUNCTION_TYPE})


def prom_client_histogram() -> tuple[Any, Any]:
    """(registry, Histogram) shaped like our execution_times family."""
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    hist = Histogram("execution_times", "Function execution times", LABELS,
                     buckets=BUCKETS, registry=registry)
    return registry, hist


def otel_histogram() -> tuple[Any, Any]:
    """(MeterProvider, histogram) from the OpenTelemetry SDK, in-memory reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hist = provider.get_meter("bench").create_histogram("execution_times", unit="s")
    return provider, hist


OTEL_ATTRIBUTES = dict(zip(LABELS, LABEL_VALUES, strict=True))



def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Runs ``script --child args...`` in a fresh interpreter; returns its JSON.

    A fresh process per measurement keeps the numbers clean: no garbage,
    arenas or threads left over from an earlier measurement.
    """
    out = subprocess.run(
        [sys.executable, script, "--child", *args],
        check=True, capture_output=True, text=True, timeout=timeout,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
