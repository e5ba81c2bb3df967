"""A user's mistake on the command line ends in one line, not a traceback.

Each case runs the real console script and asserts: a non-zero exit, one
line on stderr that names the offending value, and no ``Traceback``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "edgeless_telemetry.cli"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGELESS_TELEMETRY_DEBUG"}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env=env)


def assert_one_line_naming(proc: subprocess.CompletedProcess[str], value: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert value in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "value"),
    [
        (["node", "--orchestrator-url", "127.0.0.1:7100", "--duration", "1"], "127.0.0.1:7100"),
        (["node", "--metrics-url", "foo", "--duration", "1"], "foo"),
        (["node", "--orchestrator-url", "http://[::1", "--duration", "1"], "[::1"),
        (["summary", "--redis-url", "redis://127.0.0.1:1/0"], "127.0.0.1:1"),
        (["summary", "--dataset-path", "nope/"], "nope/"),
        (["trace", "summary", "missing.csv"], "missing.csv"),
        (["orchestrator", "--dataset-path", "x_", "--node-tokens", "missing.json"], "missing.json"),
        (["orchestrator", "--listen", "127.0.0.1:7100", "--dataset-path", "x_"], "127.0.0.1:7100"),
        (["orchestrator", "--dataset-path", "/proc/no/such/dir/run_"], "/proc/no/such/dir"),
    ],
)
def test_mistake_is_one_line(args: list[str], value: str, tmp_path: Path) -> None:
    assert_one_line_naming(run(args, tmp_path), value)


def test_busy_port_is_named(busy_port: int, tmp_path: Path) -> None:
    proc = run(["orchestrator", "--listen", f"http://127.0.0.1:{busy_port}", "--dataset-path", "x_"],
               tmp_path)
    assert_one_line_naming(proc, str(busy_port))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run(["--debug", "summary", "--dataset-path", "nope/"], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_trace_chrome_makes_missing_folders(tmp_path: Path) -> None:
    from edgeless_telemetry import ControlPlaneTracer

    tracer = ControlPlaneTracer(str(tmp_path / "t.csv"))
    with tracer.start_span("deploy"):
        pass
    tracer.close()
    out = tmp_path / "missing" / "dir" / "trace.json"
    proc = run(["trace", "chrome", str(tmp_path / "t.csv"), "-o", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def test_dataset_path_folder_or_prefix(tmp_path: Path) -> None:
    from edgeless_telemetry.paths import dataset_prefix

    (tmp_path / "dataset").mkdir()
    assert dataset_prefix(str(tmp_path / "dataset")) == str(tmp_path / "dataset") + os.sep
    assert dataset_prefix(str(tmp_path / "run1_")) == str(tmp_path / "run1_")
    assert dataset_prefix("out/") == "out/"
