"""Self-checking smoke run of the installed package, for a foreign machine.

`scripts/test-arm64.sh` runs it with a Debian arm64 root's own python3
under qemu-aarch64-static (the aarch64 wheel and numpy's aarch64 wheel on
its path); it runs just as well natively (`python tests/arm64_smoke.py`).
Only public APIs, loopback only, no Redis, bounded in time: each check
asserts what a broken build would get wrong, and the script exits non-zero
at the first failure. Prints one line per check and a summary.
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import re
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

import edgeless_telemetry
from edgeless_telemetry import (
    ControlPlaneTracer,
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    PrometheusTarget,
    TelemetryLogLevel,
    TelemetryProcessor,
)

CHECKS: list[tuple[str, Callable[[Path], str]]] = []


def check(fn: Callable[[Path], str]) -> Callable[[Path], str]:
    CHECKS.append((fn.__name__, fn))
    return fn


@check
def version_and_platform(_: Path) -> str:
    cargo = Path(__file__).resolve().parent.parent / "Cargo.toml"  # the one source of the version
    if cargo.exists():
        want = re.search(r'^version = "([^"]+)"', cargo.read_text(), re.M)
        assert want and edgeless_telemetry.__version__ == want.group(1), edgeless_telemetry.__version__
    assert edgeless_telemetry.__version__.count(".") >= 2, edgeless_telemetry.__version__
    so = Path(edgeless_telemetry._core.__file__)  # type: ignore[attr-defined]
    return f"{edgeless_telemetry.__version__} on {platform.machine()}, Python {platform.python_version()}, {so.name}"


@check
def handles_and_ring_drain(_: Path) -> str:
    perf = PerformanceTarget(capacity=1000)
    processor = TelemetryProcessor([perf], log=False)
    node = processor.get_handle({"NODE_ID": "node-arm"})
    fid = str(uuid.uuid4())
    fn = node.fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "python"})
    assert fn.tags == {"NODE_ID": "node-arm", "FUNCTION_ID": fid, "FUNCTION_TYPE": "python"}
    fn.function_instantiate(0.5)
    fn.function_init(0.25)
    for i in range(1500):  # past capacity: the oldest 500 are overwritten, counted
        fn.invocation_completed(i / 1000)
    fn.function_stop(0.125)
    fn.function_transfer(0.0625)
    fn.log(TelemetryLogLevel.INFO, "smoke", "hello, arm64")
    fn.invocation_completed(float("nan"))  # dropped and counted, never raised
    m = perf.get_metrics()
    execution = m.function_times[FunctionTime.EXECUTION][fid]
    assert execution.values.dtype == np.float64 and execution.timestamps_ns.dtype == np.int64
    assert execution.values.tolist() == [i / 1000 for i in range(500, 1500)], execution.values[:3]
    assert np.all(np.diff(execution.timestamps_ns) >= 0)
    assert m.function_times[FunctionTime.INSTANTIATE][fid].values.tolist() == [0.5]
    assert m.function_times[FunctionTime.INIT][fid].values.tolist() == [0.25]
    assert m.function_times[FunctionTime.STOP][fid].values.tolist() == [0.125]
    assert m.function_times[FunctionTime.TRANSFER][fid].values.tolist() == [0.0625]
    assert [e.message for e in m.function_log_entries[fid]] == ["hello, arm64"]
    assert perf.stats()["samples_dropped"] == 500, perf.stats()
    assert processor.stats()["dropped_invalid_value"] == 1, processor.stats()
    assert perf.get_metrics().is_empty(), "a drain must leave the target empty"
    return "1,504 samples and a log entry drained exactly; 500 overwritten and 1 NaN counted"


@check
def observe_many_numpy(_: Path) -> str:
    perf = PerformanceTarget()
    fid = str(uuid.uuid4())
    fn = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
    values = np.linspace(0.001, 1.0, 10_000)
    assert fn.observe_many(int(FunctionTime.EXECUTION), values) == 10_000
    got = perf.get_metrics().function_times[FunctionTime.EXECUTION][fid].values
    assert np.array_equal(got, values)
    return "10,000 samples from a numpy array, bit for bit"


def scrape(port: int) -> tuple[str, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.headers.get("Content-Type", ""), resp.read()


@check
def both_targets_render_and_scrape(_: Path) -> str:
    perf = PerformanceTarget()
    with PrometheusTarget("http://127.0.0.1:0") as prom:
        port = prom.port
        assert port, port
        processor = TelemetryProcessor([perf, prom], log=False)
        fid = str(uuid.uuid4())
        fn = processor.get_handle({"NODE_ID": "node-arm"}).fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "python"})
        fn.function_instantiate(0.01)
        for _ in range(3):
            fn.invocation_completed(0.003, event_type="CALL")
        fn.invocation_completed(0.2, event_type="CAST")
        fn.function_transfer(0.02)
        labels = f'node_id="node-arm",function_id="{fid}",function_type="python",invocation_type="Call"'
        text = prom.render().decode()
        lines = set(text.splitlines())
        assert f"execution_times_count{{{labels}}} 3" in lines, text
        assert 'function_count{node_id="node-arm",function_type="python"} 1' in lines, text
        om = prom.render(openmetrics=True).decode()
        assert om.endswith("# EOF\n"), om[-40:]
        content_type, body = scrape(prom.port)
        assert content_type.startswith("text/plain"), content_type
        assert f"execution_times_count{{{labels}}} 3" in body.decode().splitlines()
        # Both targets saw the events: the PerformanceTarget stored them too.
        assert len(perf.get_metrics().function_times[FunctionTime.EXECUTION][fid]) == 4
    return f"render() and GET /metrics on 127.0.0.1:{port} agree ({len(body)} bytes)"


@check
def scrape_while_threads_ingest(_: Path) -> str:
    with PrometheusTarget("http://127.0.0.1:0") as prom:
        processor = TelemetryProcessor([PerformanceTarget(), prom], log=False)
        fid = str(uuid.uuid4())
        fn = processor.get_handle({"NODE_ID": "n"}).fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "t"})
        n, threads = 20_000, 2

        def work() -> None:
            for _ in range(n):
                fn.invocation_completed(0.001, event_type="CALL")

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for w in workers:
            w.start()
        scrapes = 0
        while True:  # at least one scrape, more while the threads ingest
            assert scrape(prom.port)[1].startswith(b"# HELP")
            scrapes += 1
            if not any(w.is_alive() for w in workers):
                break
        for w in workers:
            w.join(30)
        total = f'execution_times_count{{node_id="n",function_id="{fid}",function_type="t",invocation_type="Call"}}'
        assert f"{total} {n * threads}" in scrape(prom.port)[1].decode().splitlines()
    return f"{n * threads:,} events from {threads} threads, {scrapes} scrapes meanwhile, final count exact"


@check
def tracer(tmp: Path) -> str:
    path = tmp / "trace" / "control.csv"
    tracer = ControlPlaneTracer(path)
    with tracer.start_span("deploy") as root:
        with root.child("place") as child:
            child.log(TelemetryLogLevel.INFO, "placed, with a comma")
        root.log("WARN", 'quoted "text"\nand a newline')
    tracer.close()
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[2:4] == ["event_type", "correlation_id"] and header[-1] == "message", header
    events = [r[2] for r in rows[1:]]
    assert events == ["span_start", "span_start", "log", "span_end", "log", "span_end"], rows
    messages = [r[-1] for r in rows[1:] if r[2] == "log"]
    assert messages == ["placed, with a comma", 'quoted "text"\nand a newline'], messages
    ids = {r[3] for r in rows[1:]}
    assert ids == {root.correlation_id, child.correlation_id}, ids
    assert tracer.stats()["rows_written"] == 6, tracer.stats()
    return f"{len(rows) - 1} rows, CSV quoting round-trips"


@check
def collector_ingests_a_drained_batch(tmp: Path) -> str:
    collector = OrchestratorCollector("http://127.0.0.1:0", dataset_path=str(tmp / "dataset" / "run_")).start()
    perf = PerformanceTarget()
    processor = TelemetryProcessor([perf], log=False)
    fids = [str(uuid.uuid4()) for _ in range(3)]
    expected: set[tuple[str, str, float]] = set()
    for k, fid in enumerate(fids):
        fn = processor.get_handle({"NODE_ID": "node-arm"}).fork({"FUNCTION_ID": fid})
        for i in range(100):
            value = (k * 1000 + i) / 1e4
            fn.invocation_completed(value)
            expected.add((fid, "function_execution_time", value))
        fn.function_transfer(0.5)
        expected.add((fid, "function_transfer_time", 0.5))
        fn.log("INFO", "worker", f"log of {fid}")
    reporter = NodeReporter(perf, collector.url, "node-arm", interval_s=0.2, timeout_s=10.0).start()
    try:
        assert reporter.stop(), f"batches left pending: {reporter.stats()} {reporter.last_error}"
    finally:
        collector.stop()
    stats = reporter.stats()
    assert stats["samples_sent"] == len(expected) and stats["samples_dropped"] == 0, stats
    with open(tmp / "dataset" / "run_performance_samples.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["identifier", "metric", "timestamp", "value"], rows[0]
    got = {(r[0], r[1], float(r[3])) for r in rows[1:]}
    assert len(rows) - 1 == len(expected) and got == expected, (len(rows), len(expected))
    assert all(math.isfinite(float(r[2])) and float(r[2]) > 1e9 for r in rows[1:])
    with open(tmp / "dataset" / "run_application_logs.csv", newline="") as f:
        logs = list(csv.reader(f))[1:]
    assert sorted(r[3] for r in logs) == sorted(f"log of {fid}" for fid in fids), logs
    return f"{len(expected)} samples and {len(logs)} log entries: NodeReporter -> HTTP -> CSV dataset, exact"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", help="fail unless platform.machine() is this (e.g. aarch64)")
    parser.add_argument("--site", help="fail unless the package was imported from this folder")
    args = parser.parse_args()
    if args.machine and platform.machine() != args.machine:
        sys.exit(f"running on {platform.machine()}, not {args.machine}")
    if args.site and not Path(edgeless_telemetry.__file__).resolve().is_relative_to(Path(args.site).resolve()):
        sys.exit(f"edgeless_telemetry imported from {edgeless_telemetry.__file__}, not from {args.site}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgeless-smoke-") as tmp:
        for name, fn in CHECKS:
            t0 = time.monotonic()
            sub = Path(tmp) / name
            sub.mkdir()
            try:
                detail = fn(sub)
            except Exception:
                print(f"FAIL {name}", flush=True)
                raise
            print(f"ok   {name} ({time.monotonic() - t0:.1f} s): {detail}", flush=True)
    print(f"smoke: {len(CHECKS)} checks passed on {platform.machine()} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
