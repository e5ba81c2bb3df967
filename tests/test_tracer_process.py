"""The tracer across process life: exit without close, stdout, fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgeless_telemetry import ControlPlaneTracer
from tracer_util import check_spans, parse, read


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_without_close_leaves_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "exit.csv"
    result = run_python(
        f"""
        from edgeless_telemetry import ControlPlaneTracer
        tracer = ControlPlaneTracer({str(path)!r})
        for i in range(2000):
            with tracer.start_span("step") as s:
                s.log("INFO", f"message {{i}}, with a comma")
        left_open = tracer.start_span("module-global")  # ended at interpreter teardown
        left_open.child("its-child").log("WARN", "child dropped at once")
        def nested():
            outer = tracer.start_span("raising")
            inner = outer.child("inner")
            raise SystemExit(3)  # exits through the frames holding both spans
        nested()
        """
    )
    assert result.returncode == 3, result.stderr
    rows = read(path)
    spans = check_spans(rows)  # every started span has its end row
    names = [start.name for start, _ in spans.values()]
    assert names.count("step") == 2000
    assert {"module-global", "its-child", "raising", "inner"} <= set(names)
    assert len(rows) == 2000 * 3 + 2 + 3 + 2 + 2


def test_uncaught_exception_exit_still_flushes(tmp_path: Path) -> None:
    path = tmp_path / "boom.csv"
    result = run_python(
        f"""
        from edgeless_telemetry import ControlPlaneTracer
        tracer = ControlPlaneTracer({str(path)!r})
        with tracer.start_span("doomed") as s:
            s.log("INFO", "before")
            raise RuntimeError("boom")
        """
    )
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr
    rows = read(path)
    check_spans(rows)
    assert [(r.event, r.message) for r in rows] == [
        ("span_start", ""),
        ("log", "before"),
        ("log", "RuntimeError: boom"),
        ("span_end", ""),
    ]


@pytest.mark.parametrize("arg", ["", "None", "'-'"])
def test_stdout_mode(arg: str) -> None:
    result = run_python(
        f"""
        from edgeless_telemetry import ControlPlaneTracer
        tracer = ControlPlaneTracer({arg})
        assert tracer.output_path is None
        with tracer.start_span("to-stdout") as s:
            s.log("ERROR", 'multi\\nline, "quoted"')
        """
    )
    assert result.returncode == 0, result.stderr
    rows = parse(result.stdout)
    check_spans(rows)
    assert [r.message for r in rows if r.event == "log"] == ['multi\nline, "quoted"']


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_inherited_tracer_in_forked_child_drops_and_counts(tmp_path: Path) -> None:
    """The writer thread does not survive fork: the child's rows through the
    inherited tracer are counted, flush does not hang, and a tracer made in
    the child works."""
    path = tmp_path / "parent.csv"
    child_path = tmp_path / "child.csv"
    tracer = ControlPlaneTracer(path)
    parent_span = tracer.start_span("parent")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            s = parent_span.child("in-child")
            s.log("INFO", "lost")
            s.end()
            tracer.flush()
            dropped = tracer.stats()["rows_after_fork"]
            with ControlPlaneTracer(child_path) as own:
                own.start_span("child-own").end()
            os.write(write_fd, str(dropped).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    child_said = os.read(read_fd, 100).decode()
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_said == "3"
    parent_span.end()
    tracer.close()
    rows = read(path)
    check_spans(rows)
    assert [r.name for r in rows] == ["parent", "parent"]
    assert [r.name for r in read(child_path)] == ["child-own", "child-own"]


def test_exit_does_not_hang_on_a_stdout_nobody_reads() -> None:
    """stdout piped into a reader that never reads: rows beyond the pipe and
    the pending bound are dropped, and at exit the flush gives up after a
    bounded wait instead of hanging the process."""
    code = textwrap.dedent(
        """
        from edgeless_telemetry import ControlPlaneTracer
        tracer = ControlPlaneTracer("-", max_pending_bytes=65536)
        with tracer.start_span("flood") as s:
            for i in range(20000):
                s.log("INFO", "x" * 100)
        import sys
        print(tracer.stats()["rows_dropped"], file=sys.stderr)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        returncode = proc.wait(timeout=60)  # stdout is never read
    finally:
        proc.kill()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert returncode == 0, stderr
    assert int(stderr.strip()) > 0


def test_fork_while_the_writer_thread_writes_never_hangs_the_child(tmp_path: Path) -> None:
    # The parent's writer threads write flat out (to stdout and to a file)
    # while the main thread forks: a child that reads the inherited tracer's
    # stats, makes ids, and starts its own stdout and file tracers must
    # never wait on a lock the parent's writer held at the fork.
    code = f"""
        import os, sys, threading, time
        from edgeless_telemetry import ControlPlaneTracer
        out = ControlPlaneTracer(None)
        ours = ControlPlaneTracer({str(tmp_path / "parent.csv")!r})
        stop = threading.Event()
        def spam(t):
            while not stop.is_set():
                with t.start_span("s") as s:
                    s.log("INFO", "x" * 200)
        threads = [threading.Thread(target=spam, args=(t,)) for t in (out, ours)]
        for t in threads:
            t.start()
        hung = 0
        for i in range(40):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:
                out.stats(); ours.stats()
                with ours.start_span("in-child"):
                    pass
                mine = ControlPlaneTracer(None)
                with mine.start_span("child"):
                    pass
                mine.close()
                own = ControlPlaneTracer({str(tmp_path / "child.csv")!r})
                own.close()
                os._exit(0)
            deadline = time.monotonic() + 5
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert status == 0, status
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.005)
        stop.set()
        for t in threads:
            t.join()
        print("hung", hung, file=sys.stderr)
        sys.exit(1 if hung else 0)
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
