"""Process life: a forked child keeps working targets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeless_telemetry import (
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    PrometheusTarget,
    TelemetryProcessor,
)
from ports import free_port
from prom_support import http_get, sample


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_performance_target_works_in_forked_child() -> None:
    perf = PerformanceTarget()
    fid = str(uuid.uuid4())
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
    h.invocation_completed(0.1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: inherits the parent's pending sample, records its own
        try:
            h.invocation_completed(0.2)
            values = perf.get_metrics().function_times[FunctionTime.EXECUTION][fid].values.tolist()
            os.write(write, repr(values).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_saw = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    assert child_saw == "[0.1, 0.2]"
    # The parent's buffer is its own.
    assert perf.get_metrics().function_times[FunctionTime.EXECUTION][fid].values.tolist() == [0.1]


# --- fork: PrometheusTarget, NodeReporter --------------------------------


def child_run(body: Callable[[], object]) -> tuple[int, object]:
    """Runs ``body`` in a forked child; returns (child pid, what it
    returned, via a pipe). The child then waits for `release` before it
    exits, so the parent can check things while it is alive."""
    read, write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(body()).encode() + b"\n")
            os.read(go_read, 1)  # until the parent releases us
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(read, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read)
    CHILDREN[pid] = go_write
    assert data, "the child died before answering"
    return pid, json.loads(data)


CHILDREN: dict[int, int] = {}


def release(pid: int) -> int:
    os.write(CHILDREN.pop(pid), b"x")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def count_of(body: bytes) -> float:
    return sample(body.decode(), "execution_times_count", node_id="n", function_id=FID, function_type="t",
                  invocation_type="Cast")


FID = str(uuid.UUID(int=77))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_prometheus_target_in_forked_child() -> None:
    """The child's target records and renders its own series (inherited
    values included), is not serving (the parent's server thread and socket
    are the parent's), and can serve on a port of its own; the parent keeps
    serving, and once it closes, its port is free although the child lives."""
    port = free_port()  # bound again below
    prom = PrometheusTarget(f"http://127.0.0.1:{port}")
    h = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": "n", "FUNCTION_ID": FID, "FUNCTION_TYPE": "t"})
    h.invocation_completed(0.1)

    def child() -> object:
        before = (prom.url, prom.port)
        h.invocation_completed(0.2)
        prom.serve("http://127.0.0.1:0")
        own = prom.port
        assert own is not None
        return [before, own, count_of(http_get(own)[2])]

    pid, (before, child_port, child_count) = child_run(child)
    try:
        assert before == [None, None]
        assert child_count == 2  # inherited 0.1 plus its own 0.2
        assert count_of(http_get(port)[2]) == 1  # the parent's series are its own
        assert count_of(http_get(child_port)[2]) == 2  # both processes serve
        with pytest.raises(RuntimeError, match="already serving"):
            prom.serve("http://127.0.0.1:0")
        prom.close()
        # The child holds no copy of the listening socket: the port is free.
        again = PrometheusTarget(f"http://127.0.0.1:{port}")
        again.close()
        prom.serve("http://127.0.0.1:0")  # and the parent can serve again
        assert prom.port is not None and count_of(http_get(prom.port)[2]) == 1
        prom.close()
    finally:
        assert release(pid) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_node_reporter_in_forked_child(tmp_path: Path) -> None:
    """The child's reporter is a new node instance: new nonce, new thread,
    fresh state (a lock held across the fork: `test_reporter_http.py`), no
    inherited socket (it dials its own), and the inherited samples are left
    to the parent. Each sample is stored exactly once."""
    prefix = str(tmp_path / "d_")
    col = OrchestratorCollector("http://127.0.0.1:0", dataset_path=prefix).start()
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n", "FUNCTION_ID": FID})
    rep = NodeReporter(perf, col.url, "node-fork", interval_s=3600)
    h.invocation_completed(0.5)
    assert rep.flush()  # the reporter now holds a kept-alive connection
    rep.start()  # sleeping for an hour: nothing drained behind our back
    for i in range(5):
        h.invocation_completed(1.0 + i)  # pending in the target at fork time

    def child() -> object:
        fresh = (rep.nonce, rep.stats()["connections_opened"] == 0,
                 rep._thread is not None and rep._thread.is_alive())
        for i in range(3):
            h.invocation_completed(10.0 + i)
        stats = rep.stats()
        ok = rep.stop()
        after = rep.stats()
        return [*fresh, stats["inherited_samples_discarded"], ok, after["samples_sent"],
                after["connections_opened"]]

    pid, (nonce, no_conn, alive, discarded, ok, sent, dialled) = child_run(child)
    assert release(pid) == 0
    assert nonce != rep.nonce and no_conn and alive and dialled == 1
    assert (discarded, ok, sent) == (5, True, 3)
    assert rep.stop() and rep.stats()["samples_sent"] == 1 + 5
    col.stop()
    with open(prefix + "performance_samples.csv", newline="") as f:
        values = sorted(float(row[3]) for row in list(csv.reader(f))[1:])
    assert values == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0]
    assert col.stats()["batches_duplicate"] == 0


def test_inherited_collector_refuses_in_the_child_never_hangs(tmp_path: Path) -> None:
    # A collector belongs to the process that made it: in a forked child its
    # Redis writer thread is gone (and may have held its queue lock at the
    # fork). The child gets a clear RuntimeError, stop() and exit return.
    import subprocess
    import sys
    import textwrap

    from redis_fixture import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    code = textwrap.dedent(f"""
        import os, sys, threading, time
        from edgeless_telemetry import NodeReporter, OrchestratorCollector, PerformanceTarget, TelemetryProcessor
        col = OrchestratorCollector("http://127.0.0.1:0", redis_url={redis.url!r},
                                    dataset_path={str(tmp_path / "d_")!r}).start()
        perf = PerformanceTarget()
        h = TelemetryProcessor([perf], log=False).get_handle(
            {{"NODE_ID": "n", "FUNCTION_ID": "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"}})
        rep = NodeReporter(perf, col.url, "n", interval_s=0.01).start()
        stop = threading.Event()
        def load():
            while not stop.is_set():
                for _ in range(2000):
                    h.invocation_completed(0.001)
                time.sleep(0.001)
        t = threading.Thread(target=load); t.start()
        for i in range(20):
            time.sleep(0.02)
            pid = os.fork()
            if pid == 0:
                try:
                    col.stats()
                    os._exit(3)  # must not work
                except RuntimeError as e:
                    assert "fork" in str(e)
                col.stop()
                os._exit(0)
            deadline = time.monotonic() + 5
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
                    break
                assert time.monotonic() < deadline, "child hung"
                time.sleep(0.01)
        stop.set(); t.join(); rep.stop(); col.stop()
        print("ok")
    """)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        redis.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


SUBINTERPRETER = """
import sys, threading
import edgeless_telemetry._core as core
try:
    import _xxsubinterpreters as interpreters
except ImportError:
    import _interpreters as interpreters
sub = interpreters.create()
try:
    interpreters.run_string(sub, "import edgeless_telemetry")
except Exception as e:  # the ImportError, as text
    print("refused:", e)
else:
    print("imported")
sys.stdout.flush()
interpreters.run_string(sub, "import atexit; print('hooks', atexit._ncallbacks(), flush=True)")
interpreters.destroy(sub)
got = []
class Target:
    def handle(self, event, tags):
        got.append(event)
proc = core.TelemetryProcessor([Target()], log=False)
t = threading.Thread(target=lambda: proc.get_handle({}).invocation_completed(0.1))
t.start()
t.join()
print("calls", len(got), flush=True)
"""


def test_a_subinterpreter_is_refused_and_leaves_the_main_one_alone() -> None:
    """The extension keeps process-wide state (the exit hook's flag, the
    GIL-bound cells): PyO3 0.28+ no longer refuses a subinterpreter before
    our module code runs, and the exit hook it registered there set the
    process exiting when the subinterpreter ended (Python targets on other
    threads skipped for good; a subinterpreter left to the main one's
    finalization hung the process at exit instead)."""
    pytest.importorskip("_xxsubinterpreters" if sys.version_info < (3, 13) else "_interpreters")
    run = subprocess.run(
        [sys.executable, "-c", SUBINTERPRETER],
        capture_output=True, text=True, timeout=20,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("refused:") and "subinterpreter" in lines[0], run.stdout
    assert lines[1] == "hooks 0", run.stdout
    assert lines[2] == "calls 1", run.stdout
