"""Per-function summary of stored samples, read back from CSV or Redis.

Both readers give ``{(function_id, metric): values}`` plus
``{function_id: log entry count}``; `format_table` prints count, p50, p90
and p99 per function and kind.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from . import csv_nul
from .enums import FunctionTime

METRICS = {
    "function_instantiate_time": FunctionTime.INSTANTIATE,
    "function_init_time": FunctionTime.INIT,
    "function_execution_time": FunctionTime.EXECUTION,
    "function_stop_time": FunctionTime.STOP,
    "function_transfer_time": FunctionTime.TRANSFER,
}

Series = dict[tuple[str, str], list[float]]


def read_dataset(prefix: str) -> tuple[Series, dict[str, int]]:
    """Reads ``<prefix>performance_samples.csv`` and the log file."""
    series: Series = defaultdict(list)
    logs: dict[str, int] = defaultdict(int)
    samples_path = Path(f"{prefix}performance_samples.csv")
    with samples_path.open(newline="") as f:
        for row in csv.DictReader(csv_nul.lines(f)):
            series[(row["identifier"], row["metric"])].append(float(row["value"]))
    logs_path = Path(f"{prefix}application_logs.csv")
    if logs_path.exists():
        with logs_path.open(newline="") as f:
            for row in csv.DictReader(csv_nul.lines(f)):
                logs[row["identifier"]] += 1
    return dict(series), dict(logs)


def _redis_client(redis_url: str) -> Any:
    """redis-py's client for the collector's URL forms: ``redis://...``,
    or ``redis+cluster://[[user]:password@]host:port[,host:port...]``."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    rest = redis_url.removeprefix("redis+cluster://")
    if rest == redis_url:
        return redis.Redis.from_url(redis_url, decode_responses=True)
    auth, _, hosts = rest.rpartition("@")
    user, _, password = auth.partition(":") if ":" in auth else ("", "", auth)
    nodes = []
    for hp in hosts.rstrip("/").split(","):
        host, _, port = hp.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    return RedisCluster(startup_nodes=nodes, username=user or None, password=password or None,
                        decode_responses=True)


def read_redis(redis_url: str) -> tuple[Series, dict[str, int]]:
    """Reads every ``performance:<function_id>:<metric or target>`` key
    (of every master, for a Redis Cluster)."""
    client = _redis_client(redis_url)
    series: Series = {}
    logs: dict[str, int] = defaultdict(int)
    for key in client.scan_iter(match="performance:*", count=1000):
        parts = key.split(":", 2)
        if len(parts) != 3:
            continue
        _, fid, metric = parts
        members = [str(m) for m in client.zrange(key, 0, -1)]
        if metric in METRICS:
            series[(fid, metric)] = [float(m.split(":", 1)[1]) for m in members]
        else:
            logs[fid] += client.zcard(key)
    return series, dict(logs)


def format_table(series: Series, logs: dict[str, int]) -> str:
    """One line per function and kind: count and p50/p90/p99 in ms."""
    lines = [f"{'function':36}  {'kind':12} {'count':>9} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9}"]
    order = {name: kind.value for name, kind in METRICS.items()}
    for fid, metric in sorted(series, key=lambda k: (k[0], order.get(k[1], 99))):
        values = np.asarray(series[(fid, metric)], dtype=np.float64)
        if len(values) == 0:
            continue
        p50, p90, p99 = np.percentile(values, [50, 90, 99]) * 1e3
        kind = METRICS[metric].name.lower() if metric in METRICS else metric
        lines.append(f"{fid:36}  {kind:12} {len(values):9d} {p50:9.3f} {p90:9.3f} {p99:9.3f}")
    for fid in sorted(logs):
        lines.append(f"{fid:36}  {'log':12} {logs[fid]:9d}")
    total = sum(len(v) for v in series.values())
    lines.append(f"total: {total} samples, {sum(logs.values())} log entries")
    return "\n".join(lines)
