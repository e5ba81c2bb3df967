"""TLS, client certificates and basic auth on /metrics and the collector,
configured by an exporter-toolkit web configuration file. Certificates are
made here with Debian's `openssl`; clients are Python's ssl/urllib and a real
Prometheus."""
from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeless_telemetry import (
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    PrometheusTarget,
    TelemetryProcessor,
)
from fork_support import fork_child, wait_or_kill
from pki import CLIENT_EXT, SERVER_EXT, Pki, make_ca, make_cert
from prom_support import NODE_JOB, run_prometheus

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

PASSWORD = "scrape-secret"
# bcrypt (cost 10) of PASSWORD, made with libxcrypt: an independent
# implementation, so a wrong verification here would fail the 200 below.
HASH = "$2b$10$EcAf0yPKs4ETae.KusJc0er8cKB6MtRmJGVf6rZPS/ShEBCoSomtO"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "server", "ca", SERVER_EXT)
    make_cert(d, "server2", "ca", SERVER_EXT)
    make_cert(d, "client", "ca", CLIENT_EXT)
    make_cert(d, "stranger", "other-ca", CLIENT_EXT)
    return Pki(d)


def web_config(tmp: Path, name: str = "web.yml", **sections: Any) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def tls_section(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": pki.path("server.crt"), "key_file": pki.path("server.key"), **extra}


def fetch(url: str, ctx: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def node(web: str) -> tuple[PrometheusTarget, TelemetryProcessor]:
    target = PrometheusTarget("http://127.0.0.1:0", web_config=web)
    proc = TelemetryProcessor([target], log=False)
    h = proc.get_handle({"NODE_ID": "tls-node"}).fork({"FUNCTION_ID": str(uuid.uuid4()), "FUNCTION_TYPE": "python"})
    h.function_instantiate(0.01)
    return target, proc


def test_scrape_over_https_and_plain_http_fails(pki: Pki, tmp_path: Path) -> None:
    target, _ = node(web_config(tmp_path, tls_server_config=tls_section(pki)))
    with target:
        url = target.url
        assert url is not None and url.startswith("https://127.0.0.1:")
        status, body = fetch(url, pki.context())
        assert status == 200 and b"\nfunction_count{" in body
        # Plain HTTP to the TLS port: no HTTP answer.
        conn = http.client.HTTPConnection("127.0.0.1", target.port or 0, timeout=10)
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/metrics")
            conn.getresponse()
        conn.close()
        # A client that does not trust our CA refuses the server.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(url, ssl.create_default_context())
        deadline = time.monotonic() + 10
        while target.stats()["http_tls_failures"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.stats()["http_tls_failures"] == 2


def test_min_version_tls13_refuses_tls12(pki: Pki, tmp_path: Path) -> None:
    target, _ = node(web_config(tmp_path, tls_server_config=tls_section(pki, min_version="TLS13")))
    with target:
        ctx = pki.context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(urllib.error.URLError):
            fetch(target.url or "", ctx)
        assert fetch(target.url or "", pki.context())[0] == 200


def test_mutual_tls_required(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.crt")))
    target, _ = node(web)
    with target:
        url = target.url or ""
        assert fetch(url, pki.context("client"))[0] == 200
        for refused in (pki.context(), pki.context("stranger")):
            # TLS 1.3: the server's refusal may arrive after the client's
            # handshake completed, as an alert or a reset on the first read.
            with pytest.raises((urllib.error.URLError, ssl.SSLError, OSError)):
                fetch(url, refused)
        assert target.stats()["http_requests"] == 1


def test_basic_auth(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(pki), basic_auth_users={"prometheus": HASH})
    target, _ = node(web)
    with target:
        url, ctx = target.url or "", pki.context()
        status, _ = fetch(url, ctx)
        assert status == 401
        assert fetch(url, ctx, auth=("prometheus", "wrong"))[0] == 401
        assert fetch(url, ctx, auth=("nobody", PASSWORD))[0] == 401
        for _ in range(3):  # the second and third come from the cache
            status, body = fetch(url, ctx, auth=("prometheus", PASSWORD))
            assert status == 200 and b"\nfunction_count{" in body
        assert target.stats()["http_401"] == 3


def test_reload_applies_to_kept_alive_connections(pki: Pki, tmp_path: Path) -> None:
    """A scraper's kept-alive connection does not outlive a reload's changes:
    basic auth is checked against the new users from its next request, and
    the connection (whose TLS was agreed under the old file) closes after
    that answer."""
    web = web_config(tmp_path, tls_server_config=tls_section(pki), basic_auth_users={"prometheus": HASH})
    target, _ = node(web)
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    auth = {"Authorization": f"Basic {token}"}
    with target:
        assert target.port is not None
        conn = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=10, context=pki.context())
        try:
            conn.request("GET", "/metrics", headers=auth)
            resp = conn.getresponse()
            assert (resp.status, resp.getheader("connection")) == (200, None)
            resp.read()
            # The user is renamed: its old credentials must not scrape again.
            web_config(tmp_path, tls_server_config=tls_section(pki), basic_auth_users={"renamed": HASH})
            target.reload_web_config()
            conn.request("GET", "/metrics", headers=auth)
            resp = conn.getresponse()
            resp.read()
            assert (resp.status, resp.getheader("connection")) == (401, "close")
        finally:
            conn.close()
        conn = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=10, context=pki.context())
        try:
            # Untouched credentials on a connection from before a reload:
            # answered, then closed; the next connection is kept alive.
            renamed = {"Authorization": "Basic " + base64.b64encode(f"renamed:{PASSWORD}".encode()).decode()}

            def scrape() -> tuple[int, str | None]:
                conn.request("GET", "/metrics", headers=renamed)
                resp = conn.getresponse()
                resp.read()
                return resp.status, resp.getheader("connection")

            assert scrape() == (200, None)
            target.reload_web_config()
            assert scrape() == (200, "close")
            assert scrape() == (200, None)  # http.client dialled again
        finally:
            conn.close()
        assert target.stats()["http_connections"] == 3


def test_reload_refuses_a_kept_alive_client_whose_ca_it_removed(pki: Pki, tmp_path: Path) -> None:
    """mTLS: when a reload stops trusting the CA of a client whose kept-alive
    connection was verified before, that client's next request is refused
    (403, closed) rather than answered once more; a client the new file
    trusts is answered, and its connection then closes to handshake anew."""
    def mtls(ca: str) -> str:
        return web_config(tmp_path, tls_server_config=tls_section(
            pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path(f"{ca}.crt")))

    def scrape(conn: http.client.HTTPSConnection) -> tuple[int, str | None]:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("connection")

    # The client CA file names both CAs, so that a reload can drop one.
    both = tmp_path / "both.crt"
    both.write_text((pki.dir / "ca.crt").read_text() + (pki.dir / "other-ca.crt").read_text())
    web = web_config(tmp_path, tls_server_config=tls_section(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(both)))
    target, _ = node(web)
    with target:
        assert target.port is not None
        kept = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=10, context=pki.context("client"))
        stranger = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=10, context=pki.context("stranger"))
        try:
            assert scrape(kept) == (200, None)
            assert scrape(stranger) == (200, None)
            failures = target.stats()["http_tls_failures"]
            assert mtls("other-ca") == web
            target.reload_web_config()
            assert scrape(kept) == (403, "close")
            assert target.stats()["http_tls_failures"] == failures + 1
            assert scrape(stranger) == (200, "close")
            assert scrape(stranger) == (200, None)  # a new handshake, trusted
        finally:
            kept.close()
            stranger.close()
        with pytest.raises((ssl.SSLError, OSError)):
            fetch(target.url or "", pki.context("client"))


def test_basic_auth_without_tls(tmp_path: Path) -> None:
    target, _ = node(web_config(tmp_path, basic_auth_users={"prometheus": HASH}))
    with target:
        url = target.url or ""
        assert url.startswith("http://")
        assert fetch(url)[0] == 401
        assert fetch(url, auth=("prometheus", PASSWORD))[0] == 200


def test_wrong_password_flood_is_refused_while_the_scraper_is_answered(tmp_path: Path) -> None:
    """Wrong passwords from many connections at once: each is refused (401,
    never a 5xx), one bcrypt runs at a time (unit-tested in basic_auth.rs),
    and the scraper whose password is cached is answered meanwhile."""
    target, _ = node(web_config(tmp_path, basic_auth_users={"prometheus": HASH}))
    with target:
        url = target.url or ""
        assert fetch(url, auth=("prometheus", PASSWORD))[0] == 200  # now cached
        flood: list[int] = []

        def attacker(i: int) -> None:
            for j in range(4):
                flood.append(fetch(url, auth=("prometheus", f"guess-{i}-{j}"))[0])

        threads = [threading.Thread(target=attacker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        scrapes = [fetch(url, auth=("prometheus", PASSWORD))[0] for _ in range(5)]
        for t in threads:
            t.join(timeout=60)
        assert scrapes == [200] * 5
        assert flood == [401] * 32
        assert target.stats()["http_401"] == 32


def test_real_prometheus_scrapes_tls_with_basic_auth(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(pki), basic_auth_users={"prometheus": HASH})
    target, _ = node(web)
    job = {"scheme": "https", "tls_config": {"ca_file": pki.path("ca.crt")},
           "basic_auth": {"username": "prometheus", "password": PASSWORD}}
    with target, run_prometheus(tmp_path, [target.port or 0], node_job=job) as prom:
        prom.wait_for(f'up{{job="{NODE_JOB}"}}', lambda r: r and r[0]["value"][1] == "1")
        got = prom.wait_for('function_count{node_id="tls-node"}', lambda r: bool(r))
        assert got[0]["value"][1] == "1"
        prom.wait_for(f'count_over_time(up{{job="{NODE_JOB}"}}[1m])', lambda r: r and int(r[0]["value"][1]) >= 4)
    stats = target.stats()
    assert stats["http_401"] == 0
    # Prometheus keeps its connection alive: one handshake for all scrapes.
    assert stats["scrapes"] >= 4 and stats["http_connections"] == 1, stats


def live_node(pki: Pki, tmp_path: Path) -> tuple[PrometheusTarget, Path]:
    """A TLS node whose certificate and key are in a folder of their own
    (`live/`, as certbot keeps them), to be swapped by the test."""
    live = tmp_path / "live"
    live.mkdir()
    for ext in ("crt", "key"):
        shutil.copy(pki.dir / f"server.{ext}", live / f"server.{ext}")
    web = web_config(tmp_path, tls_server_config={"cert_file": "live/server.crt", "key_file": "live/server.key"})
    target, _ = node(web)
    return target, live


def served_certificate(target: PrometheusTarget, pki: Pki) -> bytes:
    """The DER certificate a new connection to `target` is served."""
    with socket.create_connection(("127.0.0.1", target.port or 0), timeout=10) as raw, \
            pki.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_rotation_while_scraping(pki: Pki, tmp_path: Path) -> None:
    target, live = live_node(pki, tmp_path)
    failures: list[BaseException] = []
    served = [0]
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                assert fetch(target.url or "", pki.context())[0] == 200
                served[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

    def serial() -> bytes:
        return served_certificate(target, pki)

    with target:
        first = serial()
        t = threading.Thread(target=scrape)
        t.start()
        try:
            time.sleep(0.3)
            for ext in ("crt", "key"):
                shutil.copy(pki.dir / f"server2.{ext}", live / f"server.{ext}")
            target.reload_web_config()
            time.sleep(0.3)
        finally:
            stop.set()
            t.join(20)
        assert not failures, failures[:3]
        assert served[0] > 2
        second = serial()
        assert second != first
        # A broken file on reload: an error, and the running one stays.
        (live / "server.key").write_text("not a key\n")
        with pytest.raises(ValueError, match="server.key"):
            target.reload_web_config()
        assert serial() == second


def test_changed_files_are_reloaded_without_a_call(pki: Pki, tmp_path: Path) -> None:
    """As the exporter-toolkit does, a changed certificate is served without a
    reload call or a restart: the server looks at its files at most once a
    second, on connections and requests. A broken change is counted and the
    running configuration stays."""
    target, live = live_node(pki, tmp_path)

    def serial() -> bytes:
        return served_certificate(target, pki)

    def poll_until(ok: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not ok():
            assert time.monotonic() < deadline, target.stats()
            time.sleep(0.2)

    with target:
        first = serial()
        for ext in ("crt", "key"):  # each replaced whole, by a rename
            shutil.copy(pki.dir / f"server2.{ext}", live / f"new.{ext}")
            os.replace(live / f"new.{ext}", live / f"server.{ext}")
        poll_until(lambda: serial() != first)
        second = serial()
        assert second == ssl.PEM_cert_to_DER_cert((pki.dir / "server2.crt").read_text())
        assert target.stats()["web_config_reloads"] >= 1
        errors = target.stats()["web_config_reload_errors"]
        (live / "server.key").write_text("not a key\n")
        poll_until(lambda: serial() == second and target.stats()["web_config_reload_errors"] > errors)
        assert serial() == second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_kept_alive_scrapes_read_the_config(pki: Pki, tmp_path: Path) -> None:
    """Every request reads the web config under its lock (basic auth from
    the current file, the watch for changed files); the lock is a
    fork::Mutex, whose gate is tested in rust/fork.rs. Here, end to end: 50
    forks while two kept-alive TLS scrapers run, and each child reloads its
    copy of the target's config and renders, within 5 s."""
    web = web_config(tmp_path, tls_server_config=tls_section(pki), basic_auth_users={"prometheus": HASH})
    target, _ = node(web)
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    stop = threading.Event()
    scrapes = [0]

    def scrape_loop() -> None:
        assert target.port is not None
        conn = http.client.HTTPSConnection("127.0.0.1", target.port, timeout=30, context=pki.context())
        while not stop.is_set():
            conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            scrapes[0] += 1
        conn.close()

    threads = [threading.Thread(target=scrape_loop, daemon=True) for _ in range(2)]
    with target:
        for t in threads:
            t.start()
        def child() -> int:
            target.reload_web_config()
            return 0 if b"function_count{" in target.render() else 2

        hung = failed = 0
        try:
            while scrapes[0] < 10:
                time.sleep(0.01)
            for _ in range(50):
                code = wait_or_kill(fork_child(child), 5.0)
                hung += code is None
                failed += code not in (None, 0)
                if hung:
                    break
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert (hung, failed) == (0, 0)
        assert target.stats()["http_connections"] == 2  # the scrapers kept theirs


def test_bad_configs_are_clear_errors(pki: Pki, tmp_path: Path) -> None:
    def make(**sections: Any) -> PrometheusTarget:
        return PrometheusTarget("http://127.0.0.1:0", web_config=web_config(tmp_path, **sections))

    with pytest.raises(OSError, match="missing.yml"):
        PrometheusTarget("http://127.0.0.1:0", web_config=str(tmp_path / "missing.yml"))
    with pytest.raises(OSError, match="nope.crt"):
        make(tls_server_config={"cert_file": "nope.crt", "key_file": pki.path("server.key")})
    with pytest.raises(ValueError, match="does not match"):
        make(tls_server_config={"cert_file": pki.path("server.crt"), "key_file": pki.path("client.key")})
    with pytest.raises(ValueError, match="no PEM certificate"):
        make(tls_server_config={"cert_file": pki.path("server.key"), "key_file": pki.path("server.key")})
    with pytest.raises(ValueError, match="cipher_suites"):
        make(tls_server_config=tls_section(pki, cipher_suites=["TLS_AES_128_GCM_SHA256"]))
    with pytest.raises(ValueError, match="http_server_config"):
        make(http_server_config={"http2": False})
    with pytest.raises(ValueError, match="RequireAnyClientCert"):
        make(tls_server_config=tls_section(pki, client_auth_type="RequireAnyClientCert"))
    with pytest.raises(ValueError, match="needs client_ca_file"):
        make(tls_server_config=tls_section(pki, client_auth_type="RequireAndVerifyClientCert"))
    with pytest.raises(ValueError, match="TLS11"):
        make(tls_server_config=tls_section(pki, min_version="TLS11"))
    with pytest.raises(ValueError, match="not a bcrypt hash"):
        make(basic_auth_users={"prometheus": "plain-text"})
    with pytest.raises(ValueError, match="https://"):
        PrometheusTarget("https://127.0.0.1:0")
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("tls_server_config: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yml"):
        PrometheusTarget("http://127.0.0.1:0", web_config=str(bad_yaml))
    with pytest.raises(RuntimeError, match="no web_config"):
        PrometheusTarget("").reload_web_config()


def test_collector_over_mutual_tls_with_token(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.crt")))
    with OrchestratorCollector("https://127.0.0.1:0", web_config=web, token="tok") as c:
        assert c.url.startswith("https://")
        stats_url = c.url + "/stats"
        ctx = pki.context("client")
        assert fetch(stats_url, ctx)[0] == 401
        status, body = fetch(stats_url, ctx, headers={"Authorization": "Bearer tok"})
        assert status == 200 and b"http_tls_failures" in body
        with pytest.raises((urllib.error.URLError, ssl.SSLError, OSError)):
            fetch(stats_url, pki.context("stranger"), headers={"Authorization": "Bearer tok"})
        with pytest.raises(ValueError, match="Authorization"):
            OrchestratorCollector("http://127.0.0.1:0", token="tok",
                                  web_config=web_config(tmp_path, "b.yml", basic_auth_users={"p": HASH}))


def test_a_client_that_never_handshakes_is_cut(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(pki))
    with OrchestratorCollector("https://127.0.0.1:0", web_config=web, read_timeout_s=0.5) as c:
        port = int(c.url.rsplit(":", 1)[1])
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, no more
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - start < 10
        assert c.stats()["http_timeouts"] == 1
        # Still serving.
        assert fetch(c.url + "/health", pki.context())[0] == 200


def recorded(n: int) -> PerformanceTarget:
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "node-1"})
    h = h.fork({"FUNCTION_ID": str(uuid.uuid4()), "FUNCTION_TYPE": "python"})
    for _ in range(n):
        h.invocation_completed(0.001)
    return perf


def test_node_ships_over_mutual_tls_with_token(pki: Pki, tmp_path: Path) -> None:
    web = web_config(tmp_path, tls_server_config=tls_section(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.crt")))
    prefix = str(tmp_path / "ds_")
    with OrchestratorCollector("https://127.0.0.1:0", web_config=web, token="tok", dataset_path=prefix) as c:
        rep = NodeReporter(recorded(25), c.url, "node-1", token="tok", timeout_s=5,
                           ca_file=pki.path("ca.crt"), client_cert_file=pki.path("client.crt"),
                           client_key_file=pki.path("client.key"))
        assert rep.flush(deadline=time.monotonic() + 10), rep.last_error
        assert c.flush(10)
        stats = c.stats()
        assert stats["batches_stored"] == 1 and stats["samples_stored"] == 25
        assert rep.stats()["connections_opened"] == 1

        # A node whose certificate another CA signed: refused, nothing written.
        stranger = NodeReporter(recorded(5), c.url, "node-2", token="tok", timeout_s=5,
                                ca_file=pki.path("ca.crt"), client_cert_file=pki.path("stranger.crt"),
                                client_key_file=pki.path("stranger.key"))
        assert not stranger.flush(deadline=time.monotonic() + 10)
        assert "TLS" in stranger.last_error and "alert" in stranger.last_error, stranger.last_error
        # A node that does not trust the collector's CA says so.
        untrusting = NodeReporter(recorded(5), c.url, "node-3", token="tok", timeout_s=5,
                                  ca_file=pki.path("other-ca.crt"), client_cert_file=pki.path("client.crt"),
                                  client_key_file=pki.path("client.key"))
        assert not untrusting.flush(deadline=time.monotonic() + 10)
        assert "UnknownIssuer" in untrusting.last_error, untrusting.last_error
        assert c.flush(10)
        assert c.stats()["batches_stored"] == 1 and c.stats()["samples_stored"] == 25
        deadline = time.monotonic() + 10  # the server may see the untrusting one's alert later
        while c.stats()["http_tls_failures"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.stats()["http_tls_failures"] >= 2
    rows = sum(len(p.read_text().splitlines()) - 1 for p in tmp_path.glob("ds_*.csv"))
    assert rows == 25


def test_reporter_tls_arguments_are_checked(pki: Pki, tmp_path: Path) -> None:
    perf = PerformanceTarget()
    with pytest.raises(ValueError, match="https://"):
        NodeReporter(perf, "http://127.0.0.1:1", "n", ca_file=pki.path("ca.crt"))
    with pytest.raises(OSError, match="missing.crt"):
        NodeReporter(perf, "https://127.0.0.1:1", "n", ca_file=str(tmp_path / "missing.crt"))
    with pytest.raises(ValueError, match="go together"):
        NodeReporter(perf, "https://127.0.0.1:1", "n", ca_file=pki.path("ca.crt"),
                     client_cert_file=pki.path("client.crt"))
    with pytest.raises(ValueError, match="no PEM certificate"):
        NodeReporter(perf, "https://127.0.0.1:1", "n", ca_file=pki.path("ca.key"))


def test_orchestrator_cli_web_config(pki: Pki, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "edgeless_telemetry.cli", "orchestrator",
           "--dataset-path", str(tmp_path / "ds_"), "--stats-interval", "0"]
    done = subprocess.run([*cli, "--listen", "https://127.0.0.1:0", "--web-config", str(tmp_path / "missing.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing.yml" in done.stderr, done.stderr
    web = web_config(tmp_path, tls_server_config=tls_section(pki))
    orc = subprocess.Popen([*cli, "--listen", "https://127.0.0.1:0", "--web-config", web],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert orc.stdout is not None
        line = orc.stdout.readline()
        assert line.startswith("listening on https://127.0.0.1:"), line
        url = line.split()[-1]
        assert fetch(url + "/health", pki.context())[0] == 200
        orc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert fetch(url + "/health", pki.context())[0] == 200
    finally:
        orc.terminate()
        _, err = orc.communicate(timeout=20)
    assert "web config reloaded" in err, err
