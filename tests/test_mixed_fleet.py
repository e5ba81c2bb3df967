"""A collector beside EDGELESS's own nodes and tools: the same keys, rows
and files, edge case for edge case.

Each expectation is what EDGELESS's orchestrator does (its
`edgeless_orc/src/proxy_redis.rs`): it parses function ids as UUIDs and
prints them lowercase and hyphenated; its `UpdateNodeRequest` has no
`batch_sequence` (field 1000 is ours); its CSV files start every line with
the additional header / fields followed by a comma, so an empty one leaves
a leading empty column. Bodies are encoded by the real `protoc --encode`
from the repo's `.proto`, as another producer would encode them.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeless_telemetry import _core
from redis_fixture import RedisServer

PROTO = Path(__file__).resolve().parent.parent / "proto" / "edgeless_telemetry.proto"
FID = "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"


def encode(text: str) -> bytes:
    """An `UpdateNodeRequest` from protobuf text format, by the real protoc."""
    if shutil.which("protoc") is None:
        pytest.skip("protoc is not installed (scripts/test.sh installs it)")
    return subprocess.run(
        ["protoc", f"--proto_path={PROTO.parent}", "--encode=edgeless_api.UpdateNodeRequest", PROTO.name],
        input=text.encode(), capture_output=True, check=True, timeout=30,
    ).stdout


def edgeless_body(fids: list[str], *, sequence: int = 0, logs: str = "") -> bytes:
    """What an EDGELESS node sends: node id, deadline, nonce, execution
    times of each function id as spelled; no field 1000 unless asked."""
    series = "".join(
        f"function_execution_times {{ id: \"{f}\" samples {{ timestamp_sec: 1760000000"
        f" timestamp_ns: {i * 1_000_000} sample: 0.25 }} }}\n" for i, f in enumerate(fids))
    seq = f"batch_sequence: {sequence}\n" if sequence else ""
    return encode(f"node_id: \"node-e\"\nrefresh_deadline: 1760000010\nnonce: 77\n{seq}"
                  f"performance_samples {{ {series} {logs} }}\n")


def test_function_ids_land_in_the_lowercase_key(redis_server: RedisServer, tmp_path: Path) -> None:
    core = _core.CollectorCore(redis_url=redis_server.url, dataset_path=str(tmp_path / "d_"))
    spellings = [FID.upper(), "{" + FID + "}", FID.replace("-", ""), "urn:uuid:" + FID]
    status, reason = core.ingest(edgeless_body(spellings, sequence=1))
    assert status == 200, reason
    r = redis_server.client()
    assert r.keys("performance:*") == [f"performance:{FID}:function_execution_time"]
    assert r.zcard(f"performance:{FID}:function_execution_time") == len(spellings)
    with open(tmp_path / "d_performance_samples.csv", newline="") as f:
        ids = {row[0] for row in list(csv.reader(f))[1:]}
    assert ids == {FID}
    core.close(5.0)


def test_a_body_without_batch_sequence_is_stored_as_it_comes(redis_server: RedisServer,
                                                            tmp_path: Path) -> None:
    core = _core.CollectorCore(redis_url=redis_server.url, dataset_path=str(tmp_path / "d_"))
    body = edgeless_body([FID, FID])
    assert core.ingest(body) == (200, "stored 2 samples, 0 log entries")
    r = redis_server.client()
    assert r.zcard(f"performance:{FID}:function_execution_time") == 2
    stats = core.stats()
    assert stats["batches_unsequenced"] == 1 and stats["batches_stored"] == 1
    # No sequence, no de-duplication: sent again, stored again (Redis keeps
    # one copy of each member; the CSV has both).
    assert core.ingest(body)[0] == 200
    assert core.stats()["batches_unsequenced"] == 2
    with open(tmp_path / "d_performance_samples.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 1 + 4
    core.close(5.0)


def test_edgeless_csv_layout_matches_edgeless_byte_for_byte(tmp_path: Path) -> None:
    core = _core.CollectorCore(dataset_path=str(tmp_path / "e_"), layout="edgeless")
    assert core.ingest(edgeless_body([FID], sequence=1))[0] == 200
    core.close(5.0)
    # EDGELESS: format!("{},identifier,metric,timestamp,value", header) and
    # format!("{},{},{},{},{}", fields, id, metric, timestamp, value).
    assert (tmp_path / "e_performance_samples.csv").read_text() == (
        ",identifier,metric,timestamp,value\n"
        f",{FID},function_execution_time,1760000000,0.25\n"
    )
    assert (tmp_path / "e_application_logs.csv").read_text() == ",identifier,target,timestamp,value\n"
    plain = _core.CollectorCore(dataset_path=str(tmp_path / "p_"))
    assert plain.ingest(edgeless_body([FID], sequence=1))[0] == 200
    plain.close(5.0)
    assert (tmp_path / "p_performance_samples.csv").read_text().startswith("identifier,metric")
    with pytest.raises(ValueError, match="layout"):
        _core.CollectorCore(dataset_path=str(tmp_path / "x_"), layout="excel")


def test_log_target_named_like_a_metric_is_never_read_as_samples(redis_server: RedisServer) -> None:
    core = _core.CollectorCore(redis_url=redis_server.url)
    logs = (f"function_log_entries {{ id: \"{FID}\" entries {{ timestamp_sec: 1760000001"
            " target: \"function_execution_time\" msg: \"999\" }"
            " entries { timestamp_sec: 1760000002 target: \"app\" msg: \"hello\" } }")
    assert core.ingest(edgeless_body([FID], sequence=1, logs=logs))[0] == 200
    r = redis_server.client()
    assert r.zrange(f"performance:{FID}:function_execution_time", 0, -1) == ["1760000000:0.25"]
    assert r.zrange(f"performance:{FID}:log:function_execution_time", 0, -1) == ["1760000001:999"]
    assert r.zrange(f"performance:{FID}:app", 0, -1) == ["1760000002:hello"]
    assert core.stats()["log_keys_renamed"] == 1
    core.close(5.0)
