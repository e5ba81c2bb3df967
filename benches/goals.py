"""The performance goals of docs/architecture.md ("Performance goals"), as data for the report.

One row per goal. A goal is met when every bound it sets holds: ``ratio``
(the peer's cost over ours, measured in the same run) at least this much,
and ``limit`` on our own number (at most for costs, at least for rates).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    measure: str
    # Where the numbers come from: "bench" (a pytest-benchmark group),
    # "memory" (benches/memory.py) or "threads" (benches/threads.py).
    source: str
    # The group name, or for memory/threads our case key.
    key: str
    # Label substrings that pick the peer, in order of preference; for
    # memory and threads, the peer's case key.
    peer: tuple[str, ...]
    ratio: float | None = None
    limit: float | None = None
    # "time" (seconds per item, lower is better), "rate" (items per second,
    # higher is better) or "bytes" (per item, lower is better).
    kind: str = "time"
    design: str = ""
    # Label substrings that pick our contender when a group has several.
    ours: tuple[str, ...] = ()
    # The measured path runs through the PrometheusTarget: while that is
    # the placeholder (not merged yet), a verdict is only provisional.
    via_prometheus: bool = False
    # The role of the contender ``peer`` picks: "peer" (another library),
    # or "baseline" (another path of ours, e.g. the bare call a
    # convenience wraps).
    peer_role: str = "peer"
    # Our cost may be at most this many times the picked contender's
    # (for a convenience over a baseline of ours).
    cost_at_most: float | None = None
    # Our cost may be at most this many seconds more than the picked
    # contender's (per item, same run).
    more_at_most: float | None = None


GOALS: tuple[Goal, ...] = (
    Goal("event through both targets, forked handle", "bench", "ingest",
         ("labels().observe",), ratio=10, limit=120e-9,
         design="10x faster than prometheus_client labels().observe, about 120 ns or less",
         ours=("both targets",), via_prometheus=True),
    Goal("tracer root span + child + log", "bench", "tracer-span",
         ("OpenTelemetry", "otel", "OTel"), ratio=20, limit=2e-6,
         design="20x faster than OpenTelemetry, under 2 µs"),
    Goal("timing a block, with fn.invocation():", "bench", "timing",
         ("Histogram.time()",), ratio=5,
         design="5x faster than prometheus_client Histogram.time()",
         ours=("fn.invocation():",), via_prometheus=True),
    Goal("timing a block over a bare invocation_completed", "bench", "timing",
         ("bare invocation_completed",), cost_at_most=3, peer_role="baseline",
         design="3x or less the cost of a bare invocation_completed call",
         ours=("fn.invocation():",), via_prometheus=True),
    Goal("render 10,000 histogram series", "bench", "render-10000",
         ("generate_latest",), ratio=30,
         design="30x faster than prometheus_client generate_latest"),
    Goal("orchestrator into a real Redis", "bench", "redis-ingest",
         ("pipeline", "pipelined"), limit=500_000, kind="rate",
         design="500k samples/s or more", ours=("OrchestratorCollector",)),
    Goal("event with native histograms on, over the same without", "bench", "ingest-native",
         ("classic only",), more_at_most=10e-9, peer_role="baseline",
         design="at most 10 ns more than without native buckets, same run",
         ours=("native=True",)),
    Goal("protobuf rendering of 10,000 native series", "bench", "render-10000-native",
         ("generate_latest",), ratio=30,
         design="30x faster than prometheus_client generate_latest of 10,000 classic series"),
    Goal("TLS scrape of 1,000 series over a plain one, kept-alive connection", "bench",
         "scrape-tls", ("plain HTTP",), cost_at_most=2, peer_role="baseline",
         design="2x or less the cost of the same scrape over plain HTTP",
         ours=("TLS",)),
    Goal("memory per native histogram series", "memory", "series-native", ("series-ours",),
         limit=1024, kind="bytes",
         design="1 KB or less per series at default settings, classic and native buckets together"),
    Goal("memory per buffered sample", "memory", "sample-ours", ("sample-list",),
         limit=24, kind="bytes",
         design="24 B or less (a Python list of (timestamp, value) tuples: about 134)"),
    Goal("memory per histogram series", "memory", "series-ours", ("series-prom",),
         limit=400, kind="bytes",
         design="400 B or less (prometheus_client, 4 labels, 11 buckets: about 3,800)"),
    *(
        Goal(f"events/s from {n} thread{'s' if n > 1 else ''} + scraper + drainer",
             "threads", f"ours-{n}", (f"prom-{n}",), limit=8e6, kind="rate",
             design="8M events/s or more (prometheus_client: about 1.6M/s)",
             via_prometheus=True)
        for n in (1, 2, 4)
    ),
)

# What one benchmark item is, per group, for the table's unit column.
# Render groups are shown per call (one exposition), whatever their items.
ITEM_NOUNS: dict[str, str] = {
    "ingest": "event",
    "ingest-performance": "event",
    "ingest-batch": "sample",
    "drain": "sample",
    "drain-encode": "sample",
    "redis-ingest": "sample",
    "timing": "block",
    "tracer-span": "trace",
    "tracer-writer": "row",
    "scrape-latency": "scrape",
}
PER_CALL_PREFIXES = ("render-",)
