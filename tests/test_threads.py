"""Concurrent ingestion and draining lose nothing and tear nothing."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from edgeless_telemetry import FunctionTime, Metrics, PerformanceTarget, TelemetryProcessor

THREADS = 4
EVENTS = 250_000


def test_four_writers_and_a_drainer_lose_nothing() -> None:
    perf = PerformanceTarget(capacity=EVENTS * THREADS)  # never overflows
    proc = TelemetryProcessor([perf], log=False)
    node = proc.get_handle({"NODE_ID": "n"})
    ids = [str(uuid.uuid4()) for _ in range(THREADS)]
    drained: list[Metrics] = []
    done = threading.Event()

    def write(i: int) -> None:
        h = node.fork({"FUNCTION_ID": ids[i]})
        value = float(i + 1)
        for _ in range(EVENTS):
            h.invocation_completed(value)

    def drain() -> None:
        while not done.is_set():
            drained.append(perf.get_metrics())
            time.sleep(0.003)

    drainer = threading.Thread(target=drain)
    drainer.start()
    writers = [threading.Thread(target=write, args=(i,)) for i in range(THREADS)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    drainer.join()
    drained.append(perf.get_metrics())

    assert len(drained) > 2  # the drainer really ran concurrently
    for i, fid in enumerate(ids):
        parts = [m.function_times[FunctionTime.EXECUTION].get(fid) for m in drained]
        values = np.concatenate([p.values for p in parts if p is not None])
        stamps = np.concatenate([p.timestamps_ns for p in parts if p is not None])
        assert len(values) == EVENTS
        assert np.all(values == float(i + 1))  # no torn or mixed samples
        assert np.all(np.diff(stamps) >= 0)  # order kept across drains
    assert perf.stats()["samples_dropped"] == 0
    assert perf.stats()["samples_recorded"] == EVENTS * THREADS
