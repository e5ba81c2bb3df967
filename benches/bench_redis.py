"""Orchestrator into a real Redis (group ``redis-ingest``) and the node's
drain + protobuf encode (group ``drain-encode``), issue 4.

``redis-ingest``: samples/s from a received body to acknowledged by a real
redis-server: our collector (decode, render multi-member ZADDs, pipelined
over a socket without the GIL) directly and through its HTTP server, beside
redis-py pipelining one ZADD per sample and the upstream style of one round
trip per sample (on fewer samples: it is slow). Every round writes new
members into an emptied database, so no path profits from existing ones.
"""

from __future__ import annotations

import http.client
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeless_telemetry import (
    FunctionTime,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryProcessor,
    _core,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_fixture import RedisCluster, RedisServer  # noqa: E402

FUNCTIONS = 20
OURS_SAMPLES = 200_000
PIPELINE_SAMPLES = 50_000
ROUND_TRIP_SAMPLES = 5_000
T0 = 1_760_000_000_000_000_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    # Benchmarks measure our path, not the disk: no append-only file here.
    server.start()
    client = server.client()
    client.config_set("appendonly", "no")
    yield server
    server.stop()


def filled_target(samples: int, offset: int) -> PerformanceTarget:
    perf = PerformanceTarget(capacity=samples)
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "bench"})
    per_fn = samples // FUNCTIONS
    for f in range(FUNCTIONS):
        h = node.fork({"FUNCTION_ID": str(uuid.UUID(int=f + 1, version=4))})
        i = np.arange(per_fn, dtype=np.int64)
        h.observe_many(int(FunctionTime.EXECUTION), 0.001 + (i % 997) * 1e-6,
                       timestamps_ns=T0 + offset + i * 1000)
    return perf


class Bodies:
    """A fresh body (new sequence, new timestamps) for every round."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.seq = 0

    def next(self) -> bytes:
        self.seq += 1
        perf = filled_target(self.samples, self.seq * 10**12)
        (batch,) = _core.drain_encode(perf, "bench-node", 7, self.seq, 0, 1 << 30)
        return bytes(batch[3])


def python_members(samples: int, seq: int) -> list[tuple[str, str, float]]:
    """(key, member, score) as EDGELESS formats them, built in Python."""
    out = []
    per_fn = samples // FUNCTIONS
    for f in range(FUNCTIONS):
        key = f"performance:{uuid.UUID(int=f + 1, version=4)}:function_execution_time"
        for i in range(per_fn):
            ts = T0 + seq * 10**12 + i * 1000
            score = ts // 10**9 + (ts % 10**9) / 1e9
            out.append((key, f"{score}:{0.001 + (i % 997) * 1e-6}", score))
    return out


@pytest.mark.benchmark(group="redis-ingest")
def test_redis_ingest__ours_core(benchmark: Any, redis_server: RedisServer) -> None:
    core = _core.CollectorCore(redis_url=redis_server.url)
    bodies = Bodies(OURS_SAMPLES)
    client = redis_server.client()

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        client.flushdb()
        return (bodies.next(),), {}

    def run(body: bytes) -> None:
        assert core.ingest(body)[0] == 200
        assert core.flush(60)

    benchmark.extra_info.update(role="ours", label="CollectorCore.ingest -> Redis (multi-member ZADD)",
                                items=OURS_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=5)
    assert client.zcard(f"performance:{uuid.UUID(int=1, version=4)}:function_execution_time") \
        == OURS_SAMPLES // FUNCTIONS
    core.close(1)


@pytest.mark.benchmark(group="redis-ingest")
def test_redis_ingest__ours_http(benchmark: Any, redis_server: RedisServer) -> None:
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_server.url).start()
    host, port = col.url.removeprefix("http://").split(":")
    bodies = Bodies(OURS_SAMPLES)
    client = redis_server.client()

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        client.flushdb()
        return (bodies.next(),), {}

    def run(body: bytes) -> None:
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/performance", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
        assert col.flush(60)

    benchmark.extra_info.update(role="ours", label="HTTP POST -> OrchestratorCollector -> Redis",
                                items=OURS_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=5)
    col.stop(1)


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    for p in cluster.ports:  # as for the single server: measure us, not the disk
        cluster.node(p).config_set("appendonly", "no")
    yield cluster
    cluster.stop()


@pytest.mark.benchmark(group="redis-ingest")
def test_redis_ingest__ours_cluster(benchmark: Any, redis_cluster: RedisCluster) -> None:
    """The same into a three-master Redis Cluster on the same two cores
    (three servers share them, so this shows the cost of splitting by slot,
    not the scaling a cluster of machines gives)."""
    core = _core.CollectorCore(redis_url=redis_cluster.url)
    bodies = Bodies(OURS_SAMPLES)
    masters = [redis_cluster.node(p) for p in redis_cluster.ports]

    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        for m in masters:
            m.flushall()
        return (bodies.next(),), {}

    def run(body: bytes) -> None:
        assert core.ingest(body)[0] == 200
        assert core.flush(60)

    benchmark.extra_info.update(role="ours", label="CollectorCore.ingest -> Redis Cluster (3 masters)",
                                items=OURS_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=5)
    assert sum(m.dbsize() for m in masters) == FUNCTIONS
    core.close(1)


@pytest.mark.benchmark(group="redis-ingest")
def test_redis_ingest__redis_py_pipeline(benchmark: Any, redis_server: RedisServer) -> None:
    client = redis_server.client()
    seq = iter(range(1, 1000))

    def setup() -> tuple[tuple[list[tuple[str, str, float]]], dict[str, Any]]:
        client.flushdb()
        return (python_members(PIPELINE_SAMPLES, next(seq)),), {}

    def run(members: list[tuple[str, str, float]]) -> None:
        pipe = client.pipeline(transaction=False)
        for key, member, score in members:
            pipe.zadd(key, {member: score})
        pipe.execute()

    benchmark.extra_info.update(role="peer", label="redis-py pipeline, one ZADD per sample",
                                items=PIPELINE_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=3)


@pytest.mark.benchmark(group="redis-ingest")
def test_redis_ingest__round_trip_per_sample(benchmark: Any, redis_server: RedisServer) -> None:
    client = redis_server.client()
    seq = iter(range(1, 1000))

    def setup() -> tuple[tuple[list[tuple[str, str, float]]], dict[str, Any]]:
        client.flushdb()
        return (python_members(ROUND_TRIP_SAMPLES, next(seq)),), {}

    def run(members: list[tuple[str, str, float]]) -> None:
        for key, member, score in members:
            client.zadd(key, {member: score})

    benchmark.extra_info.update(role="peer", label="one ZADD round trip per sample (upstream)",
                                items=ROUND_TRIP_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=3)


DRAIN_SAMPLES = 100_000


@pytest.mark.benchmark(group="drain-encode")
def test_drain_encode__ours(benchmark: Any) -> None:
    def setup() -> tuple[tuple[PerformanceTarget], dict[str, Any]]:
        return (filled_target(DRAIN_SAMPLES, 0),), {}

    def run(perf: PerformanceTarget) -> None:
        batches = _core.drain_encode(perf, "bench-node", 7, 1, 0, 4 << 20)
        assert sum(b[1] for b in batches) == DRAIN_SAMPLES

    benchmark.extra_info.update(role="ours", label="drain + protobuf encode (Rust)",
                                items=DRAIN_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=10)


@pytest.mark.benchmark(group="drain-encode")
def test_drain_encode__get_metrics(benchmark: Any) -> None:
    """The Python-facing drain alone (to numpy), for scale: encoding from
    there in Python would come on top."""

    def setup() -> tuple[tuple[PerformanceTarget], dict[str, Any]]:
        return (filled_target(DRAIN_SAMPLES, 0),), {}

    def run(perf: PerformanceTarget) -> None:
        assert perf.get_metrics().sample_count() == DRAIN_SAMPLES

    benchmark.extra_info.update(role="ours", label="get_metrics() to numpy (no encoding)",
                                items=DRAIN_SAMPLES)
    benchmark.pedantic(run, setup=setup, rounds=10)
