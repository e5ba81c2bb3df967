"""Locks across fork, and events recorded from inside a target.

A fork while scrape threads render must never leave the child a lock that
a thread of the parent held (the child would hang on its first new
series); a target that records on its own handle must end in a counted
drop, never a segfault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid

import pytest

from edgeless_telemetry import PrometheusTarget, TelemetryProcessor
from fork_support import fork_child, wait_or_kill

FORKS = 200
# Fewer than the 10,000 so that 200 forks stay well under a minute
# on a loaded machine: a scrape holds a family's lock for a time that grows
# with the series, as the rendering does, so the odds that a fork lands
# while a lock is held do not depend on the count.
SERIES = 2_000
SCRAPERS = 3
CHILD_DEADLINE_S = 5.0
MAX_DEPTH = 32  # rust/chain.rs


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_under_three_scrapers_never_hangs_the_child() -> None:
    prom = PrometheusTarget("http://127.0.0.1:0", max_series=SERIES + FORKS)
    proc = TelemetryProcessor([prom], log=False)
    for i in range(SERIES):
        h = proc.get_handle({"NODE_ID": f"n{i % 10}", "FUNCTION_ID": str(uuid.uuid4()), "FUNCTION_TYPE": "f"})
        h.invocation_completed(0.05 * (i % 30), event_type="CALL")
    assert prom.stats()["execution_times_series"] == SERIES
    url = prom.url
    assert url is not None
    stop = threading.Event()
    scrapes = [0] * SCRAPERS

    def render_loop(k: int) -> None:
        while not stop.is_set():
            prom.render(openmetrics=k % 2 == 1)
            scrapes[k] += 1

    def http_loop(k: int) -> None:
        while not stop.is_set():
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.status == 200
                r.read()
            scrapes[k] += 1

    # Two threads render (GIL released), one scrapes over HTTP (the
    # server's own threads render): all of them take the series tables'
    # locks without the GIL, as the fork happens.
    threads = [threading.Thread(target=render_loop, args=(k,), daemon=True) for k in range(SCRAPERS - 1)]
    threads.append(threading.Thread(target=http_loop, args=(SCRAPERS - 1,), daemon=True))
    for t in threads:
        t.start()
    fids = [str(uuid.uuid4()) for _ in range(FORKS)]
    hung: list[int] = []
    failed: list[tuple[int, int]] = []
    started = time.monotonic()
    try:
        while min(scrapes) == 0 and time.monotonic() - started < 10:
            time.sleep(0.01)
        for n, fid in enumerate(fids):
            def child(fid: str = fid) -> int:
                h = proc.get_handle({"NODE_ID": "child", "FUNCTION_ID": fid, "FUNCTION_TYPE": "f"})
                h.invocation_completed(0.5)
                body = prom.render()
                return 0 if fid.encode() in body and body.count(b"_count{") == SERIES + 1 else 2

            exit_code = wait_or_kill(fork_child(child), CHILD_DEADLINE_S)
            if exit_code is None:
                hung.append(n)
                break  # one is enough; keeps the test bounded
            if exit_code != 0:
                failed.append((n, exit_code))
            time.sleep(0.001 * (n % 7))  # vary where in a scrape the fork lands
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        prom.close()
    elapsed = time.monotonic() - started
    print(f"{FORKS} forks under {SCRAPERS} scrapers of {SERIES:,} series in {elapsed:.1f} s;"
          f" scrapes meanwhile: {scrapes}; hung {len(hung)}, failed {len(failed)}")
    assert not hung, f"child #{hung[0]} did not finish within {CHILD_DEADLINE_S} s (a lock held at fork?)"
    assert not failed, f"children that did not see their new series: {failed[:5]}"
    assert min(scrapes) > 0


REENTRANT = textwrap.dedent(
    """
    import json, logging, sys, threading
    from edgeless_telemetry import PrometheusTarget, TelemetryProcessor

    mode, fan_out, events, fid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    logging.basicConfig(stream=sys.stderr)
    calls = 0

    class Recorder:
        def handle(self, event, tags):
            global calls
            calls += 1
            for _ in range(fan_out):  # records on its own handle
                h.invocation_completed(0.1)

    class Relog(logging.Handler):
        def emit(self, record):
            global calls
            if record.getMessage().startswith("function log"):
                calls += 1
                h.log("info", "relog", "again")  # records on the handle it logs for

    prom = PrometheusTarget()
    if mode == "logging":
        proc = TelemetryProcessor([prom])  # the logging target last
        logging.getLogger("edgeless_telemetry").addHandler(Relog())
        logging.getLogger("edgeless_telemetry").setLevel(logging.INFO)
    else:
        proc = TelemetryProcessor([Recorder(), prom], log=False)
    h = proc.get_handle({"NODE_ID": "n", "FUNCTION_ID": fid, "FUNCTION_TYPE": "f"})

    def run():
        for _ in range(events):
            if mode == "logging":
                h.log("info", "t", "first")
            else:
                h.invocation_completed(0.2)

    if mode == "main":
        sys.setrecursionlimit(5000)
        run()
    else:
        threading.stack_size(1 << 20)
        t = threading.Thread(target=run)
        t.start()
        t.join()
    text = prom.render().decode()
    line = [l for l in text.splitlines() if 'reason="reentrant"' in l]
    count = [l for l in text.splitlines() if l.startswith("execution_times_count")]
    print(json.dumps({"stats": proc.stats(), "calls": calls, "metric": line, "count": count}))
    """
)


@pytest.mark.parametrize(("mode", "fan_out"), [("thread", 1), ("main", 1), ("thread", 2), ("logging", 1)])
def test_target_recording_on_its_own_handle_ends_in_a_counted_drop(mode: str, fan_out: int) -> None:
    events = 10
    run = subprocess.run([sys.executable, "-c", REENTRANT, mode, str(fan_out), str(events), str(uuid.uuid4())],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"exit {run.returncode} (segfault is -11): {run.stderr[-2000:]}"
    got = json.loads(run.stdout)
    stats = got["stats"]
    # Each outermost event nests MAX_DEPTH deep, then the next call into
    # Python is skipped; with fan-out, every pending nested call is skipped
    # at once (one per level), never 2**32 calls.
    assert got["calls"] == events * MAX_DEPTH
    per_event = 1 if fan_out == 1 else 1 + MAX_DEPTH
    assert stats["dropped_reentrant"] == events * per_event
    assert stats["target_errors"] == 0
    assert got["metric"] == [
        f'edgeless_telemetry_dropped_total{{target="processor",reason="reentrant"}} {events * per_event}'
    ]
    if mode != "logging":
        # Native targets still get every event, however deep.
        (count,) = got["count"]
        assert count.endswith(f" {events * (1 + MAX_DEPTH * fan_out)}"), count
    # Logged once, like every drop kind.
    assert run.stderr.count("dropped_reentrant") == 1, run.stderr[-2000:]
    print(f"{mode}, fan-out {fan_out}: {got['calls']} calls into Python, {stats['dropped_reentrant']} dropped")
