"""Native histograms (PrometheusTarget(native=True)): the protobuf exposition
decoded by protoc against the published metrics.proto, quantiles read through
Debian's real Prometheus with native histograms on, resolution reduction,
the text formats unchanged, and counts consistent under concurrent ingest
and scrapes."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeless_telemetry import PrometheusTarget, TelemetryProcessor
from prom_support import ROOT, http_get, run_prometheus

PROTO_DIR = ROOT / "proto"
PROTO = "io/prometheus/client/metrics.proto"
PB_ACCEPT = ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
             "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
NATIVE_FLAG = "--enable-feature=native-histograms"

needs_protoc = pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc not installed")


def split_delimited(body: bytes) -> list[bytes]:
    """The messages of a varint-length-delimited stream."""
    out, i = [], 0
    while i < len(body):
        n = shift = 0
        while True:
            b = body[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(body[i:i + n])
        i += n
    assert i == len(body)
    return out


def protoc_decode(message: bytes) -> str:
    """protoc's text form of one MetricFamily (fails on a malformed one)."""
    r = subprocess.run(
        ["protoc", f"-I{PROTO_DIR}", "--decode=io.prometheus.client.MetricFamily", PROTO],
        input=message, capture_output=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def decode(body: bytes) -> dict[str, dict[str, Any]]:
    """{family name: {"type", "metrics": [parsed metric]}} from protoc's output.
    A histogram metric holds count, sum, schema, zero_count, classic
    [(upper_bound, cumulative)] and native {bucket index: count}."""
    families: dict[str, dict[str, Any]] = {}
    for message in split_delimited(body):
        text = protoc_decode(message)
        name = re.search(r'^name: "(.*)"$', text, re.M)
        kind = re.search(r"^type: (\w+)$", text, re.M)
        assert name
        metrics = []
        for block in re.split(r"^metric \{$", text, flags=re.M)[1:]:
            labels = dict(re.findall(r'name: "([^"]*)"\s+value: "([^"]*)"', block))
            m: dict[str, Any] = {"labels": labels}
            if "histogram {" in block:
                m["count"] = int(re.search(r"sample_count: (\d+)", block).group(1))  # type: ignore[union-attr]
                m["sum"] = float(re.search(r"sample_sum: (\S+)", block).group(1))  # type: ignore[union-attr]
                m["classic"] = [(float(u), int(c)) for c, u in re.findall(
                    r"bucket \{\s+cumulative_count: (\d+)\s+upper_bound: (\S+)\s+\}", block)]
                schema = re.search(r"schema: (-?\d+)", block)
                if schema:
                    m["schema"] = int(schema.group(1))
                    m["zero_count"] = int(re.search(r"zero_count: (\d+)", block).group(1))  # type: ignore[union-attr]
                    spans = [(int(o), int(n)) for o, n in re.findall(
                        r"positive_span \{\s+offset: (-?\d+)\s+length: (\d+)\s+\}", block)]
                    deltas = [int(d) for d in re.findall(r"positive_delta: (-?\d+)", block)]
                    buckets, key, count, d = {}, 0, 0, iter(deltas)
                    for i, (offset, length) in enumerate(spans):
                        key = offset if i == 0 else key + offset
                        for _ in range(length):
                            count += next(d)
                            buckets[key] = count
                            key += 1
                    assert next(d, None) is None, "more deltas than span lengths"
                    m["native"] = buckets
            else:
                value = re.search(r"(?:gauge|counter) \{\s+value: (\S+)", block)
                m["value"] = float(value.group(1)) if value else None
            metrics.append(m)
        families[name.group(1)] = {"type": kind.group(1) if kind else "COUNTER", "metrics": metrics}
    return families


def node(native: bool, node_id: str = "node-1", **kw: Any) -> tuple[PrometheusTarget, Any]:
    prom = PrometheusTarget("http://127.0.0.1:0", native=native, **kw)
    handle = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": node_id})
    return prom, handle


def fid(name: str) -> str:
    """A function id (EDGELESS's are UUIDs) named by `name`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def function(handle: Any, name: str) -> Any:
    return handle.fork({"FUNCTION_ID": fid(name), "FUNCTION_TYPE": "python"})


def key_of(v: float, schema: int) -> int:
    """The bucket index of v > 0 at `schema` by the definition (v <= 2^(i/2^s))."""
    i: int = math.ceil(math.log2(v) * 2.0**schema)
    while v > 2 ** ((i) / 2**schema):
        i += 1
    while v <= 2 ** ((i - 1) / 2**schema):
        i -= 1
    return i


def quantile(sorted_values: list[float], q: float) -> float:
    """numpy's default (linear) quantile."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# --- exposition ----------------------------------------------------------


@needs_protoc
def test_protobuf_scrape_carries_classic_and_native_buckets() -> None:
    prom, h = node(True)
    try:
        f = function(h, "f-1")
        values = [0.0, 0.003, 0.003, 0.25, 0.8, 1.0, 1.5]
        for v in values:
            f.invocation_completed(v, event_type="CALL")
        f.function_transfer(0.4)
        status, headers, body = http_get(prom.port or 0, headers={"Accept": PB_ACCEPT})
        assert status == 200
        assert headers["content-type"].startswith("application/vnd.google.protobuf")
        assert "proto=io.prometheus.client.MetricFamily" in headers["content-type"]
        fams = decode(body)
        assert fams["execution_times"]["type"] == "HISTOGRAM"
        assert fams["function_count"]["type"] == "GAUGE"
        assert fams["edgeless_telemetry_series_refused_total"]["type"] == "COUNTER"
        (m,) = fams["execution_times"]["metrics"]
        assert m["labels"] == {"node_id": "node-1", "function_id": fid("f-1"),
                               "function_type": "python", "invocation_type": "Call"}
        assert m["count"] == len(values)
        assert m["sum"] == pytest.approx(sum(values))
        # Classic buckets as in the text format (+Inf implicit).
        assert m["classic"] == [(0.1, 3), (0.2, 3), (0.3, 4), (0.4, 4), (0.5, 4), (0.6, 4),
                                (0.7, 4), (0.8, 5), (0.9, 5), (1.0, 6)]
        assert m["schema"] == 3
        assert m["zero_count"] == 1
        expected: dict[int, int] = {}
        for v in values[1:]:
            expected[key_of(v, 3)] = expected.get(key_of(v, 3), 0) + 1
        assert m["native"] == expected
        assert m["zero_count"] + sum(m["native"].values()) == m["count"]
        (t,) = fams["transfer_times"]["metrics"]
        assert t["native"] == {key_of(0.4, 3): 1}
        assert prom.stats()["scrapes_protobuf"] == 1
        # render(protobuf=True) is the same exposition; gzip works too.
        assert decode(prom.render(protobuf=True)) == fams
        _, gz_headers, gz_body = http_get(
            prom.port or 0, headers={"Accept": PB_ACCEPT, "Accept-Encoding": "gzip"})
        assert gz_headers["content-encoding"] == "gzip"
        assert decode(gz_body) == fams
    finally:
        prom.close()


def test_text_and_openmetrics_unchanged_with_native() -> None:
    """Same events into a native and a classic target: the text formats are
    byte for byte the same; protobuf is offered only with native=True."""
    (a, ha), (b, hb) = node(True), node(False)
    try:
        rng = random.Random(7)
        fa, fb = function(ha, "f"), function(hb, "f")
        for _ in range(500):
            v = rng.uniform(0, 1.5)
            fa.invocation_completed(v)
            fb.invocation_completed(v)
            fa.function_transfer(v / 3)
            fb.function_transfer(v / 3)
        assert a.render() == b.render()
        assert a.render(openmetrics=True) == b.render(openmetrics=True)
        for accept in [None, "application/openmetrics-text;version=1.0.0", "text/plain"]:
            hdr = {"Accept": accept} if accept else {}
            sa, ha_, body_a = http_get(a.port or 0, headers=hdr)
            sb, hb_, body_b = http_get(b.port or 0, headers=hdr)
            assert (sa, ha_["content-type"], body_a) == (sb, hb_["content-type"], body_b)
        _, hdr_b, body_b = http_get(b.port or 0, headers={"Accept": PB_ACCEPT})
        assert hdr_b["content-type"].startswith("text/plain")
        assert body_b == b.render()
        with pytest.raises(ValueError, match="not both"):
            a.render(openmetrics=True, protobuf=True)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("kw, match", [
    ({"native_schema": 9}, "native_schema"),
    ({"native_schema": -5}, "native_schema"),
    ({"native_max_buckets": 4}, "native_max_buckets"),
    ({"native_zero_threshold": -1.0}, "native_zero_threshold"),
    ({"native_zero_threshold": float("nan")}, "native_zero_threshold"),
])
def test_bad_native_settings_are_refused(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PrometheusTarget("", native=True, **kw)


@needs_protoc
@pytest.mark.parametrize("schema", [-4, -1, 0, 1, 3, 8])
def test_bucket_boundaries_follow_the_schema_definition(schema: int) -> None:
    """Random durations, powers of two (boundaries at every schema: a bound
    is inclusive), subnormals and 0, each in the bucket the definition names."""
    prom, h = node(True, native_schema=schema, native_max_buckets=4096, native_zero_threshold=0.0)
    try:
        rng = random.Random(schema)
        # The window holds 4096 buckets: 4096 / 2^schema powers of two.
        span = min(2000, 4000 >> max(schema, 0))
        low = -1074 if schema <= 0 else -span // 2
        values = [rng.uniform(0.5, 1.0) * 2.0 ** rng.randint(low + 1, low + span) for _ in range(3000)]
        values += [2.0 ** e for e in range(low, low + span, 7)]
        if schema <= 0:
            values += [5e-324, 1e-310, 2.2250738585072014e-308]
        values += [0.0, 0.0]
        f = function(h, "f")
        for v in values:
            f.invocation_completed(v, event_type="CALL")
        (m,) = decode(prom.render(protobuf=True))["execution_times"]["metrics"]
        assert m["schema"] == schema
        expected: dict[int, int] = {}
        zero = 0
        for v in values:
            if v == 0.0:
                zero += 1
                continue
            k = key_of(v, schema)
            expected[k] = expected.get(k, 0) + 1
        assert m["zero_count"] == zero
        assert m["native"] == expected
    finally:
        prom.close()


@needs_protoc
def test_resolution_drops_when_a_series_spans_many_decades() -> None:
    prom, h = node(True, native_max_buckets=40)
    try:
        f = function(h, "wide")
        # 1 µs to 1,000 s: 30 binary orders of magnitude, 240 buckets at
        # schema 3; a window of 40 needs schema 0 (31 buckets).
        values = [1e-6 * 10 ** (9 * i / 999) * 1.0001 for i in range(1000)]
        for v in values:
            f.invocation_completed(v, event_type="CALL")
        (m,) = decode(prom.render(protobuf=True))["execution_times"]["metrics"]
        assert m["schema"] == 0
        assert len(m["native"]) <= 40
        expected: dict[int, int] = {}
        for v in values:
            k = key_of(v, m["schema"])
            expected[k] = expected.get(k, 0) + 1
        assert m["native"] == expected
        assert m["count"] == 1000
        assert m["sum"] == pytest.approx(sum(values), rel=1e-12)
        # A narrow series keeps the configured schema.
        g = function(h, "narrow")
        for v in values[:40]:
            g.invocation_completed(v, event_type="CALL")
        fams = decode(prom.render(protobuf=True))["execution_times"]["metrics"]
        narrow = [x for x in fams if x["labels"]["function_id"] == fid("narrow")][0]
        assert narrow["schema"] == 3
    finally:
        prom.close()


@needs_protoc
def test_counts_consistent_under_concurrent_ingest_and_scrapes() -> None:
    """Four ingesting threads and a scraper: every scrape is consistent
    (count == zero + native buckets, classic buckets monotonic and within
    the count, counts never go back) and the final count and sum are exact."""
    prom, h = node(True, native_max_buckets=32)
    threads, chunk, want_scrapes = 4, 2000, 25
    stop = threading.Event()
    bodies: list[bytes] = []
    emitted = [0] * threads

    def ingest(seed: int) -> None:
        rng = random.Random(seed)
        f = function(h, f"f{seed % 2}")
        # Until the scraper has enough scrapes (bounded by time, not by a
        # count of events: how many scrapes fit beside the ingest depends on
        # the machine): spread wide, so windows move and merge while being
        # scraped.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _ in range(chunk):
                f.invocation_completed(rng.lognormvariate(-5, 3), event_type="CALL")
            emitted[seed] += chunk
            if len(bodies) >= want_scrapes:
                break

    def scrape() -> None:
        while not stop.is_set():
            bodies.append(http_get(prom.port or 0, headers={"Accept": PB_ACCEPT})[2])

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=ingest, args=(s,)) for s in range(threads)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        stop.set()
        scraper.join(60)
        assert not scraper.is_alive() and not any(w.is_alive() for w in workers)
        assert len(bodies) >= want_scrapes
        last_count: dict[str, int] = {}
        for body in bodies:
            for m in decode(body)["execution_times"]["metrics"]:
                key = m["labels"]["function_id"]
                assert m["zero_count"] + sum(m["native"].values()) == m["count"]
                assert all(c >= 0 for c in m["native"].values())
                cum = [c for _, c in m["classic"]]
                assert cum == sorted(cum) and all(c <= m["count"] for c in cum)
                assert m["count"] >= last_count.get(key, 0)
                last_count[key] = m["count"]
        final = decode(prom.render(protobuf=True))["execution_times"]["metrics"]
        expected: dict[str, tuple[int, float]] = {}
        for s in range(threads):
            rng = random.Random(s)
            name = fid(f"f{s % 2}")
            n, total = expected.get(name, (0, 0.0))
            expected[name] = (n + emitted[s], total + math.fsum(
                rng.lognormvariate(-5, 3) for _ in range(emitted[s])))
        assert len(final) == 2
        for m in final:
            n, total = expected[m["labels"]["function_id"]]
            assert m["count"] == n
            assert m["sum"] == pytest.approx(total, rel=1e-9)
            assert m["schema"] < 3  # the spread forced merges
    finally:
        stop.set()
        prom.close()


# --- through a real Prometheus -------------------------------------------


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed")
def test_quantiles_through_prometheus_with_native_histograms(tmp_path: Path) -> None:
    """A native node and a classic node observe the same durations; Prometheus
    (native histograms on) reads p50/p90/p99 from each. A second Prometheus
    without the feature flag scrapes the same two nodes (in text): the native
    node's classic series there equal the classic node's."""
    (nat, hn), (cls, hc) = node(True, "native-node"), node(False, "classic-node")
    rng = random.Random(11)
    cases = {
        "uniform": [rng.uniform(0, 1.5) for _ in range(3000)],
        "const3ms": [0.003] * 500,
        # Spanning 1 ms to 10 s (its 0.5th to 99.5th percentiles).
        "lognormal": [rng.lognormvariate(math.log(0.1), 1.79) for _ in range(5000)],
    }
    fns = {name: (function(hn, name), function(hc, name)) for name in cases}

    def emit() -> None:
        for name, values in cases.items():
            fn, fc = fns[name]
            for v in values:
                fn.invocation_completed(v, event_type="CALL")
                fc.invocation_completed(v, event_type="CALL")

    try:
        (tmp_path / "native").mkdir()
        (tmp_path / "plain").mkdir()
        ports = [nat.port or 0, cls.port or 0]
        with run_prometheus(tmp_path / "native", ports, extra_flags=[NATIVE_FLAG]) as prom, \
                run_prometheus(tmp_path / "plain", ports) as plain:
            emit()  # before the first scrape: rate() below sees the second round
            for p in (prom, plain):
                p.wait_for('up{job="edgeless-node"}', lambda r: len(r) == 2
                           and all(x["value"][1] == "1" for x in r))
            prom.wait_for('count(histogram_count(execution_times{node_id="native-node"}))',
                          lambda r: r and float(r[0]["value"][1]) == 3)
            emit()
            n = len(cases["lognormal"])
            prom.wait_for(f'histogram_count(execution_times{{function_id="{fid("lognormal")}"}})',
                          lambda r: r and float(r[0]["value"][1]) == 2 * n)
            prom.wait_for(f'execution_times_count{{function_id="{fid("lognormal")}"}}',
                          lambda r: r and float(r[0]["value"][1]) == 2 * n)
            plain.wait_for(f'execution_times_count{{function_id="{fid("lognormal")}"}}',
                           lambda r: len(r) == 2 and all(float(x["value"][1]) == 2 * n for x in r))
            assert nat.stats()["scrapes_protobuf"] >= 1
            # The classic node is scraped in text; the native one in protobuf.
            assert cls.stats()["scrapes_protobuf"] == 0
            errors = {}
            for name, values in cases.items():
                truth_sorted = sorted(values)
                for q in (0.5, 0.9, 0.99):
                    truth = quantile(truth_sorted, q)
                    native = float(prom.query(
                        f'histogram_quantile({q}, rate(execution_times{{function_id="{fid(name)}"}}[1m]))'
                    )[0]["value"][1])
                    classic = float(prom.query(
                        f'histogram_quantile({q}, rate(execution_times_bucket{{function_id="{fid(name)}"}}[1m]))'
                    )[0]["value"][1])
                    errors[(name, q)] = (truth, native, classic)
            for (name, q), (truth, native, _classic) in errors.items():
                tol = 0.10 if name == "const3ms" else 0.05
                assert native == pytest.approx(truth, rel=tol), (name, q, truth, native)
            # What the classic buckets answer for the same durations.
            assert errors[("uniform", 0.9)][2] == 1.0
            assert errors[("uniform", 0.99)][2] == 1.0
            assert errors[("const3ms", 0.5)][2] == pytest.approx(0.05)
            # Prometheus 2.42 keeps only the native form of a histogram that
            # has one (the README says so).
            assert prom.query('execution_times_bucket{node_id="native-node"}') == []
            # Without the feature flag it scrapes the native node in text, and
            # its classic series are the classic node's, bucket for bucket,
            # and answer the same quantiles.
            assert nat.stats()["scrapes_openmetrics"] >= 1
            assert plain.query('execution_times{node_id="native-node"}') == []

            def classic_series(node_id: str) -> dict[tuple[str, str, str], float]:
                out = {}
                for suffix in ("bucket", "count", "sum"):
                    for r in plain.query(f'execution_times_{suffix}{{node_id="{node_id}"}}'):
                        m = r["metric"]
                        out[(suffix, m["function_id"], m.get("le", ""))] = float(r["value"][1])
                return out

            native_classic = classic_series("native-node")
            assert len(native_classic) == len(cases) * 13  # 11 buckets, count, sum
            assert native_classic == pytest.approx(classic_series("classic-node"), rel=1e-12)
            # Over all observations (no rate: both nodes' totals are final).
            quantiles = {
                node_id: [float(plain.query(
                    f'histogram_quantile({q}, execution_times_bucket{{node_id="{node_id}",'
                    f' function_id="{fid(name)}"}})')[0]["value"][1])
                    for name in cases for q in (0.5, 0.9, 0.99)]
                for node_id in ("native-node", "classic-node")}
            assert quantiles["native-node"] == quantiles["classic-node"]
            assert quantiles["native-node"][1:3] == [1.0, 1.0]  # uniform p90, p99
    finally:
        nat.close()
        cls.close()
