"""Collector security, issue 7: loopback by default, bearer tokens (shared
and per node), read deadlines against slow clients, bounded connections.
Real HTTP over real loopback sockets throughout."""

from __future__ import annotations

import ast
import http.client
import inspect
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeless_telemetry import (
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    TelemetryProcessor,
    _core,
)
from ports import free_port

T0 = 1_700_000_000_000_000_000


def filled(n: int, node: str = "node-a") -> PerformanceTarget:
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": node}).fork(
        {"FUNCTION_ID": str(uuid.uuid4())})
    i = np.arange(n, dtype=np.int64)
    h.observe_many(int(FunctionTime.EXECUTION), (i + 1) * 1e-3, timestamps_ns=T0 + i * 1000)
    return perf


def body_for(node: str, n: int = 5, seq: int = 1) -> bytes:
    (batch,) = _core.drain_encode(filled(n, node), node, 99, seq, 0, 1 << 24)
    return bytes(batch[3])


def request(url: str, method: str, path: str, body: bytes | None = None,
            token: str | None = None) -> tuple[int, dict[str, str], str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {"Content-Type": "application/x-protobuf"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def data_rows(prefix: str) -> list[str]:
    return Path(prefix + "performance_samples.csv").read_text().splitlines()[1:]


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent
            addr: str = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_binds_loopback_unless_told_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    default = inspect.signature(OrchestratorCollector).parameters["listen_url"].default
    assert default.startswith("http://127.0.0.1:")
    from edgeless_telemetry.cli import build_parser

    args = build_parser().parse_args(["orchestrator"])
    assert args.listen.startswith("http://127.0.0.1:")
    port = free_port()
    col = OrchestratorCollector(f"http://127.0.0.1:{port}").start()
    try:
        assert col.url == f"http://127.0.0.1:{port}"
        addr = non_loopback_address()
        if addr is not None:  # this host has another address: not served there
            with pytest.raises(OSError):
                socket.create_connection((addr, port), timeout=2).close()
    finally:
        col.stop()
    with caplog.at_level(logging.WARNING, "edgeless_telemetry"):
        OrchestratorCollector("http://0.0.0.0:0").stop()
        assert "without a token" in caplog.text
        caplog.clear()
        OrchestratorCollector("http://0.0.0.0:0", token="t0k3n").stop()
        assert "without a token" not in caplog.text


def test_shared_token(collectors: Any, tmp_path: Path) -> None:
    prefix = str(tmp_path / "d_")
    col = collectors(dataset_path=prefix, token="s3cret-token")
    status, headers, _ = request(col.url, "POST", "/performance", body_for("node-a", seq=1))
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert request(col.url, "POST", "/performance", body_for("node-a", seq=2),
                   token="s3cret-tokem")[0] == 401
    assert request(col.url, "POST", "/performance", body_for("node-a", seq=3),
                   token="s3cret-token-and-more")[0] == 401
    assert data_rows(prefix) == [], "nothing written without the token"
    assert request(col.url, "POST", "/performance", body_for("node-a", seq=4),
                   token="s3cret-token")[0] == 200
    assert len(data_rows(prefix)) == 5
    # Stats need the token too; health does not.
    assert request(col.url, "GET", "/stats")[0] == 401
    status, _, text = request(col.url, "GET", "/stats", token="s3cret-token")
    stats = json.loads(text)
    assert status == 200 and stats["http_401"] == 4 and stats["batches_stored"] == 1
    assert stats["batches_received"] == 1, "refused bodies never reached the decoder"
    assert request(col.url, "GET", "/health")[0] == 200


def test_per_node_tokens(collectors: Any, tmp_path: Path) -> None:
    prefix = str(tmp_path / "d_")
    col = collectors(dataset_path=prefix, node_tokens={"node-a": "token-a", "node-b": "token-b"},
                     token="shared-token")
    # node-b's token cannot write node-a's samples: 403, nothing written.
    status, _, reason = request(col.url, "POST", "/performance", body_for("node-a", seq=1),
                                token="token-b")
    assert status == 403 and "node-a" in reason
    assert data_rows(prefix) == []
    assert request(col.url, "POST", "/performance", body_for("node-a", seq=1),
                   token="token-a")[0] == 200
    assert request(col.url, "POST", "/performance", body_for("node-b", seq=1),
                   token="token-b")[0] == 200
    # The shared token may send for any node.
    assert request(col.url, "POST", "/performance", body_for("node-c", seq=1),
                   token="shared-token")[0] == 200
    stats = col.stats()
    assert stats["http_403"] == 1 and stats["batches_forbidden"] == 1
    assert stats["batches_stored"] == 3 and len(data_rows(prefix)) == 15


def test_reporter_sends_its_token_and_keeps_refused_batches(collectors: Any,
                                                            tmp_path: Path) -> None:
    prefix = str(tmp_path / "d_")
    col = collectors(dataset_path=prefix, node_tokens={"node-a": "token-a"})
    perf = filled(50)
    without = NodeReporter(perf, col.url, "node-a", interval_s=60, timeout_s=2)
    assert not without.flush()
    stats = without.stats()
    # A token problem is the configuration's, not the data's: kept, not dropped.
    assert stats["pending_samples"] == 50 and stats["samples_dropped"] == 0
    assert "401" in without.last_error
    perf = filled(70)
    with_token = NodeReporter(perf, col.url, "node-a", interval_s=60, timeout_s=2,
                              token="token-a")
    assert with_token.flush(), with_token.last_error
    assert with_token.stats()["samples_sent"] == 70
    assert len(data_rows(prefix)) == 70


def test_tokens_are_checked_early(collectors: Any) -> None:
    with pytest.raises(ValueError, match="token"):
        OrchestratorCollector("http://127.0.0.1:0", token="has space")
    with pytest.raises(ValueError, match="different"):
        OrchestratorCollector("http://127.0.0.1:0", token="same", node_tokens={"n": "same"})
    with pytest.raises(ValueError, match="node id"):
        OrchestratorCollector("http://127.0.0.1:0", node_tokens={"": "t0k3n"})
    with pytest.raises(ValueError, match="token"):
        NodeReporter(PerformanceTarget(), "http://127.0.0.1:1", "n", token="bad\ntoken")
    # How the header is read: scheme in any case, blanks around ignored.
    col = collectors(node_tokens={"n1": "a1", "n2": "a2"})
    assert request(col.url, "POST", "/performance", body_for("n2"), token="a2")[0] == 200
    for header in ("bearer  a1 ", "BEARER a1"):
        status = raw_status(col.url, b"POST /performance HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: " + header.encode() + b"\r\n"
                            + b"Content-Length: %d\r\n\r\n" % len(body_for("n1", seq=9))
                            + body_for("n1", seq=9))
        assert status == 200, header
    for header in ("Basic a1", "Bearer", "Bearer a", "Bearer a1x"):
        status = raw_status(col.url, b"GET /stats HTTP/1.1\r\nHost: x\r\n"
                            b"Authorization: " + header.encode() + b"\r\n\r\n")
        assert status == 401, header
    assert request(col.url, "GET", "/stats")[0] == 401


def test_a_collector_that_cannot_start_leaves_the_dataset_alone(tmp_path: Path) -> None:
    """A second collector started by mistake on the running one's port and
    files (`append=False`, the default) emptied the running one's dataset
    before it found the port taken: the core was made before the server.
    Now the port, the tokens and the web config are checked first."""
    prefix = str(tmp_path / "d_")
    running = OrchestratorCollector("http://127.0.0.1:0", dataset_path=prefix).start()
    try:
        assert request(running.url, "POST", "/performance", body_for("n1"))[0] == 200
        files = {f: f.read_bytes() for f in tmp_path.iterdir()}
        samples = (tmp_path / "d_performance_samples.csv").read_bytes()
        assert samples.count(b"\n") == 1 + 5
        for bad in ({"listen_url": running.url},  # the port is taken
                    {"listen_url": "http://127.0.0.1:0", "token": "has space"},
                    {"listen_url": "http://127.0.0.1:0", "web_config": str(tmp_path / "missing.yml")}):
            with pytest.raises((OSError, ValueError)):
                OrchestratorCollector(dataset_path=prefix, **bad)
            assert {f: f.read_bytes() for f in tmp_path.iterdir()} == files, bad
        # The running one still stores into the same files.
        assert request(running.url, "POST", "/performance", body_for("n1", seq=2))[0] == 200
        assert (tmp_path / "d_performance_samples.csv").read_bytes().count(b"\n") == 1 + 10
    finally:
        running.stop()


def raw_status(url: str, raw: bytes) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(raw)
        return int(s.recv(1024).split(b" ", 2)[1])


def trickle(socks: list[socket.socket], data: bytes, max_steps: int) -> int:
    """Sends one byte of ``data`` per socket every 50 ms until the server
    has closed every socket; returns how many are still open after
    ``max_steps`` rounds."""
    open_ = list(socks)
    for step in range(max_steps):
        for s in list(open_):
            try:
                s.send(data[step % len(data): step % len(data) + 1])
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        open_.remove(s)
                except BlockingIOError:
                    pass
                finally:
                    s.setblocking(True)
            except OSError:  # reset or broken pipe: the server cut it
                open_.remove(s)
        if not open_:
            break
        time.sleep(0.05)
    return len(open_)


def test_slow_clients_are_cut_and_do_not_block_others(collectors: Any, tmp_path: Path) -> None:
    prefix = str(tmp_path / "d_")
    col = collectors(dataset_path=prefix, read_timeout_s=0.5, max_connections=8)
    host, port = col.url.removeprefix("http://").split(":")
    body = body_for("node-a", seq=7)
    head = (f"POST /performance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    slow_headers = [socket.create_connection((host, int(port))) for _ in range(3)]
    slow_body = []
    for _ in range(2):
        s = socket.create_connection((host, int(port)))
        s.sendall(head + body[:3])  # headers complete, body trickles
        slow_body.append(s)
    # While they trickle, a real node gets through at once.
    perf = filled(100)
    rep = NodeReporter(perf, col.url, "node-b", interval_s=60, timeout_s=5)
    assert rep.flush(), rep.last_error
    # They keep trickling (one byte per 50 ms, far under any per-read
    # timeout), yet all are cut: 10 s of trickling is 20 read deadlines.
    assert trickle(slow_headers + slow_body, head, max_steps=200) == 0
    stats = col.stats()
    assert stats["http_timeouts"] >= 5
    assert stats["batches_stored"] == 1 and stats["samples_stored"] == 100
    assert len(data_rows(prefix)) == 100, "the slow bodies wrote nothing"
    print(f"\nslow clients: 5 connections trickling a byte per 50 ms all cut"
          f" (http_timeouts={stats['http_timeouts']}, read_timeout_s=0.5); a node's 100"
          f" samples stored meanwhile")
    for s in slow_headers + slow_body:
        s.close()


def test_connections_are_bounded(collectors: Any) -> None:
    # Two slots, both held by idle connections: a new request is admitted
    # by closing the oldest idle one, never refused for them.
    col = collectors(read_timeout_s=5.0, max_connections=2)
    host, port = col.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(2)]
    time.sleep(0.2)  # both accepted, in that order
    assert request(col.url, "GET", "/health")[0] == 200
    idle[0].settimeout(10)
    assert idle[0].recv(1) == b"", "the oldest idle connection was closed"
    evicted = col.stats()["http_evictions"]
    assert evicted >= 1
    # The other idle one holds its slot only until the request deadline.
    idle[1].settimeout(15)
    assert idle[1].recv(1) == b""
    for s in idle:
        s.close()
    assert col.stats()["http_timeouts"] >= 1
    print(f"\nbounded: max_connections=2 held by idle sockets; a request got 200 by evicting"
          f" the oldest (http_evictions={evicted}), the other was cut at read_timeout_s=5")


def test_bytes_in_flight_are_bounded(collectors: Any, tmp_path: Path) -> None:
    # Every connection may hold a body; together they may hold at most
    # max_inflight_bytes, whatever max_connections is: past it, 503 (kept).
    # A body holds the bytes it has sent (what it declared holds nothing,
    # see test_http_attacks.py's attack 4b).
    body = body_for("node-a")
    col = collectors(dataset_path=str(tmp_path / "ds_"), max_body_bytes=len(body),
                     max_inflight_bytes=len(body) + len(body) // 2)
    host, port = col.url.removeprefix("http://").split(":")
    sent = len(body) * 3 // 4
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        # Announces a full body but sends only 3/4 of it: it holds them.
        slow.sendall(b"POST /performance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:sent])
        deadline = time.monotonic() + 5
        while col.stats()["http_inflight_bytes"] < sent:
            assert time.monotonic() < deadline, "the slow body's bytes were never reserved"
            time.sleep(0.01)
        assert request(col.url, "POST", "/performance", body_for("node-b"))[0] == 503
        slow.sendall(body[sent:])
        assert slow.recv(1024).split(b" ", 2)[1] == b"200"
    # Given back: the refused body goes through now.
    assert request(col.url, "POST", "/performance", body_for("node-b"))[0] == 200
    assert col.stats()["http_inflight_bytes"] == 0
    assert col.stats()["http_503_busy"] == 1
    print(f"\nin flight: budget {len(body) * 3 // 2} bytes, a second {len(body)}-byte body got 503"
          " while the first was read, then 200")


def test_a_body_that_outgrows_the_budget_while_it_arrives_gets_503(
        collectors: Any, tmp_path: Path) -> None:
    # Two bodies fit when they begin; while both arrive, the one that runs
    # out of budget gets 503 midway (its bytes given back, nothing of it
    # written), and the other is stored.
    body = body_for("node-a")
    q = len(body) // 4
    col = collectors(dataset_path=str(tmp_path / "ds_"), max_body_bytes=len(body),
                     max_inflight_bytes=len(body) + 2 * q)
    host, port = col.url.removeprefix("http://").split(":")
    head = (b"POST /performance HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())

    def holding(n: int) -> None:
        deadline = time.monotonic() + 5
        while col.stats()["http_inflight_bytes"] < n:
            assert time.monotonic() < deadline, f"{n} bytes never reserved"
            time.sleep(0.01)

    def answer(s: socket.socket) -> int:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return int(data.split(b" ", 2)[1])

    a = socket.create_connection((host, int(port)), timeout=5)
    b = socket.create_connection((host, int(port)), timeout=5)
    try:
        a.sendall(head + body[:q])
        holding(q)
        b.sendall(head + body[: 2 * q])  # declared length fits: 1/4 held
        holding(3 * q)
        a.sendall(body[q : 3 * q])  # a holds 3/4: 5/4 in all
        holding(5 * q)
        b.sendall(body[2 * q :])  # b needs 2/4 more: over 6/4
        b_status = answer(b)
        a.sendall(body[3 * q :])
        a_status = answer(a)
    finally:
        a.close()
        b.close()
    assert (a_status, b_status) == (200, 503)
    stats = col.stats()
    assert (stats["batches_stored"], stats["http_503_busy"], stats["http_inflight_bytes"]) == (1, 1, 0)


def test_orchestrator_and_node_commands_use_the_token(tmp_path: Path) -> None:
    port = free_port()
    prefix = str(tmp_path / "ds_")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"node-x": "token-x"}))
    env = dict(os.environ, EDGELESS_TELEMETRY_TOKEN="env-shared-token")
    orc = subprocess.Popen(
        [sys.executable, "-m", "edgeless_telemetry.cli", "orchestrator",
         "--listen", f"http://127.0.0.1:{port}", "--dataset-path", prefix,
         "--node-tokens", str(tokens), "--stats-interval", "0", "--verbose-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert orc.stdout is not None
        assert orc.stdout.readline().startswith("listening on")
        url = f"http://127.0.0.1:{port}"
        assert request(url, "POST", "/performance", body_for("node-x"))[0] == 401
        assert request(url, "POST", "/performance", body_for("node-y"), token="token-x")[0] == 403
        node = [sys.executable, "-m", "edgeless_telemetry.cli", "node", "--orchestrator-url", url,
                "--duration", "0.5", "--rate", "2000", "--functions", "2", "--interval", "0.2"]
        # The node reads the shared token from the environment...
        done = subprocess.run([*node, "--node-id", "node-y"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        # ...or takes its own with --token; without one it cannot deliver.
        done = subprocess.run([*node, "--node-id", "node-x", "--token", "token-x"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        plain = {k: v for k, v in os.environ.items() if k != "EDGELESS_TELEMETRY_TOKEN"}
        done = subprocess.run([*node, "--node-id", "node-z"], env=plain, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "401" in done.stdout + done.stderr
    finally:
        orc.terminate()
        _, err = orc.communicate(timeout=10)
    final = ast.literal_eval(err.strip().splitlines()[-1].removeprefix("collector: "))
    assert final["http_403"] == 1 and final["batches_forbidden"] == 1
    assert final["http_401"] >= 2  # the bare POST and node-z's attempts
    assert final["batches_stored"] >= 2 and final["samples_stored"] == len(data_rows(prefix))


def test_refusals_reach_a_client_still_sending_its_body(collectors: Any, tmp_path: Path) -> None:
    # A refusal is sent before the body is read; the connection then
    # drains what the client still sends before closing, so the client
    # reads the answer instead of a reset (which a node would retry).
    prefix = str(tmp_path / "d_")
    col = collectors(dataset_path=prefix, token="t0k3n", max_body_bytes=1 << 20)
    big = b"\0" * (4 << 20)
    for _ in range(3):
        assert request(col.url, "POST", "/performance", big)[0] == 401
        assert request(col.url, "POST", "/performance", big, token="t0k3n")[0] == 413
    stats = col.stats()
    assert (stats["http_401"], stats["http_413"], stats["batches_received"]) == (3, 3, 0)
    assert data_rows(prefix) == []
