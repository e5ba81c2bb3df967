"""One event from a forked handle into the PerformanceTarget alone, beside
prometheus_client's labels().observe in the same run (issue: foundation)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from edgeless_telemetry import PerformanceTarget, TelemetryProcessor

LOOP = 1000


@pytest.mark.benchmark(group="ingest-performance")
def test_ingest_performance__ours(benchmark: Any) -> None:
    perf = PerformanceTarget(capacity=1 << 16)
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"}).fork(
        {"FUNCTION_ID": str(uuid.uuid4()), "FUNCTION_TYPE": "python"}
    )
    emit = h.invocation_completed

    def run() -> None:
        for _ in range(LOOP):
            emit(0.003)

    benchmark.extra_info.update(role="ours", label="forked handle -> PerformanceTarget", items=LOOP)
    benchmark(run)


@pytest.mark.benchmark(group="ingest-performance")
def test_ingest_performance__prometheus_client(benchmark: Any) -> None:
    hist = Histogram(
        "execution_times", "h", ["node_id", "function_id", "function_type", "invocation_type"],
        registry=CollectorRegistry(),
    )
    fid = str(uuid.uuid4())

    def run() -> None:
        for _ in range(LOOP):
            hist.labels("n", fid, "python", "Cast").observe(0.003)

    benchmark.extra_info.update(role="peer", label="prometheus_client labels().observe", items=LOOP)
    benchmark(run)
