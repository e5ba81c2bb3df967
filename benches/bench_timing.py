"""Timing a block on a handle (issue 15) beside prometheus_client's
``Histogram.time()``, and beside reporting a duration measured by hand.

Each round runs ``CALLS`` empty blocks in the same plain Python loop as the
``ingest`` group, so the three rows differ only by what telemetry costs:
``with fn.invocation():`` (our Rust timer: two monotonic clock reads and
the event through both targets), a bare ``invocation_completed`` call of
an already measured duration, and ``with child.time():`` on a
prometheus_client histogram child with our labels and buckets.
"""

from __future__ import annotations

from typing import Any

import pytest

from common import CALLS, DURATION, LABEL_VALUES, tag


@pytest.mark.benchmark(group="timing")
def test_timing_ours(benchmark: Any, fn_handle: Any) -> None:
    tag(benchmark, "ours", "with fn.invocation(): (both targets)", CALLS)
    invocation = fn_handle.invocation

    def run() -> None:
        for _ in range(CALLS):
            with invocation():
                pass

    benchmark(run)


@pytest.mark.benchmark(group="timing")
def test_timing_ours_call(benchmark: Any, fn_handle: Any) -> None:
    tag(benchmark, "ours", 'with fn.invocation(event_type="CALL"): (both targets)', CALLS)
    invocation = fn_handle.invocation

    def run() -> None:
        for _ in range(CALLS):
            with invocation(event_type="CALL"):
                pass

    benchmark(run)


@pytest.mark.benchmark(group="timing")
def test_timing_bare(benchmark: Any, fn_handle: Any) -> None:
    tag(benchmark, "baseline", "bare invocation_completed(seconds) (both targets)", CALLS)
    event = fn_handle.invocation_completed

    def run() -> None:
        for _ in range(CALLS):
            event(DURATION)

    benchmark(run)


@pytest.mark.benchmark(group="timing")
def test_timing_prom(benchmark: Any, prom_client: Any) -> None:
    tag(benchmark, "peer", "prometheus_client with Histogram.time() (bound child)", CALLS)
    timer = prom_client[1].labels(*LABEL_VALUES).time

    def run() -> None:
        for _ in range(CALLS):
            with timer():
                pass

    benchmark(run)
