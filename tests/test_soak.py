"""Soak: a node process emitting at a steady high rate through both targets
(PerformanceTarget and PrometheusTarget), scraped over HTTP in a loop, its
NodeReporter shipping to an OrchestratorCollector process that writes a
real redis-server, for ``EDGELESS_SOAK_SECONDS`` (default 30; the local
long run is ``EDGELESS_SOAK_SECONDS=600``) at ``EDGELESS_SOAK_RATE`` events
per second (default 100,000).

Asserted: flat memory (each process's RSS, after a warm-up third of the run,
grows by less than ``RSS_GROWTH_BOUND``) and zero unexplained loss: every
event emitted is in Redis or in a drop counter, exactly, and in the
Prometheus count. Redis is kept small by moving members out as it goes
(``ZCARD`` + ``DEL`` in one transaction), counting them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from prom_support import http_get, samples
from redis_fixture import RedisServer

SECONDS = float(os.environ.get("EDGELESS_SOAK_SECONDS", "30"))
RATE = int(os.environ.get("EDGELESS_SOAK_RATE", "100000"))
RSS_GROWTH_BOUND = 10 << 20


def growth(points: list[int]) -> float:
    """RSS growth after the warm-up: the median of its last quarter over the
    median of its first. A batch being stored or a scrape being rendered
    lifts one sample for a moment; growth is what stays."""
    quarter = max(1, len(points) // 4)
    return float(statistics.median(points[-quarter:]) - statistics.median(points[:quarter]))
FUNCTIONS = 4

NODE = """
import json, sys, time, uuid
from edgeless_telemetry import NodeReporter, PerformanceTarget, PrometheusTarget, TelemetryProcessor
url, seconds, rate, functions = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
perf = PerformanceTarget()
prom = PrometheusTarget("http://127.0.0.1:0")
reporter = NodeReporter(perf, url, "soak-node", interval_s=0.5).start()
node = TelemetryProcessor([perf, prom], log=False).get_handle({"NODE_ID": "soak-node"})
handles = [node.fork({"FUNCTION_ID": str(uuid.UUID(int=i + 1)), "FUNCTION_TYPE": "soak"}) for i in range(functions)]
print(prom.port, flush=True)
emitted = 0
start = time.monotonic()
while (now := time.monotonic()) - start < seconds:
    ahead = emitted - (now - start) * rate
    if ahead > 0:
        time.sleep(ahead / rate)
    for h in handles:  # values distinct per function: one Redis member each
        for _ in range(250):
            h.invocation_completed((emitted + 1) * 1e-9)
            emitted += 1
reporter.stop()
deadline = time.monotonic() + 60
while reporter.stats()["pending_samples"] and time.monotonic() < deadline:
    reporter.flush()  # until the collector confirms everything
    time.sleep(0.05)
print(json.dumps({"emitted": emitted, "perf": perf.stats(), "reporter": reporter.stats(), "prom": prom.stats(),
                  "exposition": prom.render().decode()}), flush=True)
sys.stdin.readline()  # serving until the scraper has stopped
"""

COLLECTOR = """
import json, sys
from edgeless_telemetry import OrchestratorCollector
col = OrchestratorCollector("http://127.0.0.1:0", redis_url=sys.argv[1]).start()
print(col.url, flush=True)
sys.stdin.readline()
assert col.flush(60)
print(json.dumps(col.stats()), flush=True)
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_soak(redis_server: RedisServer) -> None:
    collector = spawn(COLLECTOR, redis_server.url)
    assert collector.stdout is not None and collector.stdin is not None
    col_url = collector.stdout.readline().strip()
    node = spawn(NODE, col_url, str(SECONDS), str(RATE), str(FUNCTIONS))
    assert node.stdout is not None and node.stdin is not None
    prom_port = int(node.stdout.readline())
    done = threading.Event()  # the node is done: stop scraping and sampling
    flushed = threading.Event()  # the collector flushed Redis: last move
    scrapes = [0]
    moved = [0]
    rss_samples: dict[str, list[tuple[float, int]]] = {"node": [], "collector": []}
    errors: list[BaseException] = []

    def scrape() -> None:  # a Prometheus-like scraper, as fast as it goes
        last = 0.0
        while not done.is_set():
            status, _, body = http_get(prom_port)
            assert status == 200
            counts = [v for (name, _), v in samples(body.decode()).items() if name == "execution_times_count"]
            assert sum(counts) >= last  # counters never go back
            last = sum(counts)
            scrapes[0] += 1
            time.sleep(0.05)

    def move_redis() -> None:  # keeps Redis small: count members, then drop them
        client = redis_server.client()
        while True:
            finished = flushed.is_set()
            for key in client.keys("performance:*"):
                pipe = client.pipeline(transaction=True)
                pipe.zcard(key)
                pipe.delete(key)
                moved[0] += pipe.execute()[0]
            if finished:
                return
            time.sleep(0.5)

    def sample_rss() -> None:
        t0 = time.monotonic()
        while not done.is_set():
            for name, proc in (("node", node), ("collector", collector)):
                if proc.poll() is None:
                    rss_samples[name].append((time.monotonic() - t0, rss(proc.pid)))
            time.sleep(0.5)

    def guarded(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # reported by the test below
                errors.append(e)
                done.set()
                flushed.set()

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (scrape, sample_rss)]
    mover = threading.Thread(target=guarded(move_redis))
    for t in [*threads, mover]:
        t.start()
    watchdog = threading.Timer(SECONDS + 120, node.kill)  # a hung node fails, not hangs, the test
    watchdog.start()
    node_out = node.stdout.readline()  # the node's figures, once it is done
    done.set()
    for t in threads:
        t.join()
    _, node_err = node.communicate("stop\n", timeout=120)
    watchdog.cancel()
    col_out, col_err = collector.communicate("stop\n", timeout=120)
    flushed.set()
    mover.join()  # one last pass after the collector flushed
    assert not errors, errors
    assert node.returncode == 0, node_err[-3000:]
    assert collector.returncode == 0, col_err[-3000:]
    result = json.loads(node_out)
    col_stats = json.loads(col_out)

    emitted = result["emitted"]
    perf, rep = result["perf"], result["reporter"]
    exposition = samples(result["exposition"])
    prom_count = sum(v for (name, _), v in exposition.items() if name == "execution_times_count")
    drops = perf["samples_dropped"] + rep["samples_dropped"]
    in_redis = moved[0]
    figures = {
        "seconds": SECONDS,
        "events": emitted,
        "events_per_s": round(emitted / SECONDS),
        "prometheus_count": prom_count,
        "scrapes": scrapes[0],
        "batches_sent": rep["batches_sent"],
        "samples_sent": rep["samples_sent"],
        "collector_batches_stored": col_stats["batches_stored"],
        "collector_samples_stored": col_stats["samples_stored"],
        "samples_in_redis": in_redis,
        "drops": drops,
        "send_failures": rep["send_failures"],
    }
    for name, points in rss_samples.items():
        warm = [b for t, b in points if t >= SECONDS / 3]
        figures[f"{name}_rss_start_mib"] = round(points[0][1] / 2**20, 1)
        figures[f"{name}_rss_after_warmup_mib"] = round(warm[0] / 2**20, 1)
        figures[f"{name}_rss_end_mib"] = round(warm[-1] / 2**20, 1)
        figures[f"{name}_rss_growth_after_warmup_mib"] = round(growth(warm) / 2**20, 2)
    print("[soak] " + json.dumps(figures))
    for name, points in rss_samples.items():
        step = max(1, len(points) // 12)
        print(f"[soak] {name} RSS MiB over time: " + " ".join(f"{t:.0f}s:{b / 2**20:.1f}" for t, b in points[::step]))

    # Zero unexplained loss: every event is in Redis or counted as dropped,
    # and every event is in the Prometheus histogram.
    assert prom_count == emitted
    assert rep["pending_samples"] == 0
    assert emitted == rep["samples_sent"] + drops
    assert col_stats["redis_members_existing"] == 0 and col_stats["redis_entries_abandoned"] == 0
    assert emitted == in_redis + drops
    assert scrapes[0] > 0 and rep["batches_sent"] > 0
    # Flat memory after the warm-up.
    for name, points in rss_samples.items():
        warm = [b for t, b in points if t >= SECONDS / 3]
        assert len(warm) >= 2, name
        assert growth(warm) < RSS_GROWTH_BOUND, (name, figures)
