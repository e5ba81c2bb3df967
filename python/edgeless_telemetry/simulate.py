"""A simulated EDGELESS node for the ``demo`` and ``node`` commands.

N functions, each instantiated and initialised at the start, then invoked
(calls and casts), transferring and logging at a chosen total event rate,
and stopped and exited at the end: every event kind goes through the
handles. Events are emitted in slices per tick with ``observe_many`` so the
simulation itself costs little next to the rate it drives.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid

import numpy as np

from ._core import TelemetryHandle
from .enums import FunctionExitStatus, FunctionTime, TelemetryLogLevel


class SimulatedNode:
    def __init__(self, node: TelemetryHandle, functions: int, rate: float,
                 seed: int | None = None) -> None:
        """``seed=None`` draws fresh function ids (two nodes, or two runs, never share
        Redis keys); a seed repeats the ids and the workload exactly."""
        if functions < 1 or rate <= 0:
            raise ValueError("functions must be at least 1 and rate positive")
        if seed is None:
            seed = random.SystemRandom().getrandbits(64)
        self._rng = np.random.default_rng(seed)
        ids = random.Random(seed)
        self.function_ids = [str(uuid.UUID(int=ids.getrandbits(128), version=4)) for _ in range(functions)]
        self.handles = [
            node.fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "demo"}) for fid in self.function_ids
        ]
        self.rate = rate
        self.events = 0
        self._carry = 0.0
        # Per-function typical execution time, so the summary shows a spread.
        self._scale = self._rng.uniform(0.002, 0.02, size=functions)
        for h in self.handles:
            h.function_instantiate(float(self._rng.uniform(0.01, 0.05)))
            h.function_init(float(self._rng.uniform(0.001, 0.01)))
            self.events += 2

    def step(self, dt: float) -> int:
        """Emits about ``rate * dt`` events; returns how many."""
        want = self.rate * dt + self._carry
        n = int(want)
        self._carry = want - n
        per_fn = n // len(self.handles)
        emitted = 0
        for i, h in enumerate(self.handles):
            calls = per_fn * 2 // 5
            casts = per_fn * 2 // 5
            transfers = per_fn - calls - casts - 1
            scale = self._scale[i]
            if calls:
                emitted += h.observe_many(
                    FunctionTime.EXECUTION, self._rng.lognormal(np.log(scale), 0.5, calls),
                    event_type="CALL",
                )
            if casts:
                emitted += h.observe_many(
                    FunctionTime.EXECUTION, self._rng.lognormal(np.log(scale), 0.5, casts),
                    event_type="CAST",
                )
            if transfers > 0:
                emitted += h.observe_many(
                    FunctionTime.TRANSFER, self._rng.exponential(0.0005, transfers)
                )
            if per_fn:
                h.log(TelemetryLogLevel.INFO, "demo", f"{calls + casts} invocations, scale={scale:.4f}")
                emitted += 1
        self.events += emitted
        return emitted

    def finish(self) -> None:
        for h in self.handles:
            h.function_stop(float(self._rng.uniform(0.001, 0.01)))
            h.function_exit(FunctionExitStatus.OK)
            self.events += 2


class Progress:
    """A live status line: events/s, batches shipped, drops."""

    def __init__(self, processor: object, perf: object, reporter: object,
                 collector: object | None = None) -> None:
        self._processor = processor
        self._perf = perf
        self._reporter = reporter
        self._collector = collector
        self._last_t = time.monotonic()
        self._last_events = 0
        self._tty = sys.stdout.isatty()

    def drops(self) -> int:
        r = self._reporter.stats()  # type: ignore[attr-defined]
        p = self._perf.stats()  # type: ignore[attr-defined]
        q = self._processor.stats()  # type: ignore[attr-defined]
        return int(
            r["samples_dropped"] + r["log_entries_dropped"] + p["samples_dropped"]
            + p["log_entries_dropped"] + q["dropped_invalid_type"] + q["dropped_invalid_value"]
        )

    def show(self, elapsed: float, events: int, final: bool = False) -> None:
        now = time.monotonic()
        rate = (events - self._last_events) / max(now - self._last_t, 1e-9)
        self._last_t, self._last_events = now, events
        r = self._reporter.stats()  # type: ignore[attr-defined]
        line = (
            f"t={elapsed:5.1f}s  events/s={rate:10,.0f}  events={events:,}  "
            f"shipped={r['batches_sent']} batches ({r['samples_sent']:,} samples)  "
            f"pending={r['pending_batches']}  drops={self.drops()}"
        )
        since = getattr(self._reporter, "failing_since", None)
        if since is not None:  # a run of failed sends: say what and for how long
            line += f"  failing for {max(0.0, time.time() - since):.0f}s: {self._reporter.last_error}"  # type: ignore[attr-defined]
        if self._collector is not None:
            stats = self._collector.stats()  # type: ignore[attr-defined]
            failing = stats.get("redis_failing_since", 0)
            if failing:
                error = " ".join(self._collector.redis_last_error.split())[:100]  # type: ignore[attr-defined]
                line += f"  REDIS FAILING for {max(0.0, time.time() - failing):.0f}s (CSV goes on): {error}"
        if self._tty:
            print("\r" + line, end="\n" if final else "", flush=True)
        else:
            print(line, flush=True)


def drive(node: SimulatedNode, duration_s: float, progress: Progress | None,
          stop: threading.Event, tick_s: float = 0.02, show_every_s: float = 1.0) -> None:
    """Runs the simulation for ``duration_s`` (0: until ``stop`` is set)."""
    start = last = time.monotonic()
    next_show = start + show_every_s
    while not stop.is_set():
        now = time.monotonic()
        if duration_s and now - start >= duration_s:
            break
        node.step(now - last)
        last = now
        if progress is not None and now >= next_show:
            progress.show(now - start, node.events)
            next_show = now + show_every_s
        stop.wait(max(0.0, tick_s - (time.monotonic() - now)))
    node.finish()
    if progress is not None:
        progress.show(time.monotonic() - start, node.events, final=True)
