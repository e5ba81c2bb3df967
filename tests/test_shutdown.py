"""Interpreter shutdown with threads mid-write: subprocesses whose main
thread ends (falls off the end, KeyboardInterrupt from another thread,
SystemExit from a SIGTERM handler) while worker threads trace, record and
ship, and a collector that exits while storing. Every file they leave
parses completely (whole CSV rows only) and nothing acknowledged is lost.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from edgeless_telemetry import NodeReporter, OrchestratorCollector, PerformanceTarget, TelemetryProcessor
from ports import free_port
from tracer_util import HEADER


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def whole_rows(path: Path, width: int) -> list[list[str]]:
    """The rows of a CSV file that must hold whole rows only."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path.name} ends in a partial row: {data[-80:]!r}"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    bad = [r for r in rows if len(r) != width]
    assert not bad, f"{path.name}: rows of the wrong width {bad[:3]}"
    return rows


NODE = """
import _thread, json, os, signal, sys, threading, time, uuid
from edgeless_telemetry import ControlPlaneTracer, NodeReporter, PerformanceTarget, TelemetryProcessor
how, trace_path, url = sys.argv[1:]
tracer = ControlPlaneTracer(trace_path)
perf = PerformanceTarget(capacity=1 << 20, log_capacity=1 << 20, log_bytes=1 << 28)
reporter = NodeReporter(perf, url, "node-exit", interval_s=0.02).start()
proc = TelemetryProcessor([perf], log=False)
counts = [0] * 3
if how == "sigterm":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

def work(i):
    h = proc.get_handle({"NODE_ID": "n", "FUNCTION_ID": str(uuid.UUID(int=i + 1))})
    while True:
        with tracer.start_span(f"span,{i}") as s:
            s.log("INFO", 'a "quoted", multi\\nline message ' * 3)
            h.invocation_completed(0.001)
            h.log("INFO", "tgt", "log, with comma\\n")
            counts[i] += 1

for i in range(3):
    threading.Thread(target=work, args=(i,), daemon=True).start()
time.sleep(0.2)
print(json.dumps(sum(counts)), flush=True)  # at least this many were recorded
if how == "interrupt":
    threading.Thread(target=_thread.interrupt_main).start()
    time.sleep(30)
elif how == "sigterm":
    threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM)).start()
    time.sleep(30)
# how == "end": the main thread ends here while the workers run
"""


@pytest.mark.parametrize("how", ["end", "interrupt", "sigterm"])
def test_node_exiting_mid_write_leaves_whole_files(tmp_path: Path, how: str) -> None:
    prefix = tmp_path / "d_"
    with OrchestratorCollector("http://127.0.0.1:0", dataset_path=str(prefix)) as col:
        trace = tmp_path / "trace.csv"
        node = spawn(NODE, how, str(trace), col.url)
        out, err = node.communicate(timeout=60)
        assert node.returncode == (-2 if how == "interrupt" else 0), err  # -2: KeyboardInterrupt
        recorded = json.loads(out)
        # The tracer: the header, then whole rows only.
        rows = whole_rows(trace, len(HEADER))
        assert rows[0] == HEADER and len(rows) > 1
        assert {r[2] for r in rows[1:]} <= {"span_start", "span_end", "log"}
        # The collector got whole bodies or refused cut ones: whole rows,
        # and at least what was recorded before the exit began (the
        # reporter's stop at exit ships it).
        samples = whole_rows(Path(f"{prefix}performance_samples.csv"), 4)
        logs = whole_rows(Path(f"{prefix}application_logs.csv"), 4)
        assert len(samples) - 1 >= recorded and len(logs) - 1 >= recorded
        assert col.stats()["batches_duplicate"] == 0
        print(f"[shutdown:{how}] recorded before exit >= {recorded}, stored samples {len(samples) - 1}, "
              f"log entries {len(logs) - 1}, trace rows {len(rows) - 1}, "
              f"bodies refused {col.stats()['batches_malformed']}")


COLLECTOR = """
import sys, time
from edgeless_telemetry import OrchestratorCollector
col = OrchestratorCollector(sys.argv[3], dataset_path=sys.argv[1]).start()
print(col.url, flush=True)
time.sleep(float(sys.argv[2]))
# the main thread ends while the handler threads store batches
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_collector_exiting_mid_store_leaves_whole_rows_and_loses_nothing(tmp_path: Path, how: str) -> None:
    """Three nodes ship large batches without pause while the collector's
    main thread ends. Without the stop at exit (which waits for handlers in
    the core) the collector aborted (SIGABRT: a daemon handler thread ended
    by finalization while taking the GIL back) in 1 of 5 runs of this test
    and 4 of 5 of a heavier variant, once leaving a partial row.

    `sigkill`: the collector is killed instead, likely in the middle of
    writing a batch; the restart cuts the CSV files back to the last batch
    its journal records whole, and the resent batches land once."""
    prefix = str(tmp_path / "c_")
    # A port outside the ephemeral range: the restart below binds it again.
    server = spawn(COLLECTOR, prefix, "0.6" if how == "exit" else "60",
                   f"http://127.0.0.1:{free_port()}")
    if how == "sigkill":
        threading.Timer(0.6, server.kill).start()
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    nodes = []
    for k in range(3):
        perf = PerformanceTarget(capacity=1 << 22)
        fid = str(uuid.UUID(int=k + 1))
        h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
        nodes.append((fid, h, NodeReporter(perf, url, f"node-{k}", max_batch_bytes=1 << 20, timeout_s=2.0)))
    totals = [0] * len(nodes)

    def ship(k: int) -> None:
        _, h, reporter = nodes[k]
        while server.poll() is None:
            n = 5_000
            h.observe_many(2, (np.arange(totals[k], totals[k] + n) + 1) * 1e-6)  # distinct values
            totals[k] += n
            while not reporter.flush(deadline=time.monotonic() + 1.0) and server.poll() is None:
                pass  # the collector is busy: no more samples before these went

    shippers = [threading.Thread(target=ship, args=(k,)) for k in range(len(nodes))]
    for t in shippers:
        t.start()
    server.wait(timeout=60)
    for t in shippers:
        t.join()
    sent = sum(r.stats()["samples_sent"] for _, _, r in nodes)
    if how == "exit":
        assert server.returncode == 0, server.stderr.read()[-2000:] if server.stderr else ""
        rows = whole_rows(Path(prefix + "performance_samples.csv"), 4)
        stored_at_exit = len(rows) - 1
        assert stored_at_exit >= sent > 0  # acknowledged means stored
    else:
        assert server.returncode == -signal.SIGKILL
        data = Path(prefix + "performance_samples.csv").read_bytes()
        stored_at_exit = data.count(b"\n") - 1
        ending = "on a row" if data.endswith(b"\n") else "mid-row"
        print(f"[shutdown:collector] killed with the samples file ending {ending}")
    # A new collector on the same files and port takes the rest: everything
    # exactly once (batches stored but not acknowledged are recognised).
    port = int(url.rsplit(":", 1)[1])
    with OrchestratorCollector(f"http://127.0.0.1:{port}", dataset_path=prefix, append=True):
        for _, _, reporter in nodes:
            reporter.timeout_s = 60.0
            assert reporter.stop(), reporter.last_error
    by_fid: dict[str, list[float]] = {}
    for r in whole_rows(Path(prefix + "performance_samples.csv"), 4)[1:]:
        by_fid.setdefault(r[0], []).append(float(r[3]))
    for (fid, _, _), total in zip(nodes, totals, strict=True):
        values = by_fid.pop(fid)
        assert len(values) == total and len(set(values)) == total  # none lost, none twice
    assert not by_fid
    print(f"[shutdown:collector] samples {sum(totals)}, stored before exit {stored_at_exit}, "
          f"acknowledged before exit {sent}")


INSIDE_RUST_AT_EXIT = """
import threading, uuid
from edgeless_telemetry import ControlPlaneTracer, PerformanceTarget, PrometheusTarget, TelemetryProcessor, _core
prom = PrometheusTarget(max_series=100000)
perf = PerformanceTarget()
proc = TelemetryProcessor([perf, prom], log=False)
for i in range(5000):
    tags = {"NODE_ID": "n", "FUNCTION_ID": str(uuid.UUID(int=i + 1)), "FUNCTION_TYPE": "t"}
    proc.get_handle(tags).invocation_completed(0.1)
(batch,) = _core.drain_encode(perf, "n", 1, 1, 0, 1 << 24)
core = _core.CollectorCore()
tracer = ControlPlaneTracer(__import__("sys").argv[1])

def loop(work):
    while True:
        work()

for work in (prom.render, prom.render, lambda: core.ingest(batch[3]), tracer.flush):
    threading.Thread(target=loop, args=(work,), daemon=True).start()
__import__("time").sleep(0.3)
# the main thread ends while daemon threads run Rust code without the GIL
"""


def test_daemon_threads_inside_rust_at_exit_do_not_abort(tmp_path: Path) -> None:
    """CPython ends a daemon thread that takes the GIL back during
    finalization; through Rust frames that aborted the process (SIGABRT in
    10 of 10 runs of the render part alone before `gil::allow_threads`)."""
    for _ in range(3):
        proc = spawn(INSIDE_RUST_AT_EXIT, str(tmp_path / "t.csv"))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]


PYTHON_TARGETS_AT_EXIT = """
import atexit, io, json, logging, sys, threading, time

def report():  # registered before the import: runs after the extension's hook
    time.sleep(0.2)
    print(json.dumps(proc.stats()), flush=True)

atexit.register(report)
from edgeless_telemetry import TelemetryProcessor

class Busy:
    def handle(self, event, tags):
        x = 0
        for i in range(200):
            x += i

logging.basicConfig(level=logging.DEBUG, stream=io.StringIO())
proc = TelemetryProcessor([Busy()], log=True)

def loop():
    h = proc.get_handle({})
    while True:
        h.invocation_completed(0.1)
        h.log("INFO", "t", "m")

for _ in range(4):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.2)
# the main thread ends while daemon threads run Python code our frames called
"""


def test_daemon_threads_in_python_targets_at_exit_do_not_abort() -> None:
    """A daemon thread inside a Python target or a `logging` handler, called
    from our frames, is ended by CPython (`pthread_exit`) once it gives the
    GIL up to the finalizing main thread; the forced unwind through our
    frames aborted the process (SIGABRT in 10 of 10 runs). From the exit
    hook on such threads skip the Python targets, counted."""
    for _ in range(3):
        proc = spawn(PYTHON_TARGETS_AT_EXIT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["dropped_at_exit"] > 0, out
        assert stats["target_errors"] == 0, out
