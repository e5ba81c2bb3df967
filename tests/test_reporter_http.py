"""The NodeReporter's HTTP client (Rust, hyper) against peers that misbehave:
a collector that accepts and never answers, one that answers garbage or
hangs up, bad URLs, and a fork while a send is in progress. Real sockets on
127.0.0.1 throughout; every wait is bounded."""

from __future__ import annotations

import contextlib
import csv
import http.client
import http.server
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeless_telemetry import (
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryHandle,
    TelemetryProcessor,
)
from ports import listening_socket


def handle(perf: PerformanceTarget) -> TelemetryHandle:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"})
    return node.fork({"FUNCTION_ID": str(uuid.uuid4())})


def stored_values(prefix: str) -> list[float]:
    with open(prefix + "performance_samples.csv", newline="") as f:
        return sorted(float(row[3]) for row in list(csv.reader(f))[1:])


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` in a thread; fails the test (instead of hanging it) if it
    does not return within ``seconds``."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"did not return within {seconds} s"
    return out[0]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket nobody serves: connections queue in its backlog.
    `accept()` on it gives up after 10 s rather than hang the test."""
    with listening_socket() as s:
        s.settimeout(10)
        yield s


def serve_once(listener: socket.socket, answer: bytes) -> tuple[threading.Thread, list[bytes]]:
    """Accepts one connection, reads one request, answers ``answer`` and
    closes; returns the thread and a list that gets the request."""
    got: list[bytes] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            got.append(conn.recv(65536))
            conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_silent_collector_ends_at_the_deadline_and_the_body_stays_pending(
    listener: socket.socket, tmp_path: Path
) -> None:
    """A peer that takes the connection and the request but never answers:
    the send ends at `timeout_s` (connect + send + answer), is counted as a
    failure, and the body is kept; a collector later on that port gets it."""
    port = listener.getsockname()[1]
    perf = PerformanceTarget()
    h = handle(perf)
    for i in range(20):
        h.invocation_completed(1.0 + i)
    rep = NodeReporter(perf, f"http://127.0.0.1:{port}", "node-silent", interval_s=60,
                       timeout_s=2)
    assert not within(20, rep.flush)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(10)
        assert conn.recv(65536).startswith(b"POST /performance HTTP/1.1\r\n")
    stats = rep.stats()
    assert stats["send_failures"] == 1 and stats["batches_sent"] == 0
    assert stats["pending_batches"] == 1 and stats["pending_samples"] == 20
    assert "timed out" in rep.last_error and f"127.0.0.1:{port}" in rep.last_error
    failing_since = rep.failing_since
    assert failing_since is not None and abs(failing_since - time.time()) < 60
    print(f"\nsilent collector: {rep.last_error!r}")
    listener.close()

    prefix = str(tmp_path / "d_")
    col = OrchestratorCollector(f"http://127.0.0.1:{port}", dataset_path=prefix).start()
    try:
        assert within(20, lambda: rep.flush(deadline=time.monotonic() + 10)), rep.last_error
        assert rep.stop()
        assert rep.failing_since is None and rep.stats()["samples_sent"] == 20
    finally:
        col.stop()
    assert stored_values(prefix) == [1.0 + i for i in range(20)]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "bad response"),
        (b"HTTP/1.1 abc\r\n\r\n", "bad response"),
        (b"", "connection reset"),  # reads the request, hangs up
    ],
    ids=["garbage", "bad-status-line", "hang-up"],
)
def test_a_peer_that_does_not_speak_http_is_counted_and_the_body_kept(
    listener: socket.socket, answer: bytes, expected: str
) -> None:
    port = listener.getsockname()[1]
    server, _ = serve_once(listener, answer)
    perf = PerformanceTarget()
    h = handle(perf)
    for i in range(7):
        h.invocation_completed(0.1 * i)
    rep = NodeReporter(perf, f"http://127.0.0.1:{port}", "node-g", interval_s=60, timeout_s=5)
    assert not within(20, rep.flush)
    server.join(10)
    stats = rep.stats()
    assert stats["send_failures"] == 1 and stats["batches_sent"] == 0
    assert stats["pending_batches"] == 1 and stats["pending_samples"] == 7
    assert stats["samples_dropped"] == 0 and stats["connections_opened"] == 1
    assert expected in rep.last_error, rep.last_error
    print(f"\n{answer[:12]!r}: {rep.last_error!r}")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:7100",
        "127.0.0.1:7100",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://user@127.0.0.1:7100",
        "http://127.0.0.1:7100/?x=1",
        "http://127.0.0.1:7100/a b",
    ],
)
def test_bad_urls_raise_at_construction_naming_the_url(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape(url)) as e:
        NodeReporter(PerformanceTarget(), url, "n")
    assert "orchestrator_url" in str(e.value)


def test_urls_with_a_base_path_and_names_are_accepted(listener: socket.socket) -> None:
    """A base path is kept (`/base/performance`), a host name resolves."""
    port = listener.getsockname()[1]
    server, got = serve_once(listener, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    perf = PerformanceTarget()
    handle(perf).invocation_completed(0.5)
    rep = NodeReporter(perf, f"http://localhost:{port}/base/", "n", timeout_s=5)
    assert within(20, rep.flush), rep.last_error
    server.join(10)
    assert got[0].startswith(b"POST /base/performance HTTP/1.1\r\n")


class _HoldFirst(http.server.BaseHTTPRequestHandler):
    """A proxy in front of a collector that holds the first request it gets
    until `release` is set, and forwards every request."""

    protocol_version = "HTTP/1.1"
    upstream = ("", 0)
    entered = threading.Event()
    release = threading.Event()
    seen = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            first = type(self).seen == 0
            type(self).seen += 1
        if first:
            self.entered.set()
            self.release.wait(30)
        up = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            up.request("POST", self.path, body=body,
                       headers={"Content-Type": self.headers["Content-Type"]})
            resp = up.getresponse()
            data = resp.read()
        finally:
            up.close()
        self.send_response(resp.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _in_child(body: Callable[[], object], limit_s: int = 20) -> object:
    """Runs ``body`` in a forked child killed by SIGALRM after ``limit_s``
    (a hang fails the test instead of hanging it); returns its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            signal.alarm(limit_s)
            os.write(write, json.dumps(body()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child ended with {status}"
    return json.loads(data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_a_send_is_in_progress(tmp_path: Path) -> None:
    """Another thread is inside `flush()` (holding the reporter's state,
    its connection mid-request) when the main thread forks. The child's
    reporter must not wait for that state: it is a new node instance that
    sends its own samples at once; stats never wait for the held send; the
    parent's send completes once answered. Every sample stored once."""
    prefix = str(tmp_path / "d_")
    col = OrchestratorCollector("http://127.0.0.1:0", dataset_path=prefix).start()
    assert col.url is not None
    host, port = col.url.removeprefix("http://").split(":")
    _HoldFirst.upstream = (host, int(port))
    _HoldFirst.entered.clear()
    _HoldFirst.release.clear()
    _HoldFirst.seen = 0
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HoldFirst)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        perf = PerformanceTarget()
        h = handle(perf)
        rep = NodeReporter(perf, f"http://127.0.0.1:{proxy.server_address[1]}", "node-mid",
                           interval_s=3600, timeout_s=20)
        h.invocation_completed(0.5)
        results: list[bool] = []
        sender = threading.Thread(target=lambda: results.append(rep.flush()), daemon=True)
        sender.start()
        assert _HoldFirst.entered.wait(10)  # the parent's send is in flight
        h.invocation_completed(1.0)  # in the target at fork time: the parent's

        # Stats and the last error do not wait for the send in progress.
        stats = within(5, rep.stats)
        assert stats["pending_batches"] == 1 and stats["batches_sent"] == 0

        def child() -> object:
            fresh = rep.stats()
            h.invocation_completed(10.0)
            h.invocation_completed(11.0)
            ok = rep.flush(deadline=time.monotonic() + 10)
            return [rep.nonce, fresh["pending_batches"], fresh["inherited_samples_discarded"],
                    ok, rep.stats()["samples_sent"], rep.last_error]

        result = _in_child(child)
        assert isinstance(result, list)
        child_nonce, pending, discarded, ok, sent, error = result
        assert (pending, discarded, ok, sent) == (0, 1, True, 2), error
        assert child_nonce != rep.nonce
        assert not results  # the parent's send is still held
        _HoldFirst.release.set()
        sender.join(20)
        assert results == [True], rep.last_error
        assert within(20, rep.stop), rep.last_error
        assert rep.stats()["samples_sent"] == 2  # 0.5, then 1.0
    finally:
        _HoldFirst.release.set()
        proxy.shutdown()
        proxy.server_close()
        col.stop()
    assert stored_values(prefix) == [0.5, 1.0, 10.0, 11.0]
    assert col.stats()["batches_duplicate"] == 0


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next status of `script`, recording what
    arrived (its length, and the Authorization header)."""

    protocol_version = "HTTP/1.1"
    script: list[int] = []
    seen: list[tuple[int, str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((len(body), self.headers["Authorization"]))
        status = type(self).script.pop(0)
        reason = f"scripted {status}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(reason)))
        self.end_headers()
        self.wfile.write(reason)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def scripted(script: list[int]) -> Iterator[str]:
    """A `_Scripted` server answering `script` in turn; yields its URL."""
    _Scripted.script = script
    _Scripted.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_each_answer_of_the_delivery_table() -> None:
    """400 and 413 drop the body (counted) and the next goes on; 401, 500
    and 202 keep it for the next period; 200 sends it. All on one
    kept-alive connection, each request carrying the token."""
    with scripted([400, 200, 401, 500, 202, 200, 413]) as url:
        perf = PerformanceTarget()
        h = handle(perf)
        rep = NodeReporter(perf, url, "node-t",
                           interval_s=60, timeout_s=5, token="tok-1")

        def record(n: int) -> None:
            for i in range(n):
                h.invocation_completed(0.25 * (i + 1))

        record(3)  # each flush here makes one body
        assert within(20, rep.flush)  # 400: dropped, nothing left
        s = rep.stats()
        assert (s["batches_rejected"], s["samples_dropped"], s["pending_batches"]) == (1, 3, 0)
        assert "HTTP 400: scripted 400" in rep.last_error
        record(2)
        assert within(20, rep.flush)  # 200
        assert rep.failing_since is None and rep.stats()["samples_sent"] == 2
        record(4)
        for status in (401, 500, 202):  # kept, sent again next time
            assert not within(20, rep.flush)
            assert f"HTTP {status}" in rep.last_error and rep.stats()["pending_samples"] == 4
        assert rep.failing_since is not None
        assert within(20, rep.flush)  # 200 at last
        record(1)
        assert within(20, rep.flush)  # 413: dropped
        s = rep.stats()
        assert (s["batches_sent"], s["samples_sent"], s["batches_rejected"]) == (2, 6, 2)
        assert (s["send_failures"], s["batches_unconfirmed"], s["samples_dropped"]) == (2, 1, 4)
        assert (s["pending_batches"], s["connections_opened"]) == (0, 1)
        sizes = [n for n, _ in _Scripted.seen]
        assert len(sizes) == 7 and sizes[2] == sizes[3] == sizes[4] == sizes[5]  # one body resent
        assert {auth for _, auth in _Scripted.seen} == {"Bearer tok-1"}


def test_a_proxy_s_408_and_429_keep_the_body() -> None:
    """408 (request timeout) and 429 (too many requests) say "later", not
    "never": a proxy in front of the collector answers them, and the body
    must be sent again, not dropped as a 400 is."""
    with scripted([429, 408, 200]) as url:
        perf = PerformanceTarget()
        h = handle(perf)
        rep = NodeReporter(perf, url, "node-t",
                           interval_s=60, timeout_s=5)
        for i in range(3):
            h.invocation_completed(0.25 * (i + 1))
        for status in (429, 408):
            assert not within(20, rep.flush)
            assert f"HTTP {status}: scripted {status}" in rep.last_error
            assert rep.stats()["pending_samples"] == 3
        assert within(20, rep.flush)
        s = rep.stats()
        assert (s["samples_sent"], s["batches_rejected"], s["samples_dropped"]) == (3, 0, 0)
        assert s["send_failures"] == 2
        sizes = [n for n, _ in _Scripted.seen]
        assert len(sizes) == 3 and len(set(sizes)) == 1  # one body, sent three times


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_keep_the_parents_connection_open(
    listener: socket.socket,
) -> None:
    """The child's copy of the reporter's kept-alive socket is closed at
    fork, so when the parent closes its connection the collector sees it
    closed at once, though the child lives on."""
    perf = PerformanceTarget()
    handle(perf).invocation_completed(0.5)
    rep = NodeReporter(perf, f"http://127.0.0.1:{listener.getsockname()[1]}", "node-k",
                       interval_s=60, timeout_s=5)

    def answer_once() -> socket.socket:
        conn, _ = listener.accept()
        conn.settimeout(10)
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return conn

    accepted: list[socket.socket] = []
    server = threading.Thread(target=lambda: accepted.append(answer_once()), daemon=True)
    server.start()
    assert within(20, rep.flush)  # the reporter keeps this connection open
    server.join(10)
    (conn,) = accepted
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # lives, doing nothing, until the parent is done
        try:
            signal.alarm(30)
            os.read(go_read, 1)
        finally:
            os._exit(0)
    try:
        assert rep.stop()  # closes the parent's connection
        with conn:
            assert conn.recv(1) == b""  # EOF, not a timeout: no copy in the child
    finally:
        os.write(go_write, b"x")
        os.waitpid(pid, 0)
