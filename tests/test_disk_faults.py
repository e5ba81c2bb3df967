"""Storage faults on real, small filesystems: the collector's CSV dataset
takes a batch whole or not at all, and the tracer's counts say exactly what
its file holds.

A size-limited tmpfs is mounted for each test (we run as root); where mount
is not permitted, each test runs itself again in a child process whose file
size is capped by RLIMIT_FSIZE (writes then fail with EFBIG instead of
ENOSPC). "Filling" leaves a given number of bytes free (tmpfs: a filler file;
the cap: the largest file may grow that much); "freeing" deletes the filler
(lifts the cap).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeless_telemetry import (
    ControlPlaneTracer,
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryProcessor,
    _core,
)

T0 = 1_700_000_000_123_456_789
METRIC = {
    FunctionTime.INSTANTIATE: "function_instantiate_time",
    FunctionTime.INIT: "function_init_time",
    FunctionTime.EXECUTION: "function_execution_time",
    FunctionTime.STOP: "function_stop_time",
    FunctionTime.TRANSFER: "function_transfer_time",
}
PAGE = 4096


class Tmpfs:
    """A mounted tmpfs of `size` bytes; fill() leaves `free` bytes."""

    kind = "tmpfs"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self, free: int) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            chunk = b"\0" * (16 * PAGE)
            while True:
                try:
                    if os.write(fd, chunk) == 0:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        # Round the room up to whole pages, as tmpfs counts them.
        room = -(-free // PAGE) * PAGE
        os.truncate(self.filler, max(0, size - room) // PAGE * PAGE)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


class FileSizeCap:
    """RLIMIT_FSIZE in this (child) process: fill() lets the largest file
    in the directory grow by `free` bytes; free() lifts the cap."""

    kind = "rlimit"

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self, free: int) -> None:
        largest = max((p.stat().st_size for p in self.path.rglob("*") if p.is_file()), default=0)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + free, hard))

    def free(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


Disk = Tmpfs | FileSizeCap


@contextlib.contextmanager
def mounted(path: Path, size: int) -> Iterator[Tmpfs | None]:
    """A tmpfs of `size` bytes at `path`, or None if mount is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        yield None
        return
    if done.returncode != 0 or os.statvfs(path).f_blocks * os.statvfs(path).f_frsize > 2 * size:
        yield None
        return
    try:
        yield Tmpfs(path)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


def run_on_small_fs(scenario: Callable[[Disk], None], tmp_path: Path, size: int) -> None:
    """Runs `scenario` on a tmpfs; without mount rights, in a child process
    under RLIMIT_FSIZE; skips only if neither can be had."""
    with mounted(tmp_path / "fs", size) as fs:
        if fs is not None:
            scenario(fs)
            return
    if not hasattr(resource, "RLIMIT_FSIZE"):
        pytest.skip("neither a tmpfs mount (needs root) nor RLIMIT_FSIZE is available here")
    child = subprocess.run(
        [sys.executable, __file__, scenario.__name__, str(tmp_path / "capped")],
        capture_output=True, text=True, timeout=50,
        cwd=Path(__file__).parent, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert child.returncode == 0, child.stdout + child.stderr


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def edgeless_float(x: float) -> str:
    return str(np.format_float_positional(x, unique=True, trim="-"))


def score(ts_ns: int) -> float:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return sec + ns / 1e9


# --- the collector's dataset -------------------------------------------------


def node_batch(fid: str, per_kind: int, logs: int, log_bytes: int) -> tuple[
        PerformanceTarget, list[list[str]], list[str]]:
    """A node's PerformanceTarget holding `per_kind` samples of each of the
    five kinds and `logs` log entries with commas, quotes and newlines; and
    the CSV rows they must become."""
    perf = PerformanceTarget()
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "node-1"})
    h = node.fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "python"})
    samples = []
    for kind in FunctionTime:
        ts = T0 + np.arange(per_kind, dtype=np.int64) * 1_000_000 + int(kind) * 17
        values = (np.arange(per_kind) + 1) * 1e-4 + int(kind) * 1e-7
        assert h.observe_many(int(kind), values, timestamps_ns=ts) == per_kind
        samples += [[fid, METRIC[kind], edgeless_float(score(int(t))), edgeless_float(float(v))]
                    for t, v in zip(ts, values, strict=True)]
    messages = []
    for i in range(logs):
        msg = f'entry {i}, "quoted"\nsecond line ' + "x" * log_bytes
        h.log("INFO", "disk-test", msg)
        messages.append(msg)
    return perf, samples, messages


def check_dataset(prefix: Path, samples: list[list[str]], messages: list[str],
                  batches: int | None) -> None:
    """Every row once, no partial row; `batches` journal lines (None: the
    journal was compacted by a restart, which rewrites it)."""
    rows = csv_rows(Path(f"{prefix}performance_samples.csv"))
    assert rows[0] == ["identifier", "metric", "timestamp", "value"]
    assert sorted(rows[1:]) == sorted(samples)
    logs = csv_rows(Path(f"{prefix}application_logs.csv"))
    assert logs[0] == ["identifier", "target", "timestamp", "value"]
    assert sorted(r[3] for r in logs[1:]) == sorted(messages)
    if batches is not None:
        # An "L" line (the CSV lengths at open), then one "B" line per batch.
        journal = Path(f"{prefix}collector_state.tsv").read_text().splitlines()
        assert journal[0].startswith("L\t")
        assert len(journal) == 1 + batches and all(line.startswith("B\t") for line in journal[1:])


def scenario_collector_refuses_then_stores_once(disk: Disk) -> None:
    fid = str(uuid.uuid4())
    perf, samples, messages = node_batch(fid, per_kind=1000, logs=100, log_bytes=8000)
    assert len(samples) == 5000
    prefix = disk.path / "ds" / "run_"
    col = OrchestratorCollector("http://127.0.0.1:0", dataset_path=str(prefix)).start()
    rep = NodeReporter(perf, col.url, "node-1", interval_s=3600, timeout_s=5)
    try:
        empty = {p.name: p.stat().st_size for p in prefix.parent.iterdir()}
        samples_bytes = sum(len(",".join(r)) + 1 for r in samples)
        # Room for every sample row and some of the log rows: the batch
        # fails in application_logs.csv after performance_samples.csv took
        # all of its rows, so both must be cut back.
        disk.fill(samples_bytes + 100 * 1000)
        for attempt in range(3):  # the node resends while the disk is full
            assert not rep.flush(deadline=time.monotonic() + 10)
            assert rep.last_error.startswith("HTTP 507"), rep.last_error
            assert "application_logs.csv" in rep.last_error, rep.last_error
            assert {p.name: p.stat().st_size for p in prefix.parent.iterdir()} == empty
            assert rep.stats()["pending_batches"] == 1
            assert col.stats()["dataset_errors"] == attempt + 1
        assert col.stats()["batches_stored"] == 0
        disk.free()
        assert rep.flush(deadline=time.monotonic() + 10), rep.last_error
        stats = col.stats()
        assert (stats["batches_stored"], stats["samples_stored"]) == (1, 5000)
        assert stats["log_entries_stored"] == 100
        assert rep.stats()["pending_batches"] == 0
        check_dataset(prefix, samples, messages, batches=1)
        print(f"\ncollector on a full {disk.kind}: 3 attempts refused (507), files unchanged; "
              f"then {stats['samples_stored']} samples and {stats['log_entries_stored']} log "
              "entries stored once")
    finally:
        rep.stop()
        col.stop(1)
    # A collector restarted on the dataset still knows the batch (the
    # journal line went in with it) and stores it no second time.
    again = _core.CollectorCore(dataset_path=str(prefix), append=True)
    perf2, _, _ = node_batch(fid, per_kind=1000, logs=100, log_bytes=8000)
    (batch,) = _core.drain_encode(perf2, "node-1", rep.nonce, 1, 0, 1 << 24)
    status, reason = again.ingest(bytes(batch[3]))
    assert status == 200 and "duplicate" in reason
    again.close(0)
    check_dataset(prefix, samples, messages, batches=None)


def test_full_disk_collector_refuses_whole_batch_then_stores_it_once(tmp_path: Path) -> None:
    run_on_small_fs(scenario_collector_refuses_then_stores_once, tmp_path, size=2 << 20)


def test_journal_write_failure_cuts_the_rows_back(tmp_path: Path) -> None:
    """The rows fit in the pages their files already have, the journal
    (its first page filled up) needs a new one: the journal line fails, and
    the rows written before it are cut off again."""
    with mounted(tmp_path / "fs", 256 << 10) as fs:
        if fs is None:
            pytest.skip("needs a tmpfs mount (root): the page-exact fill has no RLIMIT_FSIZE form")
        prefix = fs.path / "run_"
        core = _core.CollectorCore(dataset_path=str(prefix))
        fid = str(uuid.uuid4())
        perf, samples, messages = node_batch(fid, per_kind=2, logs=1, log_bytes=10)
        (batch,) = _core.drain_encode(perf, "node-1", 7, 1, 0, 1 << 24)
        body = bytes(batch[3])
        # The journal holds its "L" line; pad its page with a line the
        # collector skips (an unknown kind), so the batch's line needs a
        # new page.
        journal = fs.path / "run_collector_state.tsv"
        sizes = {p.name: p.stat().st_size for p in fs.path.iterdir()}
        with journal.open("a") as f:
            f.write("#" * (4096 - sizes[journal.name] - 1) + "\n")
        assert journal.stat().st_size == 4096
        fs.fill(0)
        status, reason = core.ingest(body)
        assert status == 507, reason
        assert "collector_state.tsv" in reason, reason
        # Every file back to its last whole batch (for the journal, that
        # drops the pad too: past its "L" line, nothing the collector wrote).
        assert {p.name: p.stat().st_size for p in fs.path.iterdir() if p.name != "filler"} == sizes
        assert core.stats()["dataset_errors"] == 1
        fs.free()
        assert core.ingest(body)[0] == 200
        assert core.ingest(body)[1].startswith("duplicate")
        core.close(0)
        check_dataset(prefix, samples, messages, batches=1)


def test_file_size_limit_is_507_and_keeps_nothing(tmp_path: Path) -> None:
    """EFBIG (RLIMIT_FSIZE, in a child process) is storage full too."""
    run_in_child = subprocess.run(
        [sys.executable, __file__, "scenario_file_size_limit", str(tmp_path / "capped")],
        capture_output=True, text=True, timeout=50,
    )
    assert run_in_child.returncode == 0, run_in_child.stdout + run_in_child.stderr


def scenario_file_size_limit(disk: Disk) -> None:
    prefix = disk.path / "run_"
    core = _core.CollectorCore(dataset_path=str(prefix))
    fid = str(uuid.uuid4())
    perf, samples, messages = node_batch(fid, per_kind=1000, logs=3, log_bytes=10)
    (batch,) = _core.drain_encode(perf, "node-1", 9, 1, 0, 1 << 24)
    body = bytes(batch[3])
    sizes = {p.name: p.stat().st_size for p in disk.path.iterdir()}
    disk.fill(64 << 10)
    status, reason = core.ingest(body)
    assert status == 507 and "performance_samples.csv" in reason, reason
    assert {p.name: p.stat().st_size for p in disk.path.iterdir()} == sizes
    disk.free()
    assert core.ingest(body)[0] == 200
    core.close(0)
    check_dataset(prefix, samples, messages, batches=1)


# --- the tracer -------------------------------------------------------------

SPANS = 20_000
ROWS_PER_SPAN = 3
MESSAGE = 'placed "f" on node-1,\nsecond line'


def check_tracer_file(path: Path, stats: dict[str, int]) -> int:
    rows = csv_rows(path)
    assert rows[0] == ["timestamp_sec", "timestamp_ns", "event_type", "correlation_id",
                       "parent_id", "name", "level", "message"]
    assert all(len(r) == 8 for r in rows), "a partial row"
    assert path.read_bytes().endswith(b"\n")
    assert all(r[7] == MESSAGE for r in rows[1:] if r[2] == "log")
    assert stats["rows_written"] == len(rows) - 1
    assert stats["rows_queued"] == stats["rows_written"] + stats["rows_lost"] + stats["rows_pending"]
    produced = stats["rows_queued"] + stats["rows_dropped"]
    assert produced == SPANS * ROWS_PER_SPAN
    return len(rows) - 1


def scenario_tracer_counts_match_file(disk: Disk) -> None:
    path = disk.path / "trace.csv"
    bound = 512 << 10
    tracer = ControlPlaneTracer(path, max_pending_bytes=bound)
    if disk.kind == "tmpfs":
        filler = disk.path / "later"  # freed later: room to write again
        filler.write_bytes(b"\0" * (64 << 10))
    else:
        disk.fill(256 << 10)
    for i in range(SPANS):
        with tracer.start_span(f"deploy {i % 7}, step") as span:
            span.log("INFO", MESSAGE)
    tracer.flush()  # returns: rows the disk refused are held, not waited for
    stats = tracer.stats()
    assert stats["write_errors"] >= 1 and stats["rows_written"] > 0
    assert stats["rows_dropped"] > 0 and stats["pending_bytes"] <= bound
    assert stats["rows_pending"] > 0 and stats["rows_lost"] == 0
    first = check_tracer_file(path, stats)

    # Space returns: the held rows go out, in order, without a flush.
    if disk.kind == "tmpfs":
        filler.unlink()
    else:
        disk.free()
    deadline = time.monotonic() + 10
    while tracer.stats()["rows_written"] == first and time.monotonic() < deadline:
        time.sleep(0.02)
    tracer.flush()
    stats = tracer.stats()
    second = check_tracer_file(path, stats)
    assert second > first

    tracer.close()  # a last try; what the disk still refuses is lost, and counted
    stats = tracer.stats()
    assert stats["rows_pending"] == 0
    assert check_tracer_file(path, stats) >= second
    assert stats["rows_written"] + stats["rows_lost"] + stats["rows_dropped"] == SPANS * ROWS_PER_SPAN
    if disk.kind == "tmpfs":
        assert stats["rows_lost"] > 0  # the fs is still full at close
    print(f"\ntracer on a full {disk.kind}: {SPANS * ROWS_PER_SPAN} rows produced, file rows "
          f"{first} then {second} after freeing space; at close written {stats['rows_written']}, "
          f"dropped {stats['rows_dropped']}, lost {stats['rows_lost']}, "
          f"write errors {stats['write_errors']}")


def test_full_disk_tracer_counts_match_the_file(tmp_path: Path) -> None:
    run_on_small_fs(scenario_tracer_counts_match_file, tmp_path, size=256 << 10)


def test_tracer_writes_again_after_short_outage(tmp_path: Path) -> None:
    """Held rows are not lost: once space returns before close, every row
    accepted is in the file."""
    with mounted(tmp_path / "fs", 256 << 10) as fs:
        if fs is None:
            pytest.skip("needs a tmpfs mount (root)")
        path = fs.path / "trace.csv"
        tracer = ControlPlaneTracer(path)
        fs.fill(8 << 10)
        for _ in range(500):
            with tracer.start_span("s, 1") as span:
                span.log("INFO", MESSAGE)
        tracer.flush()
        assert tracer.stats()["rows_pending"] > 0
        fs.free()
        tracer.close()
        stats = tracer.stats()
        assert (stats["rows_written"], stats["rows_lost"], stats["rows_dropped"]) == (1500, 0, 0)
        assert len(csv_rows(path)) == 1 + 1500


if __name__ == "__main__":
    # A child process run by the tests above: one scenario under RLIMIT_FSIZE.
    name, where = sys.argv[1], Path(sys.argv[2])
    where.mkdir(parents=True, exist_ok=True)
    scenario: Any = globals()[name]
    scenario(FileSizeCap(where))
    print("ok")
