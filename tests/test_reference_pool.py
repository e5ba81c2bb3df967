"""No Python reference is dropped by a thread that is not attached to Python.

PyO3 defers such a drop to a pool behind a mutex; a ``fork()`` at the instant
a background thread holds it leaves it locked in the child, whose next call
into the extension hangs (README, "Process life"). The sites found (with a
build where such a drop aborts, ``scripts/test-no-reference-pool.sh``) are
checked here where the normal build can see them: a reference the pool still
holds shows as one reference too many, since nothing here lets PyO3 drain the
pool before the count is read (those checks failed before their fix). The
scenario of a collector dropped while it stores passes on the normal build
either way; under that script it aborted before the fix.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from edgeless_telemetry import FunctionTime, PerformanceTarget, TelemetryProcessor, _core


def batch_body() -> bytes:
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"}).fork({"FUNCTION_ID": str(uuid.uuid4())})
    h.observe_many(int(FunctionTime.EXECUTION), np.full(5, 1e-3), timestamps_ns=10**18 + np.arange(5))
    (batch,) = _core.drain_encode(perf, "n", 9, 1, 0, 1 << 24)
    return bytes(batch[3])


def test_the_collector_server_holds_no_python_reference_to_its_core() -> None:
    # The server's tasks and storer threads hold what the server holds, and
    # drop it when their request ends, which may be after Python let go.
    core = _core.CollectorCore()
    before = sys.getrefcount(core)
    server = _core.CollectorServer("127.0.0.1", 0)
    server.attach(core)
    assert sys.getrefcount(core) == before  # it held one before the fix
    server.start()
    assert sys.getrefcount(core) == before
    server.stop()


def test_a_collector_dropped_while_a_batch_is_stored_lets_it_finish(tmp_path: Path) -> None:
    # A "Redis" that takes the connection and never answers: the batch waits
    # `redis_ack_timeout_s` for its ack on a storer thread, meanwhile the
    # server is stopped and Python drops the server and the core. That
    # thread (or a server task) then drops the last reference to the core:
    # before the fix, one to the Python object.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    core = _core.CollectorCore(redis_url=f"redis://127.0.0.1:{mute.getsockname()[1]}", redis_ack_timeout_s=0.5,
                               dataset_path=str(tmp_path / "d-"))
    server = _core.CollectorServer("127.0.0.1", 0)
    server.attach(core)
    server.start()
    port = int(server.url.rsplit(":", 1)[1])
    answer: list[int] = []

    def post() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/performance", body=batch_body(),
                         headers={"Content-Type": "application/x-protobuf"})
            answer.append(conn.getresponse().status)
        finally:
            conn.close()

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + 10
    while server.stats()["batches_received"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.stop()
    del server, core
    sender.join(10)
    mute.close()
    assert answer == [202]  # taken, queued for a Redis that never acked
    rows = (tmp_path / "d-performance_samples.csv").read_text().splitlines()
    assert len(rows) == 1 + 5


def test_a_failed_web_config_reload_on_the_watcher_thread_leaves_nothing_to_the_pool(tmp_path: Path) -> None:
    # The error of a reload that the file watcher started holds Python
    # objects (here a `TypeError` about the key 2020-01-01, holding the key
    # and the `str` type); it was dropped on the watcher's thread after it
    # let Python go. In a process of its own so that no other thread lets
    # PyO3 drain its pool while the count is read.
    code = textwrap.dedent("""
        import sys, time, urllib.request
        from edgeless_telemetry import PrometheusTarget
        path = sys.argv[1]
        open(path, "w").write("")
        prom = PrometheusTarget("http://127.0.0.1:0", web_config=path)
        urllib.request.urlopen(prom.url, timeout=5).read()
        # The same request without a reload: the count does not move.
        still = sys.getrefcount(str)
        urllib.request.urlopen(prom.url, timeout=5).read()
        time.sleep(0.2)
        still = sys.getrefcount(str) - still
        open(path, "w").write("tls_server_config:\\n  2020-01-01: x\\n")
        time.sleep(1.1)  # the files are looked at once a second at most
        before = sys.getrefcount(str)
        urllib.request.urlopen(prom.url, timeout=5).read()  # starts the reload
        time.sleep(1.0)
        after = sys.getrefcount(str)
        print(still, after - before, prom.stats()["web_config_reload_errors"])
    """)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "web.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    still, moved, errors = map(int, done.stdout.split())
    assert (still, errors) == (0, 1)
    assert moved == 0  # 1 before the fix: the error's, left in the pool
