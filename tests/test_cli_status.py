"""Long-running commands say what is wrong while it happens.

- a node whose orchestrator URL leads nowhere shows the reason on its status
  line within two reporting intervals;
- an orchestrator whose Redis stops says so within one status interval, and
  says when it is back;
- the demo with an unreachable Redis keeps going on its CSV dataset, ends
  with exit 0 and says what did not reach Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ports import free_port
from redis_fixture import RedisServer

CLI = [sys.executable, "-m", "edgeless_telemetry.cli"]


def test_node_with_a_wrong_orchestrator_url_says_why(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    proc = subprocess.run(
        [*CLI, "node", "--orchestrator-url", f"http://127.0.0.1:{dead}", "--interval", "0.5",
         "--duration", "2.5", "--rate", "2000"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("t=")]
    # Status lines come every second; from the second one on the reason shows.
    assert any("failing for" in ln and "refused" in ln and str(dead) in ln for ln in lines[:3]), lines
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def read_lines(proc: subprocess.Popen[str], into: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        into.append(line)


def wait_for(lines: list[str], text: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, line in enumerate(lines):
            if text in line:
                return i
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not said within {timeout} s: {lines[-5:]}")


def test_orchestrator_says_when_redis_stops_and_when_it_is_back(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    proc = subprocess.Popen(
        [*CLI, "orchestrator", "--listen", f"http://127.0.0.1:{free_port()}", "--redis-url",
         redis.url, "--stats-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    try:
        wait_for(lines, "redis ok", 30)
        redis.stop()
        # The collector learns Redis is gone when it next talks to it: a
        # node's batch makes it try.
        from edgeless_telemetry import NodeReporter, PerformanceTarget, TelemetryProcessor

        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        perf = PerformanceTarget()
        h = TelemetryProcessor([perf], log=False).get_handle(
            {"NODE_ID": "n", "FUNCTION_ID": "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"})
        h.invocation_completed(0.1)
        reporter = NodeReporter(perf, url, "n", timeout_s=2.0)
        reporter.flush()
        failing = wait_for(lines, "REDIS FAILING", 5)
        assert "batches waiting" in lines[failing]
        redis.start()
        back = wait_for(lines, "redis is back after", 30)
        assert back > failing
        reporter.stop()
    finally:
        proc.terminate()
        proc.wait(30)
        redis.stop()
    assert "Traceback" not in "".join(lines)


def test_demo_with_redis_down_finishes_on_the_csv(tmp_path: Path) -> None:
    dead = free_port()
    proc = subprocess.run(
        [*CLI, "demo", "--duration", "2", "--rate", "5000", "--interval", "0.5",
         "--redis-url", f"redis://127.0.0.1:{dead}/0", "--output", str(tmp_path / "out") + "/"],
        capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "REDIS FAILING" in proc.stdout
    assert "did not reach Redis" in proc.stdout and "CSV dataset above holds every one" in proc.stdout
    rows = (tmp_path / "out" / "performance_samples.csv").read_text().count("\n")
    assert rows > 1000
