"""Collector memory, issue 10 attack 5: what a body becomes decoded is
bounded before it is decoded.

A collector process of its own (the ``orchestrator`` command, writing a real
Redis and a CSV dataset) gets four hostile 16 MiB bodies at once over real
HTTP; its peak resident memory (``VmHWM``, reset before the attack) must stay
within 512 MiB of what it held before, and nothing may be written.
Before the pre-scan, one body of empty log entries took 1.6 GB and wrote
344 MB of CSV rows.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeless_telemetry import FunctionTime, PerformanceTarget, TelemetryProcessor, _core
from redis_fixture import RedisServer

MIB = 1 << 20
BODY_LIMIT = 16 * MIB  # the collector's default max_body_bytes
T0 = 1_764_000_000_000_000_000


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n == 0:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def field(key: bytes, payload: bytes) -> bytes:
    return key + varint(len(payload)) + payload


def request_body(perf: bytes, node: str = "node-x", seq: int = 1) -> bytes:
    """An UpdateNodeRequest: node_id (2), nonce (11), performance_samples
    (30), batch_sequence (1000)."""
    return (field(b"\x12", node.encode()) + b"\x58\x01" + field(b"\xf2\x01", perf)
            + b"\xc0\x3e" + varint(seq))


def fill(unit: bytes, head: int) -> bytes:
    """As many copies of ``unit`` as fit a body at the limit."""
    return unit * ((BODY_LIMIT - head - 64) // len(unit))


def empty_log_entries_body() -> tuple[bytes, int]:
    """One valid function id and ~8.4 million empty log entries (field 10
    of FunctionLogEntries, 2 bytes each)."""
    fid = field(b"\x0a", str(uuid.uuid4()).encode())
    entries = fill(b"\x52\x00", len(fid))
    body = request_body(field(b"\xc2\x0c", fid + entries))
    assert len(body) <= BODY_LIMIT
    return body, len(entries) // 2


def empty_series_body() -> tuple[bytes, int]:
    """~5.6 million empty execution-time series (field 100, 3 bytes each)."""
    series = fill(b"\xa2\x06\x00", 0)
    body = request_body(series)
    assert len(body) <= BODY_LIMIT
    return body, len(series) // 3


def full_reporter_body(seq: int) -> tuple[bytes, int]:
    """The fullest body a NodeReporter sends at its default 4 MiB."""
    perf = PerformanceTarget()
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "node-r"})
    i = np.arange(70_000, dtype=np.int64)
    for _ in range(2):
        h = node.fork({"FUNCTION_ID": str(uuid.uuid4())})
        h.observe_many(int(FunctionTime.EXECUTION), (i % 1000 + 1) * 1.7e-4,
                       timestamps_ns=T0 + i * 7919)
    batch = _core.drain_encode(perf, "node-r", 5, seq, 0, 4 * MIB)[0]
    return bytes(batch[3]), int(batch[1])


class Collector:
    """``edgeless-telemetry orchestrator`` in its own process."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeless_telemetry.cli", "orchestrator",
             "--listen", "http://127.0.0.1:0", "--redis-url", redis_url,
             "--dataset-path", prefix, "--stats-interval", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening on "), line
        self.host, port = line.split("http://")[1].strip().split(":")
        self.port = int(port)

    def status(self, name: str) -> int:
        """A ``/proc/<pid>/status`` memory line, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {name} in /proc/{self.proc.pid}/status")

    def reset_peak(self) -> int:
        """Resets the peak (VmHWM) to the current RSS; returns the latter."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.status("VmRSS")

    def post(self, body: bytes) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request("POST", "/performance", body=body,
                         headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def post_all(self, bodies: list[bytes]) -> list[tuple[int, str]]:
        """Sends every body at once, each on its own connection."""
        answers: list[tuple[int, str]] = [(0, "")] * len(bodies)
        start = threading.Barrier(len(bodies))

        def send(i: int) -> None:
            start.wait()
            answers[i] = self.post(bodies[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "a POST hung"
        return answers

    def stats(self) -> dict[str, int]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", "/stats")
            stats: dict[str, int] = json.loads(conn.getresponse().read())
            return stats
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def collector(tmp_path: Path, redis_server: RedisServer) -> Iterator[Collector]:
    c = Collector(redis_server.url, str(tmp_path / "ds") + "/")
    try:
        yield c
    finally:
        c.stop()


def written(tmp_path: Path, redis_server: RedisServer) -> tuple[bytes, bytes, list[str]]:
    r = redis_server.client()
    keys = sorted(r.keys("*"))
    return ((tmp_path / "ds" / "performance_samples.csv").read_bytes(),
            (tmp_path / "ds" / "application_logs.csv").read_bytes(),
            [f"{k}={r.zcard(k)}" for k in keys])


def test_four_hostile_bodies_at_once_stay_bounded_and_write_nothing(
    collector: Collector, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Warm up with one real batch, so the baseline holds a working collector.
    legit, n_legit = full_reporter_body(1)
    assert collector.post(legit)[0] == 200
    before = written(tmp_path, redis_server)
    logs_body, n_logs = empty_log_entries_body()
    series_body, n_series = empty_series_body()
    assert n_logs > 8_300_000 and n_series > 5_500_000
    for body, counter in [(logs_body, "refused_too_many_entries"),
                          (series_body, "refused_too_large_decoded")]:
        baseline = collector.reset_peak()
        answers = collector.post_all([body] * 4)
        peak = collector.status("VmHWM")
        print(f"\n{counter}: 4 x {len(body) / MIB:.1f} MiB bodies at once: peak "
              f"{(peak - baseline) / MIB:.0f} MiB above a baseline of {baseline / MIB:.0f} MiB;"
              f" answers {sorted({a[0] for a in answers})}")
        assert [a[0] for a in answers] == [413] * 4, answers
        assert peak - baseline <= 512 * MIB
        assert written(tmp_path, redis_server) == before
        assert collector.stats()[counter] == 4
    stats = collector.stats()
    assert stats["batches_stored"] == 1 and stats["samples_stored"] == n_legit
    assert stats["decoded_budget_bytes_in_use"] == 0
    # Still serving: the next real batch is stored.
    assert collector.post(full_reporter_body(2)[0])[0] == 200


def test_four_full_reporter_bodies_at_once_are_stored_within_the_budget(
    collector: Collector, tmp_path: Path, redis_server: RedisServer
) -> None:
    """What an honest body costs: four of the fullest a NodeReporter sends,
    at once, all stored (a 503 is sent again, as a node does)."""
    bodies = [full_reporter_body(seq) for seq in range(1, 5)]
    warm, n_warm = full_reporter_body(9)
    assert collector.post(warm)[0] == 200
    baseline = collector.reset_peak()
    answers = collector.post_all([b for b, _ in bodies])
    peak = collector.status("VmHWM")
    for (body, _), (code, why) in zip(bodies, answers, strict=True):
        while code in (202, 503):  # a node sends these again
            code, why = collector.post(body)
        assert code == 200, why
    stats = collector.stats()
    samples = sum(n for _, n in bodies)
    wire = sum(len(b) for b, _ in bodies)
    print(f"\n4 full NodeReporter bodies at once ({samples} samples, {wire / MIB:.1f} MiB):"
          f" peak {(peak - baseline) / MIB:.0f} MiB above baseline,"
          f" {(peak - baseline) / wire:.1f}x the bodies;"
          f" busy answers {stats['busy_decoded_budget']}")
    assert samples >= 4 * 131_000
    assert peak - baseline <= 512 * MIB
    assert stats["decoded_budget_bytes_in_use"] == 0
    rows = (tmp_path / "ds" / "performance_samples.csv").read_text().count("\n") - 1
    assert rows == stats["samples_stored"] == samples + n_warm  # each sample once


def test_core_limits_are_arguments_and_refusals_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _core.CollectorCore(max_entries_per_body=0)
    with pytest.raises(ValueError):
        _core.CollectorCore(max_decoded_bytes=0)
    prefix = str(tmp_path / "ds") + "/"
    core = _core.CollectorCore(dataset_path=prefix, max_entries_per_body=100_000,
                               max_decoded_bytes=8 * MIB)
    files = [tmp_path / "ds" / f for f in ("performance_samples.csv", "application_logs.csv")]
    empty = [f.read_bytes() for f in files]
    body, n = full_reporter_body(1)
    code, why = core.ingest(body)
    assert code == 413 and "max_entries_per_body" in why and n > 100_000
    small = request_body(field(b"\xa2\x06", field(b"\x0a", str(uuid.uuid4()).encode())
                                + field(b"\x52", b"\x08\x01\x19" + b"\0" * 8) * 50_000))
    code, why = core.ingest(small)
    assert code == 413 and "max_decoded_bytes" in why
    assert [f.read_bytes() for f in files] == empty
    stats = core.stats()
    assert stats["refused_too_many_entries"] == 1 and stats["refused_too_large_decoded"] == 1
    assert stats["batches_stored"] == 0 and stats["decoded_budget_bytes"] == 8 * MIB
    # The same 50,000 samples fit the default budget.
    assert _core.CollectorCore(dataset_path=prefix + "b_").ingest(small)[0] == 200
