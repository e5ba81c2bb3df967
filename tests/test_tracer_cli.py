"""``edgeless-telemetry trace summary|chrome`` against real tracer files."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeless_telemetry import ControlPlaneTracer
from edgeless_telemetry.cli import main
from tracer_util import check_spans, read


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Path]:
    """Two deployments with nested steps, an error, an unfinished span and
    two overlapping children (threads) under one parent."""
    path = tmp_path / "trace.csv"
    tracer = ControlPlaneTracer(path)
    for i in range(2):
        with tracer.start_span("deploy") as d:
            d.log("INFO", f"deployment {i}")
            for j in range(3):
                with d.child("place") as p:
                    with p.child("rpc") as r:
                        time.sleep(0.001)
                        if j == 1:
                            r.log("ERROR", "node refused, retrying")
    with tracer.start_span("fanout") as f:
        barrier = threading.Barrier(2)

        def branch() -> None:
            with f.child("branch"):
                barrier.wait()
                time.sleep(0.002)

        threads = [threading.Thread(target=branch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    unfinished = tracer.start_span("unfinished")  # kept open while the test reads
    tracer.flush()
    yield path
    unfinished.end()
    tracer.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_numbers_match_the_csv(traced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = read(traced)
    starts = {r.cid: r for r in rows if r.event == "span_start"}
    ends = {r.cid: r for r in rows if r.event == "span_end"}
    expected: dict[str, dict[str, Any]] = {}
    for cid, s in starts.items():
        e = expected.setdefault(s.name, {"d": [], "open": 0, "err": 0})
        if cid in ends:
            e["d"].append((ends[cid].ts_ns - s.ts_ns) / 1e9)
        else:
            e["open"] += 1
    for r in rows:
        if r.event == "log" and r.level == "ERROR":
            expected[r.name]["err"] += 1

    code, out, _ = run_cli(capsys, "trace", "summary", "--json", str(traced))
    assert code == 0
    got = {s["name"]: s for s in json.loads(out)}
    assert set(got) == {"deploy", "place", "rpc", "fanout", "branch", "unfinished"}
    for name, e in expected.items():
        s = got[name]
        assert s["count"] == len(e["d"]) and s["unfinished"] == e["open"]
        assert s["error_logs"] == e["err"]
        if e["d"]:
            assert s["total_s"] == pytest.approx(sum(e["d"]))
            assert s["p50_s"] == pytest.approx(float(np.percentile(e["d"], 50)))
            assert s["p99_s"] == pytest.approx(float(np.percentile(e["d"], 99)))
        else:
            assert s["p50_s"] is None and s["total_s"] == 0
    assert (got["rpc"]["count"], got["rpc"]["error_logs"]) == (6, 2)
    assert (got["unfinished"]["count"], got["unfinished"]["unfinished"]) == (0, 1)

    code, table, _ = run_cli(capsys, "trace", "summary", str(traced))
    assert code == 0
    header, *lines = table.splitlines()
    assert header.split() == ["name", "count", "open", "total", "ms", "p50", "ms", "p99", "ms", "errors"]
    assert {line.split()[0] for line in lines} == set(got)


def _events(trace: dict[str, Any], ph: str) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == ph]


def _inside(child: dict[str, Any], parent: dict[str, Any]) -> bool:
    eps = 1e-6
    return bool(
        parent["ts"] - eps <= child["ts"]
        and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + eps
    )


def test_chrome_trace_loads_and_nests(
    traced: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "trace.json"
    code, _, err = run_cli(capsys, "trace", "chrome", str(traced), "-o", str(out_path))
    assert code == 0 and "wrote" in err
    trace = json.loads(out_path.read_text())
    spans = {e["args"]["correlation_id"]: e for e in _events(trace, "X")}
    rows = read(traced)
    assert set(spans) == {r.cid for r in rows if r.event == "span_start"}
    nested = 0
    for e in spans.values():
        assert e["dur"] >= 0 and e["pid"] == 1
        parent_id = e["args"].get("parent_id")
        if parent_id is None:
            continue
        parent = spans[parent_id]
        assert _inside(e, parent)
        if e["name"] in ("place", "rpc"):  # sequential children nest on the parent's track
            assert e["tid"] == parent["tid"]
            nested += 1
    assert nested == 12
    branches = [e for e in spans.values() if e["name"] == "branch"]
    assert len({b["tid"] for b in branches}) == 2  # overlapping siblings: own tracks
    assert [e["args"].get("unfinished") for e in spans.values() if e["name"] == "unfinished"] == [True]
    deploy_tids = {e["tid"] for e in spans.values() if e["name"] == "deploy"}
    assert len(deploy_tids) == 2  # one track per trace
    logs = _events(trace, "i")
    assert len(logs) == sum(1 for r in rows if r.event == "log")
    for log in logs:
        assert log["tid"] == spans[log["args"]["correlation_id"]]["tid"]
    names = {e["tid"]: e["args"]["name"] for e in _events(trace, "M") if e["name"] == "thread_name"}
    assert {e["tid"] for e in spans.values()} <= set(names)

    code, out, _ = run_cli(capsys, "trace", "chrome", str(traced))  # stdout
    assert code == 0 and json.loads(out)["traceEvents"]


def test_files_from_two_processes_join(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orch_path, node_path = tmp_path / "orchestrator.csv", tmp_path / "node.csv"
    orch = ControlPlaneTracer(orch_path)
    with orch.start_span("deploy") as deploy:
        handed_over = deploy.correlation_id  # sent to the node with the request
        node = ControlPlaneTracer(node_path)
        with node.start_span("start-function", parent_id=handed_over) as s:
            s.child("pull-image").end()
        node.close()
    orch.close()
    node_rows = read(node_path)
    check_spans(node_rows)
    assert node_rows[0].parent == handed_over

    code, out, _ = run_cli(capsys, "trace", "chrome", str(orch_path), str(node_path))
    assert code == 0
    spans = {e["name"]: e for e in _events(json.loads(out), "X")}
    assert spans["start-function"]["tid"] == spans["deploy"]["tid"]
    assert spans["pull-image"]["tid"] == spans["deploy"]["tid"]
    code, out, _ = run_cli(capsys, "trace", "summary", "--json", str(orch_path), str(node_path))
    assert {s["name"] for s in json.loads(out)} == {"deploy", "start-function", "pull-image"}


def test_bad_files_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.csv"
    code, _, err = run_cli(capsys, "trace", "summary", str(missing))
    assert code == 2 and "missing.csv" in err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    code, _, err = run_cli(capsys, "trace", "chrome", str(other))
    assert code == 2 and "not a tracer CSV" in err
    short = tmp_path / "short.csv"
    with ControlPlaneTracer(short) as t:
        t.start_span("x").end()
    with open(short, "a") as f:
        f.write("1,2,log\n")
    code, _, err = run_cli(capsys, "trace", "summary", str(short))
    assert code == 2 and "short.csv:4" in err and "expected 8 fields" in err


def test_console_script(traced: Path) -> None:
    exe = Path(sys.executable).with_name("edgeless-telemetry")
    result = subprocess.run(
        [str(exe), "trace", "summary", str(traced)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "deploy" in result.stdout
