"""ControlPlaneTracer in one process: the CSV, span life, bad input, bounds."""

from __future__ import annotations

import gc
import os
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeless_telemetry import ControlPlaneTracer, Span, TelemetryLogLevel
from tracer_util import HEADER, Row, check_spans, parse, read


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "dir" / "trace.csv"


def test_csv_rows_and_ids(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)  # parent directories are created
    assert tracer.output_path == str(csv_path)
    root = tracer.start_span("deploy")
    child = root.child("place")
    child.log(TelemetryLogLevel.INFO, "placed on node-1")
    child.end()
    root.end()
    tracer.close()

    assert csv_path.read_text().splitlines()[0] == ",".join(HEADER)
    rows = read(csv_path)
    assert [r.event for r in rows] == ["span_start", "span_start", "log", "span_end", "span_end"]
    spans = check_spans(rows)
    assert set(spans) == {root.correlation_id, child.correlation_id}
    start_root, start_child, log = rows[0], rows[1], rows[2]
    assert (start_root.cid, start_root.parent, start_root.name) == (root.correlation_id, "", "deploy")
    assert (start_child.parent, start_child.name) == (root.correlation_id, "place")
    assert (log.cid, log.parent, log.name) == (child.correlation_id, root.correlation_id, "place")
    assert (log.level, log.message) == ("INFO", "placed on node-1")
    assert root.parent_id is None and child.parent_id == root.correlation_id
    assert (root.name, child.name) == ("deploy", "place")
    assert uuid.UUID(root.correlation_id).version == 4
    timestamps = [r.ts_ns for r in rows]
    assert timestamps == sorted(timestamps)


def test_every_way_of_ending_writes_exactly_one_end(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    with tracer.start_span("with-block") as a:
        assert isinstance(a, Span) and not a.ended
    assert a.ended
    b = tracer.start_span("explicit")
    b.end()
    b.end()  # second end: no second row
    with b:  # ending again through a with block: still none
        pass
    c = tracer.start_span("dropped")
    c_id = c.correlation_id
    del c  # last reference gone: RAII end
    d = tracer.start_span("ended-then-dropped")
    d.end()
    del d
    parent = tracer.start_span("parent")
    parent.child("child-dropped-at-once")  # never bound to a name
    parent.end()
    tracer.close()

    rows = read(csv_path)
    spans = check_spans(rows)
    names = sorted(start.name for start, _ in spans.values())
    assert names == sorted(
        ["with-block", "explicit", "dropped", "ended-then-dropped", "parent", "child-dropped-at-once"]
    )
    assert c_id in spans


def test_span_outliving_tracer_object_still_ends(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    span = tracer.start_span("long")
    del tracer  # flushed; the writer lives while a span does
    gc.collect()
    span.log("INFO", "after the tracer object went")
    del span  # last reference: end row, then the file is closed
    rows = read(csv_path)
    check_spans(rows)
    assert [r.event for r in rows] == ["span_start", "log", "span_end"]


MESSAGES = [
    "plain",
    "",
    "a,b,c",
    'say "hi"',
    '"',
    "line1\nline2",
    "crlf\r\nend",
    "lone cr\r",
    ' spaced , "mixed"\n\r\n,',
    "ünïcødé ✓ 🚀",
]


def test_awkward_messages_round_trip(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    with tracer.start_span('name, with "quotes"\nand newline') as s:
        for m in MESSAGES:
            s.log("DEBUG", m)
    tracer.close()
    rows = read(csv_path)
    assert [r.message for r in rows if r.event == "log"] == MESSAGES
    assert {r.name for r in rows} == {'name, with "quotes"\nand newline'}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    messages=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=200), max_size=8),
)
def test_random_text_round_trips(tmp_path: Path, name: str, messages: list[str]) -> None:
    path = tmp_path / f"{uuid.uuid4()}.csv"
    with ControlPlaneTracer(path) as tracer:
        with tracer.start_span(name) as s:
            for m in messages:
                s.log(TelemetryLogLevel.TRACE, m)
    rows = read(path)
    check_spans(rows)
    assert [r.message for r in rows if r.event == "log"] == messages
    assert {r.name for r in rows} == {name}


def test_levels_by_enum_int_and_name(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    with tracer.start_span("levels") as s:
        s.log(TelemetryLogLevel.ERROR, "e")
        s.log("warning", "w")
        s.log("Warn", "w2")
        s.log(2, "i")
        s.log("debug", "d")
        s.log(TelemetryLogLevel.TRACE, "t")
    tracer.close()
    assert [r.level for r in read(csv_path) if r.event == "log"] == [
        "ERROR", "WARN", "WARN", "INFO", "DEBUG", "TRACE",
    ]


def test_exception_in_with_block_is_logged_and_propagates(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    with pytest.raises(KeyError):
        with tracer.start_span("fails"):
            raise KeyError("node-7")
    tracer.close()
    rows = read(csv_path)
    check_spans(rows)
    assert [(r.event, r.level, r.message) for r in rows] == [
        ("span_start", "", ""),
        ("log", "ERROR", "KeyError: 'node-7'"),
        ("span_end", "", ""),
    ]


def test_parent_id_from_another_process(csv_path: Path) -> None:
    remote = uuid.uuid4()
    tracer = ControlPlaneTracer(csv_path)
    a = tracer.start_span("node-side", parent_id=str(remote).upper())
    b = tracer.start_span("node-side-2", parent_id=remote)
    c = a.child("grandchild")
    assert a.parent_id == b.parent_id == str(remote)  # normalised
    for s in (c, a, b):
        s.end()
    tracer.close()
    rows = read(csv_path)
    spans = check_spans(rows)
    assert spans[a.correlation_id][0].parent == str(remote)
    assert spans[c.correlation_id][0].parent == a.correlation_id


def test_children_and_logs_after_end_are_allowed(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    s = tracer.start_span("short")
    s.end()
    s.log("INFO", "late")
    late_child = s.child("spawned")
    late_child.end()
    tracer.close()
    rows = read(csv_path)
    check_spans(rows)
    assert [r.event for r in rows] == ["span_start", "span_end", "log", "span_start", "span_end"]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: t.start_span(5), TypeError, "span name must be str"),
        (lambda t: t.start_span(None), TypeError, "span name must be str"),
        (lambda t: t.start_span(""), ValueError, "must not be empty"),
        (lambda t: t.start_span("x" * 5000), ValueError, "at most 4096"),
        (lambda t: t.start_span("x", parent_id="not-a-uuid"), ValueError, "parent_id must be a UUID"),
        (lambda t: t.start_span("x", parent_id=""), ValueError, "parent_id must be a UUID"),
        (lambda t: t.start_span("x", parent_id=12), TypeError, "parent_id must be a UUID string"),
        (lambda t: t.start_span("x").log("LOUD", "m"), ValueError, "unknown log level"),
        (lambda t: t.start_span("x").log(7, "m"), ValueError, "out of range"),
        (lambda t: t.start_span("x").log(None, "m"), TypeError, "log level must be"),
        (lambda t: t.start_span("x").log("INFO", 42), TypeError, "log message must be str"),
        (lambda t: t.start_span("x").child(b"bytes"), TypeError, "span name must be str"),
    ],
)
def test_bad_input_raises_clearly(csv_path: Path, call, error, match) -> None:  # type: ignore[no-untyped-def]
    tracer = ControlPlaneTracer(csv_path)
    with pytest.raises(error, match=match):
        call(tracer)
    tracer.close()
    check_spans(read(csv_path))  # whatever was started is still well-formed


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="output_path"):
        ControlPlaneTracer(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending_bytes"):
        ControlPlaneTracer(tmp_path / "a.csv", max_pending_bytes=0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        ControlPlaneTracer(tmp_path / "a.csv", max_message_bytes=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot open tracer output"):
        ControlPlaneTracer(blocker / "trace.csv")  # parent is a file
    other = tmp_path / "other.csv"
    other.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="not a tracer CSV"):
        ControlPlaneTracer(other, append=True)
    assert other.read_text() == "a,b,c\n1,2,3\n"  # left alone


def test_append_keeps_rows_and_writes_header_once(csv_path: Path) -> None:
    with ControlPlaneTracer(csv_path, append=True) as t:  # new file: header
        t.start_span("first").end()
    with ControlPlaneTracer(csv_path, append=True) as t:
        t.start_span("second").end()
    rows = read(csv_path)  # fails on a second header line
    check_spans(rows)
    assert [r.name for r in rows if r.event == "span_start"] == ["first", "second"]
    with ControlPlaneTracer(csv_path) as t:  # default truncates
        t.start_span("third").end()
    assert [r.name for r in read(csv_path) if r.event == "span_start"] == ["third"]


def test_close_is_idempotent_and_later_rows_are_counted(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    s = tracer.start_span("before")
    tracer.close()
    tracer.close()
    assert tracer.closed
    s.log("INFO", "after close")
    s.end()
    late = tracer.start_span("after")  # still a usable span, its rows dropped
    uuid.UUID(late.correlation_id)
    late.end()
    tracer.flush()
    stats = tracer.stats()
    assert stats["rows_after_close"] == 4
    assert stats["rows_written"] == stats["rows_queued"] == 1
    assert [r.event for r in read(csv_path)] == ["span_start"]


def test_flush_makes_rows_visible_and_stats_add_up(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    s = tracer.start_span("flushed")
    s.log("INFO", "x")
    tracer.flush()
    rows = read(csv_path)
    assert [r.event for r in rows] == ["span_start", "log"]
    stats = tracer.stats()
    assert stats["rows_queued"] == stats["rows_written"] == 2
    assert stats["bytes_written"] == csv_path.stat().st_size - len(",".join(HEADER)) - 1
    assert stats["pending_bytes"] == stats["rows_dropped"] == stats["write_errors"] == 0
    s.end()
    tracer.close()


def test_long_messages_are_cut_at_a_character_boundary(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path, max_message_bytes=10)
    with tracer.start_span("cut") as s:
        s.log("INFO", "ééééééé")  # 14 bytes -> 5 characters (10 bytes)
        s.log("INFO", "short")
    tracer.close()
    assert [r.message for r in read(csv_path) if r.event == "log"] == ["ééééé", "short"]
    assert tracer.stats()["messages_truncated"] == 1


def test_lone_surrogates_are_escaped_and_counted(csv_path: Path) -> None:
    tracer = ControlPlaneTracer(csv_path)
    with tracer.start_span("bad\ud800name") as s:
        s.log("INFO", "bad \udcff text")
    tracer.close()
    rows = read(csv_path)
    # escaped as the processor does it (backslashreplace): nothing lost
    (name,) = {r.name for r in rows}
    assert name == "bad\\ud800name"
    (message,) = [r.message for r in rows if r.event == "log"]
    assert message == "bad \\udcff text"
    assert tracer.stats()["lossy_strings"] == 2


def test_threads_nesting_spans_lose_and_tear_nothing(csv_path: Path) -> None:
    threads, traces, depth = 8, 150, 3
    tracer = ControlPlaneTracer(csv_path)
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(traces):
            with tracer.start_span(f"t{t}") as root:
                parent = root
                for d in range(depth):
                    child = parent.child(f"t{t}-d{d}")
                    child.log("INFO", f"thread {t}, trace {i}, depth {d}, with, commas")
                    parent = child
                # the innermost spans end when their references go

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    tracer.close()
    rows = read(csv_path)
    spans = check_spans(rows)
    per_trace = 1 + depth
    assert len(spans) == threads * traces * per_trace
    assert len(rows) == threads * traces * (2 * per_trace + depth)
    assert tracer.stats()["rows_written"] == len(rows)
    by_id = {cid: start for cid, (start, _) in spans.items()}
    for start in by_id.values():
        thread, _, level = start.name.partition("-d")
        if not level:
            assert start.parent == ""
            continue
        expected_parent = thread if level == "0" else f"{thread}-d{int(level) - 1}"
        assert by_id[start.parent].name == expected_parent


def _fifo_reader(path: str, out: list[bytes]) -> threading.Thread:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so the tracer's open does not block

    def drain() -> None:
        os.set_blocking(fd, True)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        os.close(fd)
        out.append(b"".join(chunks))

    return threading.Thread(target=drain)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    """The writer is stuck on a FIFO nobody reads yet: callers go on, rows
    past the bound are dropped and counted, and what was kept is whole."""
    fifo = str(tmp_path / "pipe")
    os.mkfifo(fifo)
    out: list[bytes] = []
    reader = _fifo_reader(fifo, out)
    tracer = ControlPlaneTracer(fifo, max_pending_bytes=8192)
    n = 20_000
    with tracer.start_span("flood") as s:
        for i in range(n):
            s.log("INFO", f"row {i}")
    stats = tracer.stats()
    assert stats["rows_dropped"] > 0  # pipe (64 KiB) + 8 KiB pending << 20k rows
    reader.start()  # now drain; close waits for the writer to finish
    tracer.close()
    reader.join()
    rows = parse(out[0].decode())
    stats = tracer.stats()
    assert stats["rows_queued"] + stats["rows_dropped"] == n + 2
    assert stats["rows_written"] == stats["rows_queued"] == len(rows)
    assert all(isinstance(r, Row) for r in rows)
    logs = [int(r.message.split()[1]) for r in rows if r.event == "log"]
    assert logs == sorted(logs)  # kept rows stay in order


def test_tracer_log_belongs_to_no_span_and_tools_read_it(csv_path: Path) -> None:
    import json

    from edgeless_telemetry.trace_analysis import chrome_trace, read_spans, summarize

    tracer = ControlPlaneTracer(csv_path)
    with tracer.start_span("deploy") as s:
        s.log("INFO", "inside")
    tracer.log("WARN", "global, \"quoted\"\nmessage")
    tracer.close()
    rows = read(csv_path)
    (glob,) = [r for r in rows if r.message.startswith("global")]
    assert (glob.event, glob.cid, glob.parent, glob.name, glob.level) == ("log", "", "", "", "WARN")
    assert glob.message == 'global, "quoted"\nmessage'
    # The analysis tools skip it rather than fail.
    spans = read_spans([csv_path])
    assert [s.name for s in summarize(spans)] == ["deploy"]
    json.dumps(chrome_trace(spans))
