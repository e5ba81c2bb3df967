"""Status lines for the long-running commands: what is happening now, and
what is wrong, in words, as it happens (not a dict of 40 counters)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def collector_line(stats: dict[str, int], redis_last_error: str, now: float | None = None) -> str:
    """One line about a collector: what it stored, what it refused, and the
    state of Redis (failing since when, with what it answered)."""
    now = time.time() if now is None else now
    refused = sum(v for k, v in stats.items() if k.startswith("http_4") or k == "http_503_busy")
    line = (f"stored {stats['batches_stored']:,} batches ({stats['samples_stored']:,} samples, "
            f"{stats['log_entries_stored']:,} log entries)")
    if stats.get("batches_malformed", 0) or refused:
        line += f"; refused {stats.get('batches_malformed', 0) + refused:,}"
    if stats.get("dataset_errors", 0):
        line += f"; dataset write errors {stats['dataset_errors']:,}"
    if "redis_connected" in stats:
        since = stats.get("redis_failing_since", 0)
        queued = stats.get("redis_queue_batches", 0)
        if since:
            line += (f"; REDIS FAILING for {max(0, int(now - since))} s, {queued:,} batches waiting"
                     f" (nodes keep theirs): {' '.join(redis_last_error.split())[:160]}")
        else:
            line += f"; redis ok ({queued:,} batches waiting)" if queued else "; redis ok"
    return line


class CollectorStatus:
    """Prints `collector_line` every so often, and at once when Redis starts
    failing or comes back."""

    def __init__(self, collector: Any, out: TextIO = sys.stderr) -> None:
        self._collector = collector
        self._out = out
        self._failing_since = 0

    def show(self) -> None:
        stats = self._collector.stats()
        since = stats.get("redis_failing_since", 0)
        if self._failing_since and not since:
            down = max(0, int(time.time() - self._failing_since))
            print(f"collector: redis is back after {down} s", file=self._out, flush=True)
        self._failing_since = since
        print("collector: " + collector_line(stats, self._collector.redis_last_error),
              file=self._out, flush=True)
