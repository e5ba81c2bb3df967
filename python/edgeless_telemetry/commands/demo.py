"""``edgeless-telemetry demo``: the main job in one process.

A simulated node (functions at a chosen event rate, every event kind)
records into a PerformanceTarget and a PrometheusTarget; a NodeReporter
ships the samples over HTTP to an in-process OrchestratorCollector, which
writes the EDGELESS CSV dataset (and Redis with ``--redis-url``). Ends with
the per-function summary read back from what the collector stored.
"""

from __future__ import annotations

import argparse
import threading
import uuid
from typing import Any

from .._core import PrometheusTarget, TelemetryProcessor
from ..collector import OrchestratorCollector
from ..performance import PerformanceTarget
from ..reporter import NodeReporter
from ..simulate import Progress, SimulatedNode, drive
from ..summary import format_table, read_dataset, read_redis


def add_workload_args(p: argparse.ArgumentParser, duration: float) -> None:
    p.add_argument("--functions", type=int, default=4, help="simulated functions (default 4)")
    p.add_argument("--rate", type=float, default=50_000, help="events/s in total (default 50000)")
    p.add_argument("--duration", type=float, default=duration,
                   help=f"seconds to run, 0 = until Ctrl-C (default {duration:g})")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between shipments (default 1)")
    p.add_argument("--metrics-url", default="",
                   help="serve Prometheus /metrics here, e.g. http://127.0.0.1:7003 (default: no server)")
    p.add_argument("--seed", type=int, default=None,
                   help="repeat the function ids and workload of an earlier run (default: fresh"
                        " ids each run, so runs and nodes never share Redis keys)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="simulated node + in-process orchestrator (no server needed)")
    add_workload_args(p, duration=10.0)
    p.add_argument("--output", default="./demo-output/",
                   help="CSV dataset prefix (default ./demo-output/)")
    p.add_argument("--redis-url", default=None, help="also write Redis, e.g. redis://127.0.0.1:6379/0")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    perf = PerformanceTarget()
    prometheus = PrometheusTarget(args.metrics_url)
    processor = TelemetryProcessor([perf, prometheus], log=False)
    node_id = str(uuid.uuid4())
    node = processor.get_handle({"NODE_ID": node_id})
    collector = OrchestratorCollector(
        "http://127.0.0.1:0", redis_url=args.redis_url, dataset_path=args.output
    ).start()
    reporter = NodeReporter(perf, collector.url, node_id, interval_s=args.interval).start()
    print(f"node {node_id}: {args.functions} functions, {args.rate:,.0f} events/s, "
          f"shipping every {args.interval:g} s to {collector.url}"
          + (f", Prometheus at {args.metrics_url}/metrics" if args.metrics_url else ""))
    sim = SimulatedNode(node, args.functions, args.rate, args.seed)
    stop = threading.Event()
    try:
        drive(sim, args.duration, Progress(processor, perf, reporter, collector), stop)
    except KeyboardInterrupt:
        print()
    # While Redis refuses, the collector answers 202 and the node keeps its
    # batches: do not wait for what cannot arrive (the CSV has it all).
    redis_failing = bool(collector.stats().get("redis_failing_since", 0))
    reporter.timeout_s = min(reporter.timeout_s, 2.0) if redis_failing else reporter.timeout_s
    reporter.stop()
    collector.flush(1.0 if redis_failing else 10.0)
    stats = collector.stats()
    redis_error = collector.redis_last_error
    collector.stop(timeout_s=1.0 if redis_failing else 5.0)
    not_in_redis = collector.stats().get("redis_entries_abandoned", 0)
    close = getattr(prometheus, "close", None)
    if callable(close):
        close()
    print(f"collector: {stats['batches_stored']} batches, {stats['samples_stored']:,} samples, "
          f"{stats['log_entries_stored']:,} log entries stored; dataset {args.output}"
          "performance_samples.csv, application_logs.csv")
    series, logs = read_dataset(args.output)
    print(format_table(series, logs))
    if args.redis_url and (stats.get("redis_failing_since", 0) or not_in_redis):
        print(f"redis {args.redis_url}: did not take everything ({' '.join(redis_error.split())[:160]});"
              f" {not_in_redis:,} samples and log entries did not reach Redis. The CSV dataset"
              " above holds every one; a node running against a real collector would keep"
              " its batches and resend them once Redis is back.")
    elif args.redis_url:
        r_series, r_logs = read_redis(args.redis_url)
        print(f"redis {args.redis_url}: {sum(len(v) for v in r_series.values()):,} samples in "
              f"{len(r_series)} keys")
    return 0
