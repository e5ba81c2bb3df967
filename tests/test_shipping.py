"""Node -> orchestrator shipping against real parts: redis-server, protoc,
HTTP on loopback. Timestamps are given explicitly (``observe_many``) so the
expected Redis members, scores and CSV rows are known exactly."""

from __future__ import annotations

import csv
import http.client
import http.server
import shutil
import subprocess
import threading
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
    TelemetryHandle,
    TelemetryProcessor,
    _core,
)
from redis_fixture import RedisServer

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "edgeless_telemetry.proto"
METRIC = {
    FunctionTime.INSTANTIATE: "function_instantiate_time",
    FunctionTime.INIT: "function_init_time",
    FunctionTime.EXECUTION: "function_execution_time",
    FunctionTime.STOP: "function_stop_time",
    FunctionTime.TRANSFER: "function_transfer_time",
}
T0 = 1_700_000_000_123_456_789


def edgeless_float(x: float) -> str:
    """Rust's `Display` for f64, which EDGELESS uses: shortest round-trip
    digits, never an exponent."""
    return np.format_float_positional(x, unique=True, trim="-")


def score(ts_ns: int) -> float:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return sec + ns / 1e9


def node_handle(perf: PerformanceTarget, fid: str) -> TelemetryHandle:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "node-1"})
    return node.fork({"FUNCTION_ID": fid, "FUNCTION_TYPE": "python"})


def record_known(h: TelemetryHandle, n: int, first: int = 0) -> list[tuple[FunctionTime, int, float]]:
    """n samples of every kind with distinct timestamps (1 ms apart) and
    values; returns (kind, timestamp_ns, value) of each."""
    out = []
    for kind in FunctionTime:
        ts = T0 + (np.arange(first, first + n, dtype=np.int64) * 1_000_000) + int(kind) * 17
        values = (np.arange(first, first + n) + 1) * 1e-4 + int(kind) * 1e-7
        assert h.observe_many(int(kind), values, timestamps_ns=ts) == n
        out += [(kind, int(t), float(v)) for t, v in zip(ts, values, strict=True)]
    return out


def post(url: str, body: bytes, ctype: str = "application/x-protobuf") -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", "/performance", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def one_body(perf: PerformanceTarget, seq: int = 1, nonce: int = 42) -> bytes:
    (batch,) = _core.drain_encode(perf, "node-1", nonce, seq, 0, 1 << 24)
    return bytes(batch[3])


@pytest.fixture
def fid() -> str:
    return str(uuid.uuid4())


def test_end_to_end_exact_redis_and_csv(
    redis_server: RedisServer, tmp_path: Path, fid: str, collectors: Any
) -> None:
    perf = PerformanceTarget()
    h = node_handle(perf, fid)
    recorded = record_known(h, 50)
    h.log("INFO", "my-target", 'a message, with "quotes"\nand a newline')
    prefix = str(tmp_path / "ds" / "run_")
    col = collectors(
        redis_url=redis_server.url, dataset_path=prefix,
        additional_header="experiment,seed", additional_fields="exp1,7",
    )
    rep = NodeReporter(perf, col.url, "node-1", interval_s=0.05).start()
    assert rep.stop()
    assert col.flush(10)
    log_entry = perf.get_metrics()  # nothing left on the node
    assert log_entry.is_empty()

    r = redis_server.client()
    expected: dict[str, set[tuple[str, float]]] = {}
    for kind, ts, v in recorded:
        s = edgeless_float(score(ts))
        expected.setdefault(f"performance:{fid}:{METRIC[kind]}", set()).add(
            (f"{s}:{edgeless_float(v)}", score(ts))
        )
    log_keys = [k for k in r.keys("*") if k.endswith(":my-target")]
    assert sorted(r.keys("*")) == sorted([*expected, f"performance:{fid}:my-target"])
    for key, members in expected.items():
        assert set(r.zrange(key, 0, -1, withscores=True)) == members
    ((log_member, log_score),) = r.zrange(log_keys[0], 0, -1, withscores=True)
    assert log_member == f"{edgeless_float(log_score)}:" + 'a message, with "quotes"\nand a newline'

    rows = csv_rows(Path(prefix + "performance_samples.csv"))
    assert rows[0] == ["experiment", "seed", "identifier", "metric", "timestamp", "value"]
    want = sorted(
        ["exp1", "7", fid, METRIC[k], edgeless_float(score(ts)), edgeless_float(v)]
        for k, ts, v in recorded
    )
    assert sorted(rows[1:]) == want
    logs = csv_rows(Path(prefix + "application_logs.csv"))
    assert logs[0] == ["experiment", "seed", "identifier", "target", "timestamp", "value"]
    assert logs[1] == ["exp1", "7", fid, "my-target", edgeless_float(log_score),
                       'a message, with "quotes"\nand a newline']
    stats = col.stats()
    assert stats["samples_stored"] == len(recorded) and stats["redis_members_existing"] == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def protoc_decode(body: bytes) -> dict[str, Any]:
    """Decodes with the real protoc and parses its text format into nested
    dicts (repeated fields as lists)."""
    if shutil.which("protoc") is None:
        pytest.skip("protoc is not installed (scripts/test.sh installs it)")
    out = subprocess.run(
        ["protoc", f"--proto_path={PROTO.parent}", "--decode=edgeless_api.UpdateNodeRequest",
         PROTO.name], input=body, capture_output=True, check=True,
    ).stdout.decode()
    stack: list[dict[str, Any]] = [{}]
    for line in out.splitlines():
        line = line.strip()
        if line.endswith("{"):
            child: dict[str, Any] = {}
            stack[-1].setdefault(line[:-1].strip(), []).append(child)
            stack.append(child)
        elif line == "}":
            stack.pop()
        elif line:
            key, value = line.split(": ", 1)
            stack[-1][key] = value
    return stack[0]


def test_protoc_decodes_what_the_reporter_sends(fid: str) -> None:
    _Recorder.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        perf = PerformanceTarget()
        h = node_handle(perf, fid)
        recorded = record_known(h, 3)
        h.log("WARN", "tgt", "hello")
        rep = NodeReporter(perf, f"http://127.0.0.1:{server.server_address[1]}", "node-7",
                           interval_s=10)
        rep.start()
        assert rep.stop()
    finally:
        server.shutdown()
        server.server_close()
    ((ctype, body),) = _Recorder.bodies
    assert ctype == "application/x-protobuf"
    msg = protoc_decode(body)
    assert msg["node_id"] == '"node-7"'
    assert int(msg["nonce"]) == rep.nonce and int(msg["batch_sequence"]) == 1
    assert int(msg["refresh_deadline"]) > 1_700_000_000
    (perf_msg,) = msg["performance_samples"]
    fields = {FunctionTime.INSTANTIATE: "function_instantiate_times",
              FunctionTime.INIT: "function_init_times",
              FunctionTime.EXECUTION: "function_execution_times",
              FunctionTime.STOP: "function_stop_times",
              FunctionTime.TRANSFER: "function_transfer_times"}
    for kind, name in fields.items():
        (series,) = perf_msg[name]
        assert series["id"] == f'"{fid}"'
        got = [(int(s["timestamp_sec"]) * 10**9 + int(s["timestamp_ns"]), float(s["sample"]))
               for s in series["samples"]]
        assert got == [(ts, v) for k, ts, v in recorded if k == kind]
    (logs,) = perf_msg["function_log_entries"]
    (entry,) = logs["entries"]
    assert (entry["target"], entry["msg"]) == ('"tgt"', '"hello"')


def test_resent_batch_is_stored_once(tmp_path: Path, fid: str, collectors: Any) -> None:
    perf = PerformanceTarget()
    record_known(node_handle(perf, fid), 5)
    body = one_body(perf)
    col = collectors(dataset_path=str(tmp_path / "d_"))
    assert post(col.url, body)[0] == 200
    status, reason = post(col.url, body)
    assert status == 200 and "duplicate" in reason
    assert len(csv_rows(tmp_path / "d_performance_samples.csv")) == 1 + 25
    assert col.stats()["batches_duplicate"] == 1


def test_restarted_collector_remembers_stored_batches(tmp_path: Path, fid: str) -> None:
    perf = PerformanceTarget()
    record_known(node_handle(perf, fid), 3)
    body = one_body(perf)
    prefix = str(tmp_path / "d_")
    first = _core.CollectorCore(dataset_path=prefix)
    assert first.ingest(body)[0] == 200
    first.close(0)
    again = _core.CollectorCore(dataset_path=prefix, append=True)
    status, reason = again.ingest(body)
    assert status == 200 and "duplicate" in reason
    again.close(0)
    assert len(csv_rows(Path(prefix + "performance_samples.csv"))) == 1 + 15
    fresh = _core.CollectorCore(dataset_path=prefix, append=False)  # a new dataset
    assert "stored" in fresh.ingest(body)[1]
    assert len(csv_rows(Path(prefix + "performance_samples.csv"))) == 1 + 15


def test_malformed_and_truncated_bodies_write_nothing(
    redis_server: RedisServer, tmp_path: Path, fid: str, collectors: Any
) -> None:
    perf = PerformanceTarget()
    record_known(node_handle(perf, fid), 4)
    body = one_body(perf)
    col = collectors(redis_url=redis_server.url, dataset_path=str(tmp_path / "d_"),
                            max_body_bytes=len(body) + 10)
    bad = [b"\xff\xff\xff\xff", b"not protobuf at all", b""]
    bad += [body[:cut] for cut in range(0, len(body), max(1, len(body) // 40))]
    bad.append(body[:-1])
    for b in bad:
        status, _ = post(col.url, b)
        assert status == 400, b
    assert post(col.url, body, ctype="application/json")[0] == 415
    assert post(col.url, body + b"\x00" * 11)[0] == 413
    col.flush(5)
    assert redis_server.client().dbsize() == 0
    assert len(csv_rows(tmp_path / "d_performance_samples.csv")) == 1
    assert col.stats()["batches_malformed"] == len(bad)
    # and the good body still goes in after all that
    assert post(col.url, body)[0] == 200
    col.flush(5)
    assert redis_server.client().dbsize() == 5


def test_non_uuid_function_id_is_refused(collectors: Any, tmp_path: Path) -> None:
    # A hand-made body with a bad id: field 30 { field 100 { id: "x" } }, seq.
    inner = b"\x0a\x01x"
    series = b"\xa2\x06" + bytes([len(inner)]) + inner  # field 100, wire type 2
    perf = b"\x12\x06node-1" + b"\x58\x01" + b"\xf2\x01" + bytes([len(series)]) + series
    body = perf + b"\xc0\x3e\x01"  # field 1000 varint 1
    col = collectors(dataset_path=str(tmp_path / "d_"))
    status, reason = post(col.url, body)
    assert status == 400 and "UUID" in reason


def test_same_value_within_score_precision_is_one_member(
    redis_server: RedisServer, tmp_path: Path, fid: str, collectors: Any
) -> None:
    """The documented EDGELESS format hazard: the score prints ~238 ns
    resolution at today's epoch, so equal values 10 ns apart print the same
    member; Redis keeps one, the collector counts it, CSV keeps both."""
    perf = PerformanceTarget()
    node_handle(perf, fid).observe_many(
        int(FunctionTime.EXECUTION), [0.5, 0.5], timestamps_ns=np.array([T0, T0 + 10])
    )
    col = collectors(redis_url=redis_server.url, dataset_path=str(tmp_path / "d_"))
    assert post(col.url, one_body(perf))[0] == 200
    assert col.flush(5)
    assert redis_server.client().zcard(f"performance:{fid}:function_execution_time") == 1
    assert col.stats()["redis_members_existing"] == 1
    assert len(csv_rows(tmp_path / "d_performance_samples.csv")) == 3


def test_dataset_append_semantics(tmp_path: Path, fid: str) -> None:
    prefix = str(tmp_path / "d_")

    def store(append: bool, seq: int) -> None:
        perf = PerformanceTarget()
        record_known(node_handle(perf, fid), 1)
        c = _core.CollectorCore(dataset_path=prefix, append=append)
        assert c.ingest(one_body(perf, seq=seq))[0] == 200
        c.close(0)

    store(False, 1)
    store(True, 2)  # appends, no second header
    rows = csv_rows(Path(prefix + "performance_samples.csv"))
    assert rows[0] == ["identifier", "metric", "timestamp", "value"]
    assert len(rows) == 1 + 10 and rows.count(rows[0]) == 1
    store(False, 3)  # truncates
    assert len(csv_rows(Path(prefix + "performance_samples.csv"))) == 1 + 5


def test_setup_errors_raise_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="redis://"):
        OrchestratorCollector("http://127.0.0.1:0", redis_url="http://nope")
    with pytest.raises(ValueError, match="one CSV line"):
        OrchestratorCollector("http://127.0.0.1:0", dataset_path=str(tmp_path / "x"),
                              additional_fields="a\nb")
    with pytest.raises(ValueError, match="listen_url"):
        OrchestratorCollector("127.0.0.1:7000")
    perf = PerformanceTarget()
    with pytest.raises(ValueError, match="orchestrator_url"):
        NodeReporter(perf, "ftp://x", "n")
    with pytest.raises(ValueError, match="interval_s"):
        NodeReporter(perf, "http://127.0.0.1:1", "n", interval_s=0)
    with pytest.raises(TypeError):
        NodeReporter(object(), "http://127.0.0.1:1", "n")  # type: ignore[arg-type]
    for bad in ["", "a\nb", "x" * 257]:
        with pytest.raises(ValueError, match="node_id"):
            NodeReporter(perf, "http://127.0.0.1:1", bad)
