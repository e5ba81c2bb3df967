"""Shipping under faults: the collector process killed and restarted, Redis
stopped and restarted, the orchestrator unreachable. Every sample recorded
on the node must end up stored exactly once (or be counted as dropped when
the node's budget is exceeded)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from edgeless_telemetry import (
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryHandle,
    TelemetryProcessor,
    _core,
)
from ports import free_port
from redis_fixture import RedisServer

T0 = 1_700_000_000_000_000_000


def handle(perf: PerformanceTarget, fid: str) -> TelemetryHandle:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"})
    return node.fork({"FUNCTION_ID": fid})


class Feeder:
    """Records unique samples (value i * 1e-6, 1 µs apart) in slices."""

    def __init__(self, h: TelemetryHandle) -> None:
        self.h = h
        self.n = 0

    def feed(self, count: int) -> None:
        i = np.arange(self.n, self.n + count)
        self.h.observe_many(int(FunctionTime.EXECUTION), (i + 1) * 1e-6,
                            timestamps_ns=T0 + i.astype(np.int64) * 1000)
        self.n += count

    def expected_members(self, indices: range | None = None) -> set[str]:
        out = set()
        for i in indices if indices is not None else range(self.n):
            sec, ns = divmod(T0 + i * 1000, 10**9)
            s = np.format_float_positional(sec + ns / 1e9, unique=True, trim="-")
            v = np.format_float_positional((i + 1) * 1e-6, unique=True, trim="-")
            out.add(f"{s}:{v}")
        return out


def start_orchestrator(port: int, redis_url: str, prefix: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeless_telemetry.cli", "orchestrator",
         "--listen", f"http://127.0.0.1:{port}", "--redis-url", redis_url,
         "--dataset-path", prefix, "--append", "--stats-interval", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("listening on")
    return proc


def test_collector_killed_and_restarted(redis_server: RedisServer, tmp_path: Path) -> None:
    fid = str(uuid.uuid4())
    perf = PerformanceTarget()
    feeder = Feeder(handle(perf, fid))
    port = free_port()
    prefix = str(tmp_path / "ds_")
    orc = start_orchestrator(port, redis_server.url, prefix)
    rep = NodeReporter(perf, f"http://127.0.0.1:{port}", "node-1", interval_s=0.02,
                       timeout_s=1.0).start()
    try:
        for step in range(60):
            feeder.feed(200)
            time.sleep(0.01)
            if step == 20:
                orc.kill()  # SIGKILL: no goodbye, replies may be lost
                orc.wait()
            if step == 35:
                orc = start_orchestrator(port, redis_server.url, prefix)
        assert rep.stop(), rep.last_error
        stats = rep.stats()
        assert stats["send_failures"] > 0, "the kill should have been noticed"
        assert stats["samples_dropped"] == 0 and stats["samples_sent"] == feeder.n
    finally:
        orc.terminate()
        orc.wait(10)
    members = redis_server.client().zrange(f"performance:{fid}:function_execution_time", 0, -1)
    assert len(members) == feeder.n
    assert set(members) == feeder.expected_members()
    with open(prefix + "performance_samples.csv") as f:
        rows = f.read().splitlines()
    assert rows.count("identifier,metric,timestamp,value") == 1
    counts = Counter(rows[1:])
    assert len(counts) == feeder.n
    assert set(counts.values()) == {1}, "a resent batch was stored twice"


def test_redis_stopped_and_restarted(redis_server: RedisServer, tmp_path: Path) -> None:
    fid = str(uuid.uuid4())
    perf = PerformanceTarget()
    feeder = Feeder(handle(perf, fid))
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_server.url).start()
    rep = NodeReporter(perf, col.url, "node-1", interval_s=0.02).start()
    try:
        for step in range(60):
            feeder.feed(200)
            time.sleep(0.01)
            if step == 15:
                redis_server.stop()
            if step == 40:
                assert col.stats()["redis_connection_failures"] > 0
                redis_server.start()
        assert rep.stop()
        assert col.flush(15), col.core.redis_last_error()
        stats = col.stats()
    finally:
        col.stop(1)
    assert stats["samples_stored"] == feeder.n
    assert stats["redis_connects"] >= 2
    members = redis_server.client().zrange(f"performance:{fid}:function_execution_time", 0, -1)
    assert len(members) == feeder.n
    assert set(members) == feeder.expected_members()


def test_full_redis_queue_pushes_back_to_the_node(tmp_path: Path) -> None:
    """Redis unreachable and its queue bound tiny: the collector takes one
    node's batch (202: queued only, so that node keeps it and sends it
    again, answered 202 again without queueing it twice), and answers 503
    to the other node; both nodes keep everything."""
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=f"redis://127.0.0.1:{free_port()}",
                                max_redis_queue_bytes=1).start()
    reps = []
    try:
        for k in range(2):
            perf = PerformanceTarget()
            feeder = Feeder(handle(perf, str(uuid.uuid4())))
            rep = NodeReporter(perf, col.url, f"node-{k}", interval_s=60, timeout_s=3)
            reps.append(rep)
            for _ in range(3):
                feeder.feed(10)
                assert not rep.flush()
            stats = rep.stats()
            assert stats["batches_sent"] == 0 and stats["pending_batches"] == 3
            assert stats["pending_samples"] == 30 and stats["samples_dropped"] == 0
        assert reps[0].stats()["batches_unconfirmed"] == 3 and "202" in reps[0].last_error
        assert reps[1].stats()["send_failures"] == 3 and "503" in reps[1].last_error
        stats = col.stats()
        assert stats["batches_stored"] == 1 and stats["batches_duplicate"] == 2
        assert stats["batches_refused"] == 3 and stats["redis_queue_batches"] == 1
    finally:
        col.stop(0)


def test_reporter_budget_drops_oldest_and_counts() -> None:
    perf = PerformanceTarget()
    feeder = Feeder(handle(perf, str(uuid.uuid4())))
    rep = NodeReporter(perf, f"http://127.0.0.1:{free_port()}", "node-1", interval_s=60,
                       timeout_s=0.2, max_pending_bytes=5000)
    sizes = []
    for _ in range(10):
        feeder.feed(100)
        rep.flush()
        sizes.append(rep.stats()["pending_bytes"])
    stats = rep.stats()
    assert max(sizes) <= 5000
    assert stats["batches_dropped"] > 0
    assert stats["samples_dropped"] + stats["pending_samples"] == feeder.n
    assert stats["batches_sent"] == 0 and stats["send_failures"] == 10


def test_collector_restarted_in_process_on_the_same_port(tmp_path: Path) -> None:
    """A node with a kept-alive connection reaches the new collector."""
    perf = PerformanceTarget()
    feeder = Feeder(handle(perf, str(uuid.uuid4())))
    port = free_port()
    prefix = str(tmp_path / "d_")
    col = OrchestratorCollector(f"http://127.0.0.1:{port}", dataset_path=prefix).start()
    rep = NodeReporter(perf, f"http://127.0.0.1:{port}", "node-1", interval_s=60, timeout_s=1)
    feeder.feed(10)
    assert rep.flush()
    col.stop()
    col = OrchestratorCollector(f"http://127.0.0.1:{port}", dataset_path=prefix,
                                append=True).start()
    try:
        feeder.feed(10)
        assert rep.flush(), rep.last_error
        assert col.stats()["samples_stored"] == 10
    finally:
        col.stop()
    with open(prefix + "performance_samples.csv") as f:
        assert len(f.read().splitlines()) == 1 + 20


def test_nodes_in_parallel_each_stored_once(redis_server: RedisServer) -> None:
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_server.url).start()
    nodes = []
    for k in range(4):
        perf = PerformanceTarget()
        fid = str(uuid.uuid4())
        nodes.append((fid, Feeder(handle(perf, fid)),
                      NodeReporter(perf, col.url, f"node-{k}", interval_s=0.01).start()))
    try:
        for _ in range(30):
            for _, feeder, _ in nodes:
                feeder.feed(100)
            time.sleep(0.005)
        for _, _, rep in nodes:
            assert rep.stop()
        assert col.flush(10)
    finally:
        col.stop(1)
    r = redis_server.client()
    for fid, feeder, _ in nodes:
        members = r.zrange(f"performance:{fid}:function_execution_time", 0, -1)
        assert set(members) == feeder.expected_members() and len(members) == feeder.n


def csv_members(prefix: str) -> Counter[str]:
    """``score:value`` of every sample row, counted."""
    with open(prefix + "performance_samples.csv") as f:
        rows = f.read().splitlines()
    assert rows[0] == "identifier,metric,timestamp,value"
    return Counter(":".join(r.split(",")[2:4]) for r in rows[1:])


def test_orchestrator_down_longer_than_the_buffer_drops_exactly_the_oldest(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Nobody listens while the node records 12 slices of 100 samples into
    a 12000-byte budget: the oldest bodies go and are counted; once the
    collector is up, exactly the newest samples arrive, in Redis and CSV."""
    fid = str(uuid.uuid4())
    perf = PerformanceTarget()
    feeder = Feeder(handle(perf, fid))
    port = free_port()
    rep = NodeReporter(perf, f"http://127.0.0.1:{port}", "node-1", interval_s=60,
                       timeout_s=0.5, max_pending_bytes=12000)
    for _ in range(12):
        feeder.feed(100)
        assert not rep.flush()
    down = rep.stats()
    dropped = down["samples_dropped"]
    assert 0 < dropped and dropped + down["pending_samples"] == feeder.n
    assert down["pending_bytes"] <= 12000 and down["batches_dropped"] == dropped // 100
    prefix = str(tmp_path / "ds_")
    col = OrchestratorCollector(f"http://127.0.0.1:{port}", redis_url=redis_server.url,
                                dataset_path=prefix).start()
    try:
        feeder.feed(100)  # and the node goes on recording
        assert rep.flush(), rep.last_error
        assert col.flush(10)
    finally:
        col.stop()
    after = rep.stats()
    # The first drain after recovery still met a full budget (it drains,
    # then sends): one more oldest body went, counted like the others.
    dropped = after["samples_dropped"]
    assert after["samples_sent"] == feeder.n - dropped and after["pending_samples"] == 0
    newest = feeder.expected_members(range(dropped, feeder.n))
    members = redis_server.client().zrange(f"performance:{fid}:function_execution_time", 0, -1)
    assert len(members) == feeder.n - dropped and set(members) == newest
    rows = csv_members(prefix)
    assert set(rows) == newest and set(rows.values()) == {1}
    print(f"\norchestrator down: {feeder.n} samples recorded, {dropped} dropped (the oldest"
          f" {after['batches_dropped']} bodies), {feeder.n - dropped} stored once in Redis and CSV")


def collector_stats(port: int) -> dict[str, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        stats: dict[str, int] = json.loads(conn.getresponse().read())
        return stats
    finally:
        conn.close()


def test_collector_and_redis_killed_under_load(redis_server: RedisServer, tmp_path: Path) -> None:
    """Two nodes ship every 20 ms while the collector process is SIGKILLed
    twice and Redis is SIGKILLed once (each restarted; the second collector
    kill falls while Redis is down, with batches queued for it): every
    sample is in Redis and in the CSV dataset exactly once."""
    nodes = []
    port = free_port()
    prefix = str(tmp_path / "ds_")
    orc = start_orchestrator(port, redis_server.url, prefix)
    for k in range(2):
        perf = PerformanceTarget()
        fid = str(uuid.uuid4())
        nodes.append((fid, Feeder(handle(perf, fid)),
                      NodeReporter(perf, f"http://127.0.0.1:{port}", f"node-{k}",
                                   interval_s=0.02, timeout_s=3.0).start()))
    restarts = {"collector": 0, "redis": 0}
    try:
        for step in range(100):
            for _, feeder, _ in nodes:
                feeder.feed(150)
            time.sleep(0.01)
            if step in (15, 60):
                orc.kill()
                orc.wait()
            if step in (25, 70):
                orc = start_orchestrator(port, redis_server.url, prefix)
                restarts["collector"] += 1
            if step == 40:
                redis_server.kill()
            if step == 65:
                redis_server.start()
                restarts["redis"] += 1
        for _, _, rep in nodes:
            rep.stop()
            # On a busy machine the last 202s may need a few more rounds.
            deadline = time.monotonic() + 20
            while not rep.flush(deadline=deadline):
                assert time.monotonic() < deadline, rep.last_error
                time.sleep(0.05)
        final = collector_stats(port)
    finally:
        orc.terminate()
        orc.wait(10)
    r = redis_server.client()
    rows = csv_members(prefix)
    total = 0
    for fid, feeder, rep in nodes:
        stats = rep.stats()
        assert stats["samples_dropped"] == 0 and stats["samples_sent"] == feeder.n
        assert stats["send_failures"] > 0
        members = r.zrange(f"performance:{fid}:function_execution_time", 0, -1)
        assert len(members) == feeder.n and set(members) == feeder.expected_members()
        total += feeder.n
    # Both nodes' samples share timestamps and values, so each CSV member
    # appears once per node: twice, never more, never less.
    assert len(rows) == nodes[0][1].n and set(rows.values()) == {2}
    assert sum(rows.values()) == total
    failures = sum(rep.stats()["send_failures"] for _, _, rep in nodes)
    unconfirmed = sum(rep.stats()["batches_unconfirmed"] for _, _, rep in nodes)
    assert unconfirmed > 0, "some batches should have met Redis down"
    print(f"\nkills under load: {total} samples from 2 nodes, collector restarted"
          f" {restarts['collector']}x, Redis restarted {restarts['redis']}x, {failures} failed"
          f" sends retried, {unconfirmed} answers 202 (queued for Redis) resent,"
          f" last collector: {final['batches_duplicate']} duplicates;"
          f" 0 lost, 0 duplicated (Redis and CSV)")


def test_batch_without_samples_needs_no_redis() -> None:
    """A body with no samples is stored at once (200) even with Redis
    down: it queues nothing that could pile up."""
    core = _core.CollectorCore(redis_url=f"redis://127.0.0.1:{free_port()}")
    empty = b"\x12\x01n" + b"\x58\x05" + b"\xc0\x3e\x01"  # node_id, nonce, batch_sequence
    try:
        assert core.ingest(empty)[0] == 200
        assert core.ingest(empty) == (200, "duplicate batch, already stored")
        assert core.stats()["redis_queue_batches"] == 0
    finally:
        core.close(0)
