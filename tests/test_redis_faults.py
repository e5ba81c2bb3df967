"""A Redis that stays up but refuses to store (issue 16): an error reply is
not an acknowledgement. Each fault is produced by a real ``redis-server``:
``maxmemory`` with ``noeviction`` (OOM), a snapshot directory that is full
(MISCONF), a replica (READONLY), a script that does not end (BUSY), a
snapshot being loaded (LOADING), and a key of another type (WRONGTYPE). Nothing is reported stored while refused;
once Redis takes writes again every sample is in it exactly once, except
the entries of a key Redis refuses for good, which are counted."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeless_telemetry import (
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryProcessor,
    _core,
)
from redis_fixture import RedisCluster, RedisServer

T0 = 1_700_000_000_000_000_000
METRIC = "function_execution_time"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def key(fid: str) -> str:
    return f"performance:{fid}:{METRIC}"


def member(i: int) -> str:
    """The member EDGELESS's format gives sample i (1 µs apart, value i µs)."""
    sec, ns = divmod(T0 + i * 1000, 10**9)
    s = np.format_float_positional(sec + ns / 1e9, unique=True, trim="-")
    v = np.format_float_positional((i + 1) * 1e-6, unique=True, trim="-")
    return f"{s}:{v}"


def record(perf: PerformanceTarget, fids: list[str], start: int, count: int) -> None:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"})
    i = np.arange(start, start + count)
    for fid in fids:
        node.fork({"FUNCTION_ID": fid}).observe_many(
            int(FunctionTime.EXECUTION), (i + 1) * 1e-6,
            timestamps_ns=T0 + i.astype(np.int64) * 1000)


def bodies(fids: list[str], per_function: int, *, per_body: int = 1000) -> list[bytes]:
    """Bodies of ``per_body`` samples per function, numbered 1, 2, ..."""
    out = []
    for n, start in enumerate(range(0, per_function, per_body)):
        perf = PerformanceTarget(capacity=per_body)
        record(perf, fids, start, min(per_body, per_function - start))
        (batch,) = _core.drain_encode(perf, "node-1", 7, n + 1, 0, 1 << 30)
        out.append(bytes(batch[3]))
    return out


def assert_all_stored(client: object, fids: list[str], per_function: int) -> None:
    expected = {member(i) for i in range(per_function)}
    for fid in fids:
        got = client.zrange(key(fid), 0, -1)  # type: ignore[attr-defined]
        assert len(got) == per_function and set(got) == expected, fid


def fault_logs(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """(warnings that Redis refuses, infos that it takes writes again)."""
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records]
    return (sum(lv == logging.WARNING and "does not take writes" in m for lv, m in msgs),
            sum(lv == logging.INFO and "takes writes again" in m for lv, m in msgs))


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="edgeless_telemetry")
    return caplog


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def make(*extra: str, name: str = "redis") -> RedisServer:
        s = RedisServer(tmp_path / f"{name}{len(servers)}")
        s.start(list(extra))
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_oom_nothing_reported_stored_until_redis_takes_it(
        make_redis: Callable[..., RedisServer], caplog_info: pytest.LogCaptureFixture) -> None:
    """A node ships 60,000 samples of 10 functions while Redis is at
    ``maxmemory`` (noeviction); then the limit is lifted."""
    redis = make_redis("--maxmemory", "2mb", "--maxmemory-policy", "noeviction",
                       "--appendonly", "no")
    client = redis.client()
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(10)]
    per_function = 6000
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=redis.url,
                                redis_ack_timeout_s=0.5).start()
    perf = PerformanceTarget(capacity=per_function)
    record(perf, fids, 0, per_function)
    rep = NodeReporter(perf, col.url, "node-oom", interval_s=0.05,
                       max_batch_bytes=64 << 10).start()
    try:
        wait_for("Redis to refuse", lambda: col.stats()["redis_error_replies_oom"] > 0)
        # Let the node send everything it holds while Redis refuses.
        # The node drains everything and keeps resending its oldest batch.
        wait_for("the node to hold every sample and be refused a few times",
                 lambda: rep.stats()["samples_sent"] + rep.stats()["pending_samples"]
                 == 10 * per_function and rep.stats()["batches_unconfirmed"] >= 10)
        wait_for("several refused attempts",
                 lambda: col.stats()["redis_error_replies_oom"] >= 10)
        stats, node = col.stats(), rep.stats()
        in_redis = sum(client.zcard(key(f)) for f in fids)
        assert in_redis < 10 * per_function
        # Nothing counted as stored that Redis does not hold.
        assert stats["redis_entries_written"] <= in_redis
        assert node["samples_sent"] <= in_redis
        assert node["samples_sent"] + node["pending_samples"] == 10 * per_function
        assert node["samples_dropped"] == 0
        assert stats["redis_failing_since"] > 0 and stats["redis_queue_batches"] > 0
        # One warning for the stretch of refusals, not one per attempt.
        assert fault_logs(caplog_info) == (stats["redis_faults"], 0)
        assert 2 * stats["redis_faults"] < stats["redis_error_replies_oom"]
        print(f"\nwhile refused: {in_redis} in Redis, node confirmed {node['samples_sent']},"
              f" {node['pending_samples']} pending; {stats['redis_error_replies_oom']} OOM replies")

        client.config_set("maxmemory", "0")
        wait_for("every sample confirmed",
                 lambda: rep.stats()["samples_sent"] == 10 * per_function, timeout=30)
        assert col.flush(10)
        assert_all_stored(client, fids, per_function)
        stats = col.stats()
        assert stats["redis_failing_since"] == 0
        assert stats["redis_entries_written"] == 10 * per_function
        assert stats["redis_entries_rejected"] == 0
        assert stats["redis_members_added"] == 10 * per_function
        warnings, infos = fault_logs(caplog_info)
        assert warnings == infos == stats["redis_faults"] >= 1
    finally:
        rep.stop()
        col.stop(1)


def bgsave_status(client: object) -> str:
    info = client.info("persistence")  # type: ignore[attr-defined]
    if info["rdb_bgsave_in_progress"]:
        return "running"
    return str(info["rdb_last_bgsave_status"])


def test_misconf_when_the_snapshot_disk_is_full(
        make_redis: Callable[..., RedisServer], tmp_path: Path,
        caplog_info: pytest.LogCaptureFixture) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(snap)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    redis = None
    try:
        # MISCONF needs a save point (the fixture has none) and the default
        # stop-writes-on-bgsave-error.
        redis = make_redis("--dir", str(snap), "--appendonly", "no", "--save", "3600 1",
                           "--stop-writes-on-bgsave-error", "yes")
        client = redis.client()
        client.set("something", "to save")
        filler = snap / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # the disk is full
            pass
        finally:
            os.close(fd)
        client.bgsave()
        wait_for("the snapshot to fail", lambda: bgsave_status(client) == "err")

        fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(5)]
        sent = bodies(fids, 3000)
        core = _core.CollectorCore(redis_url=redis.url, redis_ack_timeout_s=0.5)
        assert {core.ingest(b)[0] for b in sent} == {202}
        stats = core.stats()
        assert stats["redis_error_replies_misconf"] > 0
        assert stats["redis_entries_written"] == 0
        assert core.redis_last_error().startswith("MISCONF")
        assert client.dbsize() == 1

        filler.unlink()
        client.bgsave()
        wait_for("the snapshot to succeed", lambda: bgsave_status(client) == "ok")
        assert core.flush(20)
        assert_all_stored(client, fids, 3000)
        # A resent batch is answered by its job's fate: stored now.
        assert core.ingest(sent[0])[0] == 200
        stats = core.stats()
        assert stats["redis_entries_written"] == 5 * 3000
        assert stats["redis_failing_since"] == 0
        assert fault_logs(caplog_info) == (1, 1)
        core.close(1)
    finally:
        if redis is not None:
            redis.kill()  # a clean shutdown would save into the tmpfs first
        subprocess.run(["umount", "-l", str(snap)], capture_output=True)


def test_readonly_replica_then_promoted(
        make_redis: Callable[..., RedisServer], caplog_info: pytest.LogCaptureFixture) -> None:
    """The collector's address leads to a replica (a failover left it
    there); it reconnects on READONLY, and stores all once that address is
    a master again."""
    master = make_redis("--appendonly", "no")
    replica = make_redis("--appendonly", "no", "--replicaof", "127.0.0.1", str(master.port))
    client = replica.client()
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(5)]
    sent = bodies(fids, 3000)
    # Room for one batch (about 300 kB of ZADDs): the next ones get 503.
    core = _core.CollectorCore(redis_url=replica.url, redis_ack_timeout_s=0.5,
                               max_redis_queue_bytes=400_000)
    assert [core.ingest(b)[0] for b in sent] == [202, 503, 503]
    wait_for("reconnects", lambda: core.stats()["redis_connects"] >= 3)
    stats = core.stats()
    assert stats["redis_error_replies_readonly"] > 0 and stats["redis_entries_written"] == 0
    assert stats["batches_refused"] == 2 and stats["redis_queue_batches"] == 1
    assert core.redis_last_error().startswith("READONLY")
    assert client.dbsize() == 0

    client.execute_command("REPLICAOF", "NO", "ONE")
    # The node sends its batches again each period until each gets a 200:
    # the queued one is answered by its job's fate, the refused ones are
    # taken once there is room.
    wait_for("every batch confirmed",
             lambda: [core.ingest(b)[0] for b in sent] == [200, 200, 200])
    assert core.flush(20)
    assert_all_stored(client, fids, 3000)
    assert core.stats()["redis_entries_written"] == 5 * 3000
    assert fault_logs(caplog_info) == (1, 1)
    core.close(1)


def test_busy_script_then_killed(make_redis: Callable[..., RedisServer]) -> None:
    redis = make_redis("--appendonly", "no", "--busy-reply-threshold", "100")
    client = redis.client()
    blocker = threading.Thread(target=_run_forever_script, args=(redis.client(),))
    blocker.start()
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(3)]
    sent = bodies(fids, 2000)
    core = _core.CollectorCore(redis_url=redis.url, redis_ack_timeout_s=0.5)
    try:
        time.sleep(0.3)  # past busy-reply-threshold
        assert {core.ingest(b)[0] for b in sent} == {202}
        wait_for("BUSY", lambda: "BUSY" in core.redis_last_error())
        assert core.stats()["redis_entries_written"] == 0
    finally:
        killer = redis.client()
        wait_for("SCRIPT KILL", lambda: _script_kill(killer))
        blocker.join(10)
    assert core.flush(20)
    assert_all_stored(client, fids, 2000)
    core.close(1)


def _run_forever_script(client: object) -> None:
    try:
        client.eval("while true do end", 0)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - ends when SCRIPT KILL stops it
        pass


def _script_kill(client: object) -> bool:
    try:
        client.script_kill()  # type: ignore[attr-defined]
        return True
    except Exception:  # noqa: BLE001 - not running yet, or just ended
        return False


def test_loading_after_a_restart(tmp_path: Path) -> None:
    """Redis answers LOADING while it reads its snapshot back (slowed here
    with ``key-load-delay``); the collector waits it out."""
    server = RedisServer(tmp_path / "loading")
    server.start(["--appendonly", "no"])
    client = server.client()
    client.eval("for i = 1, 3000 do redis.call('set', 'k' .. i, 'v') end", 0)
    client.save()
    server.stop()
    proc = subprocess.Popen(
        [server.exe, "--port", str(server.port), "--bind", "127.0.0.1",
         "--dir", str(server.workdir), "--save", "", "--appendonly", "no",
         "--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def loading() -> bool:
            # A raw PING: redis-py would wait the loading out itself.
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith(b"-LOADING")
            except OSError:
                return False

        wait_for("Redis to be loading", loading, timeout=10)
        fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(3)]
        sent = bodies(fids, 2000)
        core = _core.CollectorCore(redis_url=server.url, redis_ack_timeout_s=0.2)
        assert {core.ingest(b)[0] for b in sent} == {202}
        wait_for("an answer", lambda: core.redis_last_error() != "")
        assert core.redis_last_error().startswith("LOADING")
        assert core.stats()["redis_error_replies_loading"] > 0
        assert core.flush(30)
        assert_all_stored(client, fids, 2000)
        assert client.dbsize() == 3000 + len(fids)
        core.close(1)
    finally:
        proc.kill()
        proc.wait()


def test_wrongtype_key_is_dropped_counted_and_named(
        make_redis: Callable[..., RedisServer], caplog_info: pytest.LogCaptureFixture) -> None:
    redis = make_redis("--appendonly", "no")
    client = redis.client()
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(5)]
    bad = fids[2]
    client.set(key(bad), "a string, not a sorted set")
    sent = bodies(fids, 3000)
    core = _core.CollectorCore(redis_url=redis.url, redis_ack_timeout_s=5)
    assert [core.ingest(b)[0] for b in sent] == [200, 200, 200]
    assert core.flush(10)
    good = [f for f in fids if f != bad]
    assert_all_stored(client, good, 3000)
    assert client.get(key(bad)) == "a string, not a sorted set"
    stats = core.stats()
    assert stats["redis_entries_rejected"] == 3000
    assert stats["redis_entries_written"] == 4 * 3000
    assert stats["redis_error_replies_wrongtype"] == 3
    assert stats["redis_failing_since"] == 0 and stats["redis_queue_batches"] == 0
    named = [r.getMessage() for r in caplog_info.records if key(bad) in r.getMessage()]
    assert len(named) == 1 and "WRONGTYPE" in named[0]
    assert fault_logs(caplog_info) == (0, 0)
    core.close(1)


def test_cluster_one_master_refusing_and_a_wrongtype_key(
        redis_cluster: RedisCluster, caplog_info: pytest.LogCaptureFixture) -> None:
    """Redis Cluster: keys on the masters that take writes are stored at
    once, those on a master at ``maxmemory`` wait for it, and a key of
    another type is dropped and counted."""
    client = redis_cluster.client()
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(12)]
    port = client.get_node_from_key(key(fids[1])).port
    refused = [f for f in fids if client.get_node_from_key(key(f)).port == port]
    bad = next(f for f in fids if f not in refused)
    client.set(key(bad), "a string, not a sorted set")
    full = redis_cluster.node(port)
    full.config_set("maxmemory-policy", "noeviction")
    full.config_set("maxmemory", "1")
    sent = bodies(fids, 2000)
    core = _core.CollectorCore(redis_url=redis_cluster.url, redis_ack_timeout_s=0.5)
    try:
        assert {core.ingest(b)[0] for b in sent} == {202}
        # The first batch's first attempt is settled: its WRONGTYPE entries
        # are counted, its OOM ones wait.
        wait_for("the first attempt", lambda: core.stats()["redis_entries_rejected"] == 1000
                 and core.stats()["redis_error_replies_oom"] > 0)
        assert core.stats()["redis_entries_written"] == 0
        # The first batch's commands for the other masters are stored already.
        for f in fids:
            want = 0 if f in refused or f == bad else 1000
            if f != bad:
                assert client.zcard(key(f)) == want, f
    finally:
        full.config_set("maxmemory", "0")
    assert core.flush(20)
    assert_all_stored(client, [f for f in fids if f != bad], 2000)
    stats = core.stats()
    assert stats["redis_entries_rejected"] == 2000
    assert stats["redis_entries_written"] == 11 * 2000
    assert stats["redis_members_added"] == 11 * 2000
    assert fault_logs(caplog_info) == (1, 1)
    core.close(1)


def test_close_is_not_held_by_a_redis_that_stopped_answering(
        make_redis: Callable[..., RedisServer]) -> None:
    """SIGSTOP: the host of Redis hangs; connections still open (the kernel
    accepts them) and nothing is answered. `close(0.5)` used to wait for
    the writer's 30 s read timeout; now it returns (bounded generously
    here), and every sample is still counted once, stored or abandoned,
    the batch being written at close included, once Redis wakes up."""
    redis = make_redis("--appendonly", "no")
    assert redis.proc is not None
    fids = [str(uuid.UUID(int=f + 1, version=4)) for f in range(3)]
    sent = bodies(fids, 4000)
    core = _core.CollectorCore(redis_url=redis.url, redis_ack_timeout_s=0.2)
    assert core.ingest(sent[0])[0] in (200, 202)
    assert core.flush(20)  # connected, first batch stored
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        assert {core.ingest(b)[0] for b in sent[1:]} == {202}
        wait_for("a batch in the writer's hands", lambda: core.stats()["redis_queue_bytes"] > 0)
        start = time.monotonic()
        core.close(0.5)
        assert time.monotonic() - start < 15  # the writer's read times out at 30 s
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    total = 3 * 4000

    def counted() -> bool:
        s = core.stats()
        return s["redis_entries_written"] + s["redis_entries_abandoned"] == total

    wait_for("every sample counted once", counted, timeout=60)
    s = core.stats()
    assert s["redis_entries_written"] >= 3 * 1000 and s["redis_entries_abandoned"] > 0
