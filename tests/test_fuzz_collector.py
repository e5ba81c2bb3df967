"""Fuzzing the collector's protobuf decoder with hypothesis: random bytes and
mutations of bodies made by the real encoder, through `CollectorCore.ingest`
(many examples) and through the HTTP endpoint (fewer). The properties:

- no panic ever crosses into Python (it would raise pyo3's PanicException,
  a BaseException, and fail the test), the answer is 200 (202) or 400 only;
- a body answered 400 writes nothing: the CSV files keep their exact bytes
  and the real Redis keeps its exact keys and members;
- a body answered 200 writes exactly the rows it reports (CSV grows by
  ``samples_stored``/``log_entries_stored`` rows, still parseable);
- every truncation of a valid body is refused (the sequence field is last).
"""

from __future__ import annotations

import csv
import http.client
import io
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgeless_telemetry import OrchestratorCollector, PerformanceTarget, TelemetryProcessor, _core
from redis_fixture import RedisServer

FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def valid_bodies() -> list[bytes]:
    """Bodies from the real encoder: several functions and kinds, log
    entries with awkward text, and a tiny one."""
    bodies = []
    for seq, (n_fn, n_samples, logs) in enumerate([(1, 1, 0), (2, 5, 2), (3, 3, 3)], start=1):
        perf = PerformanceTarget()
        proc = TelemetryProcessor([perf], log=False)
        for i in range(n_fn):
            h = proc.get_handle({"NODE_ID": "node-f", "FUNCTION_ID": str(uuid.UUID(int=1000 + i))})
            for k in range(n_samples):
                h.invocation_completed(0.001 * (k + 1))
                h.function_transfer(0.5 + k)
                h.function_init(1e-9 * k)
            for k in range(logs):
                h.log("INFO", f"tgt,{k}\"", f'msg "{k}", line\nnext ✓')
        (batch,) = _core.drain_encode(perf, "node-f", 7, seq, 123, 1 << 24)
        bodies.append(bytes(batch[3]))
    return bodies


BODIES = valid_bodies()


SEQ_FIELD = b"\xc0\x3e"  # field 1000, varint: the last field of every body
FRESH = itertools.count(1000)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid body with a few byte-level mutations. Half of them get a new
    batch_sequence appended after mutating, so those that stay valid are
    stored, not refused as duplicates."""
    fresh = draw(st.booleans())
    body = bytearray(draw(st.sampled_from(BODIES)))
    if fresh:
        assert body[-3:-1] == SEQ_FIELD
        del body[-3:]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(0, len(body) - 1)))
        if op == "flip" and body:
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and body:
            body[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12]))
        elif op == "insert":
            body[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del body[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del body[pos:]
        elif op == "splice":  # a piece of another valid body
            other = draw(st.sampled_from(BODIES))
            a = draw(st.integers(0, len(other) - 1))
            body[pos:pos] = other[a : a + draw(st.integers(1, 40))]
    if fresh:
        body += SEQ_FIELD + varint(next(FRESH))
    return bytes(body)


any_body = st.one_of(st.binary(max_size=300), mutated())


def parse_csv(text: str) -> list[list[str]]:
    # Not str.splitlines: it also splits at \x0c, \x1c, \u2028 ... inside fields.
    return list(csv.reader(io.StringIO(text, newline="")))


@dataclass
class Snapshot:
    samples_csv: bytes
    logs_csv: bytes
    redis: dict[str, list[tuple[str, float]]]


class Store:
    """One collector core writing a real Redis and a CSV dataset."""

    def __init__(self, redis_server: RedisServer, prefix: Path) -> None:
        self.redis_server = redis_server
        self.prefix = str(prefix)
        self.core = _core.CollectorCore(redis_url=redis_server.url, dataset_path=self.prefix)
        self.client = redis_server.client()

    def snapshot(self) -> Snapshot:
        assert self.core.flush(10.0), "the Redis writer did not catch up"
        pipe = self.client.pipeline()
        keys = sorted(self.client.keys("*"))
        for k in keys:
            pipe.zrange(k, 0, -1, withscores=True)
        return Snapshot(
            Path(self.prefix + "performance_samples.csv").read_bytes(),
            Path(self.prefix + "application_logs.csv").read_bytes(),
            dict(zip(keys, pipe.execute(), strict=True)),
        )

    def check(self, status: int, before: Snapshot, stats_before: dict[str, int]) -> None:
        after = self.snapshot()
        stats = self.core.stats()
        assert status in (200, 202, 400)  # 202: stored, Redis not yet confirmed
        assert stats["redis_error_replies"] == 0
        if status == 400:
            assert after == before, "a refused body changed what is stored"
            return
        # Taken: the CSV grew by exactly the rows reported, whole rows only.
        new_samples = after.samples_csv[len(before.samples_csv) :]
        new_logs = after.logs_csv[len(before.logs_csv) :]
        assert after.samples_csv.startswith(before.samples_csv)
        assert after.logs_csv.startswith(before.logs_csv)
        samples = stats["samples_stored"] - stats_before["samples_stored"]
        logs = stats["log_entries_stored"] - stats_before["log_entries_stored"]
        assert len(parse_csv(new_samples.decode())) == samples
        assert len(parse_csv(new_logs.decode())) == logs
        for key, members in before.redis.items():
            assert set(members) <= set(after.redis[key]), "a stored member went away"


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("fuzz-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(module_redis, tmp_path_factory.mktemp("fuzz-ds") / "d_")
    yield s
    s.core.close(5.0)


def test_valid_bodies_are_stored(store: Store) -> None:
    """The fuzzer's seeds are themselves accepted (else mutations of them
    would prove little)."""
    for body in BODIES:
        before, stats = store.snapshot(), store.core.stats()
        status, reason = store.core.ingest(body)
        assert status in (200, 202) and "stored" in reason
        store.check(status, before, stats)


def test_a_truncated_body_is_never_taken_for_the_batch(store: Store) -> None:
    # Over HTTP a cut body never reaches the core (Content-Length; see
    # test_shutdown.py). Here, in the core: a cut is refused (400) or, cut
    # at a field boundary before field 1000, taken as an unsequenced body
    # (another producer's, stored as it is); never as the sequenced batch,
    # so the whole body sent afterwards is still stored, not a duplicate.
    for body in BODIES:
        unsequenced = store.core.stats()["batches_unsequenced"]
        taken = 0
        for cut in range(len(body)):
            status, _ = store.core.ingest(body[:cut])
            assert status in (200, 202, 400), cut
            taken += status != 400
        assert store.core.stats()["batches_unsequenced"] == unsequenced + taken
        status, reason = store.core.ingest(body)
        assert status in (200, 202) and "stored" in reason, reason


@FUZZ
@given(body=any_body)
def test_random_and_mutated_bodies_through_the_core(store: Store, body: bytes) -> None:
    before, stats = store.snapshot(), store.core.stats()
    status, reason = store.core.ingest(body)
    assert isinstance(reason, str) and reason
    event(f"status {status}: {reason.split(':')[0][:40]}")
    store.check(status, before, stats)


def post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/performance", body=body, headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(module_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    prefix = tmp_path_factory.mktemp("fuzz-http") / "h_"
    col = OrchestratorCollector("http://127.0.0.1:0", redis_url=module_redis.url, dataset_path=str(prefix))
    col.start()
    store = Store.__new__(Store)
    store.redis_server, store.prefix, store.core = module_redis, str(prefix), col.core
    store.client = module_redis.client()
    yield col, store
    col.stop(5.0)


@settings(FUZZ, max_examples=200)
@given(body=any_body)
def test_random_and_mutated_bodies_over_http(served: Any, body: bytes) -> None:
    col, store = served
    before, stats = store.snapshot(), store.core.stats()
    status = post(int(col.url.rsplit(":", 1)[1]), body)
    store.check(status, before, stats)


awkward_text = st.text(
    st.one_of(st.sampled_from(list(',"\r\n\\:; \t')), st.characters(blacklist_categories=("Cs",))),
    max_size=30,
)


@settings(FUZZ, max_examples=150)
@given(entries=st.lists(st.tuples(awkward_text, awkward_text), min_size=1, max_size=5))
def test_random_log_text_round_trips_through_csv_and_redis(store: Store, entries: list[tuple[str, str]]) -> None:
    """Log entries with any text (commas, quotes, CR, LF, colons) come back
    exactly from the collector's CSV (read by `csv`) and Redis members."""
    fid = str(uuid.uuid4())
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
    for target, message in entries:
        h.log("INFO", target, message)
    (batch,) = _core.drain_encode(perf, "node-text", next(FRESH), 1, 0, 1 << 24)
    before = store.snapshot()
    assert store.core.ingest(bytes(batch[3]))[0] in (200, 202)
    after = store.snapshot()
    new = after.logs_csv[len(before.logs_csv) :].decode()
    rows = parse_csv(new)
    assert [(r[0], r[1], r[3]) for r in rows] == [(fid, t, m) for t, m in entries]
    for (_, target, score, message) in rows:
        members = after.redis[f"performance:{fid}:{target}"]
        assert (f"{score}:{message}", float(score)) in members
