"""Event ingestion and draining, ours beside prometheus_client and OpenTelemetry.

Per-event groups time a round of ``CALLS`` calls in a plain Python loop (the
same loop for every contender, so the floor row shows what the loop and the
call itself cost); the report divides by ``items``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from common import (
    CALLS,
    DURATION,
    FUNCTION_ID,
    FUNCTION_TYPE,
    LABEL_VALUES,
    NODE_ID,
    OTEL_ATTRIBUTES,
    fork_function,
    function_id,
    tag,
)
from edgeless_telemetry import FunctionTime

BATCH = 10_000


@pytest.mark.benchmark(group="ingest")
def test_ingest_ours(benchmark: Any, fn_handle: Any) -> None:
    tag(benchmark, "ours", "forked handle invocation_completed (both targets)", CALLS)
    event = fn_handle.invocation_completed

    def run() -> None:
        for _ in range(CALLS):
            event(DURATION)

    benchmark(run)


@pytest.mark.benchmark(group="ingest")
def test_ingest_prom_labels(benchmark: Any, prom_client: Any) -> None:
    tag(benchmark, "peer", "prometheus_client labels().observe", CALLS)
    hist = prom_client[1]

    def run() -> None:
        for _ in range(CALLS):
            hist.labels(NODE_ID, FUNCTION_ID, FUNCTION_TYPE, "Cast").observe(DURATION)

    benchmark(run)


@pytest.mark.benchmark(group="ingest")
def test_ingest_prom_child(benchmark: Any, prom_client: Any) -> None:
    tag(benchmark, "peer", "prometheus_client bound child observe", CALLS)
    observe = prom_client[1].labels(*LABEL_VALUES).observe

    def run() -> None:
        for _ in range(CALLS):
            observe(DURATION)

    benchmark(run)


@pytest.mark.benchmark(group="ingest")
def test_ingest_otel(benchmark: Any, otel: Any) -> None:
    tag(benchmark, "peer", "OpenTelemetry SDK histogram record", CALLS)
    record = otel.record

    def run() -> None:
        for _ in range(CALLS):
            record(DURATION, OTEL_ATTRIBUTES)

    benchmark(run)


@pytest.mark.benchmark(group="ingest")
def test_ingest_floor(benchmark: Any) -> None:
    tag(benchmark, "floor", "C builtin call from Python (abs)", CALLS)

    def run() -> None:
        for _ in range(CALLS):
            abs(DURATION)

    benchmark(run)


@pytest.fixture
def batch() -> Any:
    return np.random.default_rng(1).uniform(0.001, 1.0, BATCH)


@pytest.mark.benchmark(group="ingest-batch")
def test_batch_ours(benchmark: Any, fn_handle: Any, batch: Any) -> None:
    tag(benchmark, "ours", "observe_many(numpy array) (both targets)", BATCH)
    recorded = benchmark(fn_handle.observe_many, FunctionTime.EXECUTION, batch)
    assert recorded == BATCH


@pytest.mark.benchmark(group="ingest-batch")
def test_batch_prom_child(benchmark: Any, prom_client: Any, batch: Any) -> None:
    tag(benchmark, "peer", "prometheus_client bound child observe, loop", BATCH)
    observe = prom_client[1].labels(*LABEL_VALUES).observe

    def run() -> None:
        for v in batch.tolist():
            observe(v)

    benchmark(run)


@pytest.mark.benchmark(group="ingest-batch")
def test_batch_otel(benchmark: Any, otel: Any, batch: Any) -> None:
    tag(benchmark, "peer", "OpenTelemetry SDK histogram record, loop", BATCH)
    record = otel.record

    def run() -> None:
        for v in batch.tolist():
            record(v, OTEL_ATTRIBUTES)

    benchmark(run)


DRAIN_FUNCTIONS = 100
DRAIN_PER_FUNCTION = 1000


@pytest.mark.benchmark(group="drain")
def test_drain_ours(benchmark: Any, node: Any) -> None:
    """get_metrics() of a PerformanceTarget holding 100 functions x 1,000 samples."""
    perf, _prom, processor = node
    total = DRAIN_FUNCTIONS * DRAIN_PER_FUNCTION
    tag(benchmark, "ours", "PerformanceTarget.get_metrics (100 fns x 1k samples)", total)
    handles = [fork_function(processor, function_id(i)) for i in range(DRAIN_FUNCTIONS)]
    values = np.full(DRAIN_PER_FUNCTION, DURATION)

    def fill() -> None:
        for h in handles:
            h.observe_many(FunctionTime.EXECUTION, values)

    result = benchmark.pedantic(perf.get_metrics, setup=fill, rounds=20, warmup_rounds=1)
    assert result.sample_count() == total
