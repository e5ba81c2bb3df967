"""The collector against a real Redis Cluster (issue 7): three
``redis-server`` masters formed by the fixture, read back through
redis-py's ``RedisCluster``; slot moves mid-run (ASK during a migration,
MOVED after it) are followed without losing or doubling a member."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter

import numpy as np
import pytest

from edgeless_telemetry import (
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryLogLevel,
    TelemetryProcessor,
    _core,
)
from redis_fixture import RedisCluster

T0 = 1_700_000_000_000_000_000
METRIC = {
    FunctionTime.INSTANTIATE: "function_instantiate_time",
    FunctionTime.INIT: "function_init_time",
    FunctionTime.EXECUTION: "function_execution_time",
    FunctionTime.STOP: "function_stop_time",
    FunctionTime.TRANSFER: "function_transfer_time",
}


def edgeless_float(x: float) -> str:
    return np.format_float_positional(x, unique=True, trim="-")


def score(ts_ns: int) -> float:
    sec, ns = divmod(ts_ns, 10**9)
    return sec + ns / 1e9


class Node:
    """A PerformanceTarget fed known samples; remembers what Redis must hold."""

    def __init__(self) -> None:
        self.perf = PerformanceTarget()
        self.node = TelemetryProcessor([self.perf], log=False).get_handle({"NODE_ID": "n"})
        self.expected: dict[str, dict[str, float]] = {}
        self.next = 0

    def record(self, fid: str, kinds: list[FunctionTime], n: int) -> None:
        h = self.node.fork({"FUNCTION_ID": fid})
        for kind in kinds:
            i = np.arange(self.next, self.next + n, dtype=np.int64)
            ts = T0 + i * 1_000_000 + int(kind) * 1000
            values = (i + 1) * 1e-4 + int(kind) * 1e-7
            h.observe_many(int(kind), values, timestamps_ns=ts)
            members = self.expected.setdefault(f"performance:{fid}:{METRIC[kind]}", {})
            for t, v in zip(ts, values, strict=True):
                s = score(int(t))
                members[f"{edgeless_float(s)}:{edgeless_float(float(v))}"] = s
        self.next += n


def stored(client: object, keys: list[str]) -> dict[str, dict[str, float]]:
    return {k: dict(client.zrange(k, 0, -1, withscores=True)) for k in keys}  # type: ignore[attr-defined]


def test_collector_and_reporter_on_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    node = Node()
    fids = [str(uuid.uuid4()) for _ in range(12)]
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_cluster.url).start()
    rep = NodeReporter(node.perf, col.url, "node-1", interval_s=60)
    try:
        for _ in range(3):
            for fid in fids:
                node.record(fid, list(FunctionTime), 40)
            assert rep.flush(), rep.last_error
        assert col.flush(10)
        stats = col.stats()
    finally:
        col.stop(1)
    keys = sorted(node.expected)
    samples = sum(len(m) for m in node.expected.values())
    assert stats["samples_stored"] == samples == 12 * 5 * 40 * 3
    assert stats["redis_members_added"] == samples and stats["redis_error_replies"] == 0
    got = stored(redis_cluster.client(), keys)
    assert got == node.expected, "every key, member and score, read through RedisCluster"
    # Spread: each master holds some of the keys, none holds all.
    per_node = {p: redis_cluster.node(p).dbsize() for p in redis_cluster.ports}
    assert sum(per_node.values()) == len(keys) == 60
    assert sum(1 for n in per_node.values() if n > 0) >= 2, per_node
    print(f"\ncluster: {samples} samples in {len(keys)} keys over masters {per_node}; "
          f"{stats['redis_connects']} connections, {stats['redis_cluster_map_reads']} map reads")


def test_cluster_master_killed_under_load(redis_cluster: RedisCluster) -> None:
    """One of the three masters is SIGKILLed while a node ships every 20 ms
    and comes back (its fsynced AOF holds what it acknowledged): every
    member is in the cluster exactly once."""
    node = Node()
    # Half of the functions live on the master that is killed, so the kill
    # is certain to be met (random ids could all miss it).
    rc = redis_cluster.client()
    victim = redis_cluster.ports[1]

    def on_victim(fid: str) -> bool:
        port: int = rc.get_node_from_key(f"performance:{fid}:function_execution_time").port
        return port == victim

    fids: list[str] = []
    while len(fids) < 12:
        fid = str(uuid.uuid4())
        if on_victim(fid) == (len(fids) % 2 == 0):
            fids.append(fid)
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis_cluster.url).start()
    rep = NodeReporter(node.perf, col.url, "node-1", interval_s=0.02, timeout_s=3).start()
    try:
        for step in range(50):
            for fid in fids:
                node.record(fid, [FunctionTime.EXECUTION], 10)
            time.sleep(0.01)
            if step == 15:
                redis_cluster.servers[1].kill()
            if step == 30:
                # Restart only once the collector has met the dead master
                # (on a slow machine it may not have written there yet).
                deadline = time.monotonic() + 20
                while col.stats()["redis_connection_failures"] == 0:
                    assert time.monotonic() < deadline, "the collector never met the killed master"
                    time.sleep(0.02)
                redis_cluster.restart(1)
        rep.stop()
        deadline = time.monotonic() + 20
        while not rep.flush(deadline=deadline):
            assert time.monotonic() < deadline, rep.last_error
            time.sleep(0.05)
        stats = col.stats()
    finally:
        col.stop(1)
    got = stored(redis_cluster.client(), sorted(node.expected))
    assert got == node.expected
    samples = sum(len(m) for m in node.expected.values())
    assert rep.stats()["samples_sent"] == samples and rep.stats()["samples_dropped"] == 0
    assert stats["redis_connection_failures"] > 0, "the kill should have been noticed"
    print(f"\ncluster master killed: {samples} samples, 1 master restarted,"
          f" {stats['redis_connection_failures']} failed writes retried,"
          f" {rep.stats()['batches_unconfirmed']} answers 202 resent; every key exact, 0 lost")


def key_in_slot(client: object, slot: int, fid: str) -> str:
    """A log target whose key ``performance:<fid>:<target>`` hashes to ``slot``."""
    for i in range(2_000_000):
        key = f"performance:{fid}:t{i}"
        if client.keyslot(key) == slot:  # type: ignore[attr-defined]
            return f"t{i}"
    raise AssertionError("no key found")


def body(perf: PerformanceTarget, seq: int) -> bytes:
    (batch,) = _core.drain_encode(perf, "node-1", 5, seq, 0, 1 << 24)
    return bytes(batch[3])


def test_slot_migration_ask_and_moved(redis_cluster: RedisCluster) -> None:
    rc = redis_cluster.client()
    node = Node()
    fid = str(uuid.uuid4())
    key = f"performance:{fid}:function_execution_time"
    slot = rc.keyslot(key)
    source = rc.get_node_from_key(key).port
    target = next(p for p in redis_cluster.ports if p != source)
    src, dst = redis_cluster.node(source), redis_cluster.node(target)
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    # Each ingest must be acknowledged (200); a busy machine with fsynced
    # AOF may take longer than the default 2 s to do it.
    core = _core.CollectorCore(redis_url=redis_cluster.url, redis_ack_timeout_s=30.0)
    try:
        node.record(fid, [FunctionTime.EXECUTION], 50)
        assert core.ingest(body(node.perf, 1))[0] == 200
        # Migration starts: the existing key stays served by the source, a
        # new key of the same slot is answered with ASK (the target has it).
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        target_name = key_in_slot(rc, slot, fid)
        node.record(fid, [FunctionTime.EXECUTION], 50)
        h = node.node.fork({"FUNCTION_ID": fid})
        h.log(TelemetryLogLevel.INFO, target_name, "during the migration")
        assert core.ingest(body(node.perf, 2))[0] == 200
        assert core.stats()["redis_cluster_asked"] >= 1
        # Migration ends: keys moved, slot given to the target everywhere;
        # the collector's map is now stale and Redis answers MOVED.
        keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        for p in redis_cluster.ports:
            redis_cluster.node(p).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        node.record(fid, [FunctionTime.EXECUTION], 50)
        assert core.ingest(body(node.perf, 3))[0] == 200
        stats = core.stats()
        assert stats["redis_cluster_moved"] >= 1 and stats["redis_cluster_map_reads"] >= 2
    finally:
        core.close(1)
    assert dst.zcard(key) == 150 and src.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
    assert dict(dst.zrange(key, 0, -1, withscores=True)) == node.expected[key]
    logs = dst.zrange(f"performance:{fid}:{target_name}", 0, -1)
    assert len(logs) == 1 and logs[0].endswith(":during the migration")
    assert stats["redis_members_added"] == 151 and stats["redis_error_replies"] == 0
    print(f"\nmigration of slot {slot}: {stats['redis_cluster_asked']} ASK, "
          f"{stats['redis_cluster_moved']} MOVED followed, 151 members stored once")


def test_summary_reads_a_redis_cluster(redis_cluster: RedisCluster) -> None:
    node = Node()
    fids = [str(uuid.uuid4()) for _ in range(4)]
    for fid in fids:
        node.record(fid, [FunctionTime.EXECUTION, FunctionTime.INIT], 30)
    core = _core.CollectorCore(redis_url=redis_cluster.url)
    assert core.ingest(body(node.perf, 1))[0] == 200
    core.close(1)
    out = subprocess.run(
        [sys.executable, "-m", "edgeless_telemetry.cli", "summary", "--redis-url",
         redis_cluster.url], capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    counts = Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in fids:
            counts[parts[1]] += int(parts[2])
    assert counts == {"execution": 120, "init": 120}


def test_cluster_url_is_checked_early() -> None:
    with pytest.raises(ValueError, match="database 0"):
        _core.CollectorCore(redis_url="redis+cluster://127.0.0.1:7000/1")
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        _core.CollectorCore(redis_url="cluster://127.0.0.1:7000")
