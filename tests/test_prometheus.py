"""PrometheusTarget: families, exposition, endpoint, bad input."""

from __future__ import annotations

import gc
import http.client
import math
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)

from edgeless_telemetry import (
    ChainResult,
    FunctionExitStatus,
    PerformanceTarget,
    PrometheusTarget,
    TelemetryProcessor,
)
from ports import free_port
from prom_support import http_get, sample, samples

FID = "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"
LE = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "+Inf"]


def fn_tags(node: str = "n1", fid: str = FID, ftype: str = "python") -> dict[str, str]:
    return {"NODE_ID": node, "FUNCTION_ID": fid, "FUNCTION_TYPE": ftype}


def exec_labels(node: str = "n1", fid: str = FID, ftype: str = "python", kind: str = "Cast"):
    return dict(node_id=node, function_id=fid, function_type=ftype, invocation_type=kind)


class Recorder:
    """A Python target after the PrometheusTarget: sees what it passes on."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def handle(self, event, tags):  # type: ignore[no-untyped-def]
        self.kinds.append(event.kind)
        return ChainResult.PROCESSED


def test_families_follow_edgeless() -> None:
    prom = PrometheusTarget()
    proc = TelemetryProcessor([prom], log=False)
    f = proc.get_handle({"NODE_ID": "n1"}).fork({"FUNCTION_ID": FID, "FUNCTION_TYPE": "python"})
    for _ in range(3):
        f.function_instantiate(0.01)
    f.function_exit(FunctionExitStatus.OK)
    f.invocation_completed(0.1)  # on the bound: le="0.1"
    f.invocation_completed(0.25, event_type="CALL")
    f.invocation_completed(5.0, event_type="CAST")
    f.function_transfer(0.95)
    s = samples(prom.render().decode())
    assert sample(s, "function_count", node_id="n1", function_type="python") == 2
    cast, call = exec_labels(kind="Cast"), exec_labels(kind="Call")
    assert [sample(s, "execution_times_bucket", **cast, le=le) for le in LE] == [1] * 10 + [2]
    assert sample(s, "execution_times_count", **cast) == 2
    assert sample(s, "execution_times_sum", **cast) == pytest.approx(5.1)
    assert [sample(s, "execution_times_bucket", **call, le=le) for le in LE] == [0, 0] + [1] * 9
    tr = dict(node_id="n1", function_id=FID)
    assert [sample(s, "transfer_times_bucket", **tr, le=le) for le in LE] == [0] * 9 + [1, 1]
    assert sample(s, "transfer_times_sum", **tr) == pytest.approx(0.95)


def test_event_type_tag_and_resource_class_fallback() -> None:
    prom = PrometheusTarget()
    proc = TelemetryProcessor([prom], log=False)
    tags = {"NODE_ID": "n1", "FUNCTION_ID": FID, "RESOURCE_CLASS_TYPE": "wasm"}
    h = proc.get_handle({**tags, "EVENT_TYPE": "CALL"})
    h.invocation_completed(0.5)
    h.function_instantiate(0.1)
    s = samples(prom.render().decode())
    assert sample(s, "execution_times_count", **exec_labels(ftype="wasm", kind="Call")) == 1
    # As EDGELESS: function_count needs FUNCTION_TYPE itself (no fallback).
    assert not [k for k in s if k[0] == "function_count"]
    assert sample(s, "edgeless_telemetry_dropped_total", target="prometheus", reason="missing_tag") == 1


def test_generic_observe_with_event_tags_reaches_the_same_series() -> None:
    from edgeless_telemetry import TelemetryEvent

    prom = PrometheusTarget()
    proc = TelemetryProcessor([prom], log=False)
    node = proc.get_handle({"NODE_ID": "n1", "FUNCTION_TYPE": "python"})
    fn = node.fork({"FUNCTION_ID": FID})
    fn.invocation_completed(0.5, event_type="CALL")
    fn.observe(TelemetryEvent.function_invocation_completed(0.5), {"EVENT_TYPE": "CALL"})
    node.observe(TelemetryEvent.function_invocation_completed(0.5), {"FUNCTION_ID": FID, "EVENT_TYPE": "CALL"})
    node.observe(TelemetryEvent.function_instantiate(0.1), {"FUNCTION_ID": FID})
    s = samples(prom.render().decode())
    assert sample(s, "execution_times_count", **exec_labels(kind="Call")) == 3
    assert sample(s, "function_count", node_id="n1", function_type="python") == 1
    assert prom.stats()["execution_times_series"] == 1


def test_missing_tags_create_no_series_but_end_the_chain() -> None:
    prom = PrometheusTarget()
    rec = Recorder()
    proc = TelemetryProcessor([prom, rec], log=False)
    h = proc.get_handle({"NODE_ID": "n1"})  # no FUNCTION_ID, no type
    h.function_instantiate(0.1)
    h.invocation_completed(0.1)
    h.function_transfer(0.1)
    h.function_exit(FunctionExitStatus.OK)
    h.function_init(0.1)
    h.function_stop(0.1)
    h.log("INFO", "t", "m")
    assert prom.stats()["execution_times_series"] == 0
    assert prom.stats()["function_count_series"] == 0
    assert prom.stats()["transfer_times_series"] == 0
    # Upstream ends the chain for what it handles; the rest passes on.
    assert rec.kinds == ["function_init", "function_stop", "function_log_entry"]


def test_both_targets_share_the_event() -> None:
    perf, prom = PerformanceTarget(), PrometheusTarget()
    proc = TelemetryProcessor([perf, prom], log=False)
    h = proc.get_handle(fn_tags())
    for _ in range(5):
        h.invocation_completed(0.2)
    assert perf.stats()["samples_recorded"] == 5
    assert sample(prom.render().decode(), "execution_times_count", **exec_labels()) == 5


def test_custom_buckets_namespace_and_const_labels() -> None:
    prom = PrometheusTarget(
        buckets=[0.001, 0.01, float("inf")],
        namespace="edge",
        const_labels={"cluster": 'a"b\\c\nd'},
    )
    proc = TelemetryProcessor([prom], log=False)
    h = proc.get_handle(fn_tags())
    h.invocation_completed(0.001)
    h.invocation_completed(0.005)
    h.invocation_completed(2.0)
    text = prom.render().decode()
    assert "\nfunction_count" not in text and "\nexecution_times" not in text
    s = samples(text)
    labels = {**exec_labels(), "cluster": 'a"b\\c\nd'}
    assert [sample(s, "edge_execution_times_bucket", **labels, le=le) for le in ("0.001", "0.01", "+Inf")] == [1, 2, 3]
    refused = "edge_edgeless_telemetry_series_refused_total"
    assert sample(s, refused, cluster='a"b\\c\nd', family="execution_times") == 0


def test_max_series_refuses_and_counts() -> None:
    prom = PrometheusTarget(max_series=2)
    proc = TelemetryProcessor([prom], log=False)
    for _ in range(4):
        h = proc.get_handle(fn_tags(fid=str(uuid.uuid4())))
        h.invocation_completed(0.1)
        h.invocation_completed(0.1)
    st = prom.stats()
    assert st["execution_times_series"] == 2
    assert st["execution_times_refused"] == 2  # once per handle, not per event
    s = samples(prom.render().decode())
    assert sample(s, "edgeless_telemetry_series_refused_total", family="execution_times") == 2
    assert sample(s, "edgeless_telemetry_series_refused_total", family="function_count") == 0


def nasty_node(prom: PrometheusTarget, functions: int = 50) -> None:
    proc = TelemetryProcessor([prom], log=False)
    nasty = ['quote"d', "back\\slash", "new\nline", 'all \\"\n\\n', "ünïcødé", ""]
    for i in range(functions):
        ftype = nasty[i % len(nasty)]
        h = proc.get_handle(fn_tags(node=f'node\\{i % 3}"', fid=str(uuid.uuid4()), ftype=ftype))
        h.function_instantiate(0.1)
        h.invocation_completed(i / functions, event_type="CALL" if i % 2 else "CAST")
        h.function_transfer(i / 10)


def promtool_problems(body: bytes) -> set[str]:
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
    # 0: clean, 3: lint problems only; anything else is a parse failure.
    assert r.returncode in (0, 3), r.stderr.decode()
    return {line for line in r.stderr.decode().splitlines() if line.strip()}


# `function_count` is the EDGELESS name (fixed by the upstream dashboards);
# promtool's linter dislikes a gauge ending in `_count`.
EDGELESS_NAME = 'function_count non-histogram and non-summary metrics should not have "_count" suffix'
# promtool reads only the text format: an OpenMetrics counter family is
# typed without `_total`, so it sees the sample family without HELP.
OM_COUNTER = "edgeless_telemetry_series_refused_total no help text"
OM_DROPPED = "edgeless_telemetry_dropped_total no help text"


def test_promtool_accepts_text_format() -> None:
    prom = PrometheusTarget()
    nasty_node(prom)
    assert promtool_problems(prom.render()) <= {EDGELESS_NAME}


def test_openmetrics_is_valid() -> None:
    prom = PrometheusTarget()
    nasty_node(prom)
    body = prom.render(openmetrics=True)
    assert body.endswith(b"\n# EOF\n")
    assert promtool_problems(body) <= {EDGELESS_NAME, OM_COUNTER, OM_DROPPED}
    # prometheus_client's OpenMetrics parser is strict (escaping, order, EOF).
    fams = {f.name: f for f in parse_openmetrics(body.decode())}
    assert fams["execution_times"].type == "histogram"
    assert fams["edgeless_telemetry_series_refused"].type == "counter"
    values = {s.labels["function_type"] for s in fams["execution_times"].samples}
    assert values == {'quote"d', "back\\slash", "new\nline", 'all \\"\n\\n', "ünïcødé", ""}
    # Same numbers in both formats.
    text = samples(prom.render().decode())
    for s in fams["execution_times"].samples:
        assert text[(s.name, frozenset(s.labels.items()))] == s.value


@pytest.fixture
def served():  # type: ignore[no-untyped-def]
    prom = PrometheusTarget("http://127.0.0.1:0")
    proc = TelemetryProcessor([prom], log=False)
    h = proc.get_handle(fn_tags())
    h.invocation_completed(0.3)
    yield prom
    prom.close()


def test_endpoint_formats_and_gzip(served: PrometheusTarget) -> None:
    port = served.port
    assert port and served.url == f"http://127.0.0.1:{port}/metrics"
    status, hdrs, body = http_get(port)
    assert status == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    assert body == served.render()
    prom_accept = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
        "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    status, hdrs, body = http_get(port, headers={"Accept": prom_accept, "Accept-Encoding": "gzip"})
    assert status == 200 and hdrs["content-encoding"] == "gzip"
    assert hdrs["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body == served.render(openmetrics=True)
    status, hdrs, _ = http_get(port, headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in hdrs
    assert http_get(port, "/")[0] == 404
    assert http_get(port, "/metricsx")[0] == 404
    assert http_get(port, "/metrics?x=1")[0] == 200
    assert http_get(port, method="POST")[0] == 405
    assert http_get(port, method="HEAD")[0] == 200
    st = served.stats()
    assert (st["scrapes"], st["scrapes_openmetrics"], st["scrapes_gzip"]) == (5, 1, 1)


def test_scrapes_share_a_kept_alive_connection(served: PrometheusTarget) -> None:
    """A scraper's connection serves scrape after scrape (a TLS scraper pays
    one handshake, not one per scrape); a GET that declares a body, or a
    request answered with anything but 200, ends its connection."""
    before = served.stats()
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("connection") != "close"
            assert b"execution_times_bucket" in resp.read()
        conn.request("GET", "/nothing")
        resp = conn.getresponse()
        resp.read()
        assert (resp.status, resp.getheader("connection")) == (404, "close")
    finally:
        conn.close()
    after = served.stats()
    assert after["http_connections"] - before["http_connections"] == 1
    assert after["http_requests"] - before["http_requests"] == 4
    assert after["scrapes"] - before["scrapes"] == 3

    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # ends: the server closes, body unread
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()


def test_close_ends_kept_alive_connections() -> None:
    prom = PrometheusTarget("http://127.0.0.1:0")
    assert prom.port is not None
    with socket.create_connection(("127.0.0.1", prom.port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        prom.close()
        rest = b""
        while chunk := s.recv(65536):  # ends: closed by the server
            rest += chunk
    assert b"HTTP/1.1" not in rest


def test_endpoint_survives_garbage(served: PrometheusTarget) -> None:
    port = served.port
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"x" * 20000)  # a head past 8 KiB
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics \x01\r\n\r\n")  # not HTTP
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", port)) as s:
        pass  # connect and hang up
    assert http_get(port)[0] == 200


def test_close_frees_the_port_and_is_idempotent() -> None:
    port = free_port()  # bound again below
    url = f"http://127.0.0.1:{port}"
    prom = PrometheusTarget(url)
    assert prom.port == port
    with pytest.raises(OSError, match="cannot listen"):
        PrometheusTarget(url)
    prom.close()
    prom.close()
    assert prom.url is None
    with pytest.raises(ConnectionRefusedError):
        http_get(port)
    again = PrometheusTarget(url)  # the port is free again
    del again
    gc.collect()
    with PrometheusTarget(url) as third:  # ... also after a drop
        assert http_get(port)[0] == 200
    assert third.url is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_leaves_the_parents_server_alone() -> None:
    prom = PrometheusTarget("http://127.0.0.1:0")
    port = prom.port
    assert port is not None
    pid = os.fork()
    if pid == 0:  # child: closing (or dropping) must neither hang nor stop the parent's server
        try:
            prom.close()
            del prom
            gc.collect()
        finally:
            os._exit(0)
    deadline = time.monotonic() + 20
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline, "forked child hung closing the target"
        time.sleep(0.05)
    assert http_get(port)[0] == 200
    prom.close()


def test_port_in_use_by_someone_else() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            PrometheusTarget(f"http://127.0.0.1:{s.getsockname()[1]}")


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:7003",
        "https://127.0.0.1:7003",
        "http://127.0.0.1",
        "http://127.0.0.1:70000",
        "http://:7003",
        "http://127.0.0.1:7003/other",
        "http://no.such.host.invalid:7003",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="metrics_url"):
        PrometheusTarget(url)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"buckets": []}, ValueError, "at least one"),
        ({"buckets": [float("inf")]}, ValueError, "at least one"),
        ({"buckets": [0.2, 0.1]}, ValueError, "strictly increasing"),
        ({"buckets": [0.1, 0.1]}, ValueError, "strictly increasing"),
        ({"buckets": [0.1, math.nan]}, ValueError, "finite"),
        ({"buckets": [float("inf"), 1.0]}, ValueError, "finite"),
        ({"buckets": list(range(1, 200))}, ValueError, "at most"),
        ({"buckets": "0.1"}, TypeError, "sequence"),
        ({"buckets": ["a"]}, TypeError, "sequence"),
        ({"namespace": "9lives"}, ValueError, "namespace"),
        ({"namespace": "a-b"}, ValueError, "namespace"),
        ({"const_labels": {"node_id": "x"}}, ValueError, "used by"),
        ({"const_labels": {"bad-name": "x"}}, ValueError, "not a valid"),
        ({"const_labels": {"__x": "x"}}, ValueError, "not a valid"),
        ({"const_labels": {"x": 1}}, TypeError, "str"),
        ({"max_series": 0}, ValueError, "max_series"),
    ],
)
def test_bad_setup(kwargs: dict, exc: type, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(exc, match=match):
        PrometheusTarget(**kwargs)


def test_four_threads_ingest_while_scraping() -> None:
    prom = PrometheusTarget("http://127.0.0.1:0")
    port = prom.port
    assert port is not None
    proc = TelemetryProcessor([PerformanceTarget(capacity=1000), prom], log=False)
    base = proc.get_handle({"NODE_ID": "n1", "FUNCTION_TYPE": "python"})
    per_thread = 48_000  # a multiple of 12
    shared = exec_labels(fid=FID, kind="Cast")
    stop = threading.Event()
    bodies: list[bytes] = []

    def ingest(i: int) -> None:
        mine = base.fork({"FUNCTION_ID": str(uuid.UUID(int=i + 1))})
        same = base.fork({"FUNCTION_ID": FID})  # one series, four writers
        for k in range(per_thread):
            v = (k % 12) / 10
            mine.invocation_completed(v, event_type="CALL")
            same.invocation_completed(v)

    def scrape() -> None:
        # Only collect here (waiting on the socket releases the GIL), so the
        # scrapes overlap the ingestion; they are checked afterwards.
        while not stop.is_set() or len(bodies) < 3:
            bodies.append(http_get(port)[2])

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=ingest, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    last: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for body in bodies:
        s = samples(body.decode())
        for (name, labels), v in s.items():
            if name.endswith("_count"):
                inf = frozenset(dict(labels, le="+Inf").items())
                assert s[(name[: -len("_count")] + "_bucket", inf)] == v, labels
            if name.endswith("_bucket"):
                assert v >= last.get((name, labels), 0), (name, labels)
        last = s
    final = samples(http_get(port)[2].decode())
    assert sample(final, "execution_times_count", **shared) == 4 * per_thread
    # 0.0..1.1 in steps of 0.1: values > 1.0 land only in +Inf.
    assert sample(final, "execution_times_bucket", **shared, le="1.0") == 4 * per_thread * 11 // 12
    for i in range(4):
        lab = exec_labels(fid=str(uuid.UUID(int=i + 1)), kind="Call")
        assert sample(final, "execution_times_count", **lab) == per_thread
        assert sample(final, "execution_times_bucket", **lab, le="0.1") == per_thread * 2 // 12
    prom.close()


def test_bridge_renders_our_families_beside_the_apps() -> None:
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from edgeless_telemetry.prometheus_bridge import PrometheusCollector

    prom = PrometheusTarget(namespace="edge")
    proc = TelemetryProcessor([prom], log=False)
    h = proc.get_handle(fn_tags(ftype='we"ird'))
    h.function_instantiate(0.1)
    h.invocation_completed(0.42, event_type="CALL")
    registry = CollectorRegistry()
    Counter("app_requests", "App requests.", registry=registry).inc(3)
    registry.register(PrometheusCollector(prom))
    s = samples(generate_latest(registry).decode())
    assert sample(s, "app_requests_total") == 3
    assert sample(s, "edge_function_count", node_id="n1", function_type='we"ird') == 1
    call = exec_labels(ftype='we"ird', kind="Call")
    assert sample(s, "edge_execution_times_count", **call) == 1
    assert sample(s, "edge_execution_times_bucket", **call, le="0.5") == 1
    assert sample(s, "edge_execution_times_bucket", **call, le="0.4") == 0
    h.invocation_completed(0.1, event_type="CALL")  # live, not a copy
    assert sample(generate_latest(registry).decode(), "edge_execution_times_count", **call) == 2
    with pytest.raises(TypeError):
        PrometheusCollector(object())  # type: ignore[arg-type]


def test_other_targets_drops_are_served() -> None:
    # What the processor and the PerformanceTarget drop is a metric too, so
    # losses show in Grafana and not only in stats().
    perf = PerformanceTarget(capacity=3, max_functions=1)
    prom = PrometheusTarget()
    proc = TelemetryProcessor([perf, prom], log=False)
    h = proc.get_handle(fn_tags(node="n", fid=str(uuid.uuid4()), ftype="t"))
    for _ in range(5):
        h.function_init(0.1)  # ring of 3: 2 overwritten
    h.function_init(float("nan"))
    h.function_init("slow")  # type: ignore[arg-type]
    # Table full: its event is refused (not a Prometheus family's event).
    proc.get_handle(fn_tags(node="n", fid=str(uuid.uuid4()), ftype="t")).function_init(0.1)
    proc.get_handle({"NODE_ID": "n"}).invocation_completed(0.1)  # no FUNCTION_ID
    got = samples(prom.render().decode())
    dropped = {
        dict(labels)["reason"]: value
        for (name, labels), value in got.items()
        if name == "edgeless_telemetry_dropped_total"
    }
    assert dropped == {
        "invalid_type": 1, "invalid_value": 1, "target_error": 0, "reentrant": 0, "exiting": 0,
        "sample_overwritten": 2, "log_entry_overwritten": 0, "no_function_id": 1, "function_refused": 1,
        # The invocation without FUNCTION_ID, ignored by the PrometheusTarget as by EDGELESS's.
        "missing_tag": 1,
    }
    assert sample(got, "edgeless_telemetry_dropped_total", target="performance", reason="sample_overwritten") == 2
    # Both formats stay valid with the family present.
    assert promtool_problems(prom.render()) <= {EDGELESS_NAME}
    assert promtool_problems(prom.render(openmetrics=True)) <= {EDGELESS_NAME, OM_COUNTER, OM_DROPPED}
    # A second processor sharing the targets adds its counts; the store is
    # counted once.
    proc2 = TelemetryProcessor([perf, prom], log=False)
    proc2.get_handle({}).function_stop(-1.0)
    got = samples(prom.render().decode())
    assert sample(got, "edgeless_telemetry_dropped_total", target="processor", reason="invalid_value") == 2
    assert sample(got, "edgeless_telemetry_dropped_total", target="performance", reason="sample_overwritten") == 2
