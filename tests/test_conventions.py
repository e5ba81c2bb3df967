"""The conventions Python users bring: timing context managers and
decorators on handles, a current span, W3C trace context across processes.

Everything runs through the real chain (a recording Python target, a
PerformanceTarget and a PrometheusTarget) and the real tracer writing CSV.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeless_telemetry import (
    ChainResult,
    ControlPlaneTracer,
    FunctionExitStatus,
    FunctionTime,
    PerformanceTarget,
    PrometheusTarget,
    Span,
    TelemetryEvent,
    TelemetryLogLevel,
    TelemetryProcessor,
    Timer,
    trace_analysis,
)
from tracer_util import check_spans, read

FID = "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"
LABELS = f'node_id="node-1",function_id="{FID}",function_type="python"'


class Recorder:
    """A Python target that keeps every event and passes it on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float | None, int | None]] = []

    def handle(self, event: TelemetryEvent, tags: dict[str, str]) -> int:
        self.events.append((event.kind, event.duration_s, event.status))
        return ChainResult.PASSED

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]

    def exits(self) -> list[int | None]:
        return [s for k, _, s in self.events if k == "function_exit"]


class Node:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.perf = PerformanceTarget()
        self.prom = PrometheusTarget("")
        self.processor = TelemetryProcessor([self.recorder, self.perf, self.prom], log=False)
        self.fn = self.processor.get_handle({"NODE_ID": "node-1"}).fork(
            {"FUNCTION_ID": FID, "FUNCTION_TYPE": "python"}
        )

    def samples(self, kind: FunctionTime) -> list[float]:
        metrics = self.perf.get_metrics()
        s = metrics.function_times[kind].get(FID)
        return [] if s is None else [float(v) for v in s.values]

    def metric(self, name: str) -> float:
        """One sample of the exposition, by its full name and labels."""
        text = self.prom.render().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in\n{text}")

    def function_count(self) -> float:
        return self.metric('function_count{node_id="node-1",function_type="python"}')

    def executions(self, invocation_type: str) -> float:
        return self.metric(
            f'execution_times_count{{{LABELS},invocation_type="{invocation_type}"}}'
        )


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.prom.close()


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt / CancelledError: not a failure."""


def test_with_block_and_decorators_record_monotonic_durations(node: Node) -> None:
    fn = node.fn
    with fn.invocation(event_type="CALL") as timer:
        assert isinstance(timer, Timer)
        time.sleep(0.02)

    @fn.invocation()
    def double(x: int) -> int:
        """Doubles."""
        time.sleep(0.01)
        return 2 * x

    @fn.invocation(event_type="CALL")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.03)  # the wrapper awaits: this is inside the timing
        return x + 1

    assert double(21) == 42 and double(1) == 2
    assert (double.__name__, double.__doc__) == ("double", "Doubles.")
    assert asyncio.run(fetch(1)) == 2
    assert asyncio.iscoroutinefunction(fetch)

    before_ns = time.time_ns()
    with fn.invocation():
        pass
    sample = node.perf.get_metrics().function_times[FunctionTime.EXECUTION][FID]
    durations = [float(v) for v in sample.values]
    # The wall-clock stamp (extrapolated from the monotonic clock) is now-ish.
    assert abs(int(sample.timestamps_ns[-1]) - before_ns) < 1_000_000_000
    assert list(sample.timestamps_ns) == sorted(sample.timestamps_ns)
    assert len(durations) == 5 and durations[-1] < 1
    durations = durations[:4]
    # Each at least what it slept, none absurd (generous: a busy machine).
    for measured, slept in zip(durations, (0.02, 0.01, 0.01, 0.03), strict=True):
        assert slept <= measured < slept + 5
    assert node.executions("Call") == 2 and node.executions("Cast") == 3
    assert node.recorder.kinds() == ["function_invocation_completed"] * 5
    assert node.processor.stats()["dropped_invalid_value"] == 0


def test_every_kind_records_its_time(node: Node) -> None:
    fn = node.fn
    for timer, kind in (
        (fn.timed_instantiate, FunctionTime.INSTANTIATE),
        (fn.timed_init, FunctionTime.INIT),
        (fn.timed_stop, FunctionTime.STOP),
        (fn.timed_transfer, FunctionTime.TRANSFER),
    ):
        with timer():
            pass
        assert len(node.samples(kind)) == 1, kind
    assert node.recorder.kinds() == [
        "function_instantiate", "function_init", "function_stop", "function_transfer",
    ]
    assert node.function_count() == 1  # instantiated, no exit yet
    assert node.metric(f'transfer_times_count{{node_id="node-1",function_id="{FID}"}}') == 1


def test_exceptions_record_the_duration_and_the_exit_that_ends_the_instance(node: Node) -> None:
    fn = node.fn
    # A failed instantiate: the time, then INTERNAL_ERROR: the gauge is back at 0.
    with pytest.raises(OSError, match="no image"):
        with fn.timed_instantiate():
            raise OSError("no image")
    assert node.recorder.exits() == [FunctionExitStatus.INTERNAL_ERROR]
    assert node.function_count() == 0
    assert len(node.samples(FunctionTime.INSTANTIATE)) == 1

    # The next instance: instantiated, then a failing call does not end it.
    with fn.timed_instantiate():
        pass
    node.recorder.events.clear()

    @fn.invocation(event_type="CALL")
    def handler() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        handler()
    assert node.recorder.kinds() == ["function_invocation_completed"]
    assert node.function_count() == 1 and node.executions("Call") == 1

    # ...unless the runtime says failed calls end it, as EDGELESS does.
    with pytest.raises(ZeroDivisionError):
        with fn.invocation(on_error=FunctionExitStatus.CODE_ERROR):
            _ = 1 / 0
    assert node.recorder.exits() == [FunctionExitStatus.CODE_ERROR]
    assert node.function_count() == 0 and node.executions("Cast") == 1

    # A failed init ends the instance with CODE_ERROR (async decorated too).
    with fn.timed_instantiate():
        pass
    node.recorder.events.clear()

    @fn.timed_init()
    async def init() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad payload")

    with pytest.raises(ValueError, match="bad payload"):
        asyncio.run(init())
    assert node.recorder.kinds() == ["function_init", "function_exit"]
    assert node.recorder.exits() == [FunctionExitStatus.CODE_ERROR]
    assert node.function_count() == 0

    # on_error=None: the runtime records the exit itself.
    node.recorder.events.clear()
    with pytest.raises(RuntimeError), fn.timed_stop(on_error=None):
        raise RuntimeError("stuck")
    assert node.recorder.kinds() == ["function_stop"]

    # An interruption is not a failure: the time, no exit.
    with pytest.raises(Interrupted), fn.timed_init():
        raise Interrupted
    assert node.recorder.kinds() == ["function_stop", "function_init"]
    assert node.function_count() == 0
    stats = node.processor.stats()
    assert stats["dropped_invalid_value"] == stats["dropped_invalid_type"] == 0


def test_decorated_calls_overlap_in_threads_and_tasks(node: Node) -> None:
    fn = node.fn
    barrier = threading.Barrier(8)

    @fn.invocation(event_type="CALL")
    def work(i: int) -> int:
        if i == 0:
            barrier.wait(timeout=10)  # all eight calls are inside at once
        return i

    @fn.invocation()
    async def serve(i: int) -> int:
        await asyncio.sleep(0.001)  # 100 calls open at once
        return i

    errors: list[BaseException] = []

    def thread(t: int) -> None:
        try:
            assert [work(i) for i in range(100)] == list(range(100))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=thread, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and not any(t.is_alive() for t in threads)

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(serve(i) for i in range(100))), 20)

    assert asyncio.run(main()) == list(range(100))
    assert node.executions("Call") == 800 and node.executions("Cast") == 100
    assert len(node.samples(FunctionTime.EXECUTION)) == 900


def test_with_blocks_reuse_an_idle_timer_and_never_a_busy_one(node: Node) -> None:
    """A handle hands its last timer out again while it is idle (cheaper
    than a new object per block). A block in progress, a timer the caller
    keeps, or one entered and dropped never make a block fail or share."""
    fn = node.fn
    before = sys.getrefcount(fn)
    kept = fn.invocation()
    assert sys.getrefcount(kept) == 3  # `kept`, the handle's slot, the argument
    with kept:
        with fn.invocation():  # nested: a timer of its own
            with fn.invocation():
                pass
    fn.invocation().__enter__()  # entered, dropped, never exited
    for _ in range(3):
        with fn.invocation():
            pass
    errors: list[BaseException] = []

    def thread() -> None:
        try:
            for _ in range(200):
                with fn.invocation(event_type="CALL"):
                    time.sleep(0)  # another thread's block starts meanwhile
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=thread) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and not any(t.is_alive() for t in threads)
    assert node.executions("Cast") == 6 and node.executions("Call") == 800
    del kept
    assert sys.getrefcount(fn) == before  # no timer holds the handle itself


def test_misuse_is_refused_clearly(node: Node) -> None:
    fn = node.fn
    timer = fn.invocation()
    with timer:
        with pytest.raises(RuntimeError, match="already timing"):
            timer.__enter__()
    assert len(node.samples(FunctionTime.EXECUTION)) == 1  # the outer block only
    with pytest.raises(ValueError, match="FunctionExitStatus"):
        fn.invocation(on_error=7)
    with pytest.raises(TypeError, match="on_error"):
        fn.timed_init(on_error="CODE_ERROR")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event_type"):
        fn.invocation(event_type=3)  # type: ignore[arg-type]

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        fn.invocation()(gen)
    # __exit__ of a timer never entered records nothing.
    assert fn.timed_stop().__exit__(None, None, None) is False
    assert node.samples(FunctionTime.STOP) == []


# --- current span -----------------------------------------------------------


def rows_by_name(path: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in read(path):
        if r.event == "span_start":
            out.setdefault(r.name, []).append(r)
    return out


def test_span_block_is_current_and_explicit_parent_wins(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    other = str(uuid.uuid4())
    with ControlPlaneTracer(path) as tracer:
        assert tracer.current_span() is None
        with tracer.span("deploy") as deploy:
            assert isinstance(deploy, Span) and tracer.current_span() is deploy
            place = tracer.start_span("place")  # child of the current span
            place.end()
            tracer.log(TelemetryLogLevel.INFO, "placed")  # on the current span
            with tracer.span("start") as start:
                assert tracer.current_span() is start
                tracer.log("WARN", "slow node")
            assert tracer.current_span() is deploy
            explicit = tracer.start_span("elsewhere", parent_id=other)
            explicit.end()
        assert tracer.current_span() is None and deploy.ended and start.ended
        free = tracer.start_span("free")  # no current span: a new trace
        free.end()
        tracer.log("INFO", "no span")

        with pytest.raises(KeyError):
            with tracer.span("failing"):
                raise KeyError("x")
        assert tracer.current_span() is None

        scope = tracer.span("once")
        with scope as first:
            with pytest.raises(RuntimeError, match="already entered"):
                scope.__enter__()
            assert tracer.current_span() is first
        with scope as second:  # again, after the block: a new span
            assert second is not first and second.correlation_id != first.correlation_id
        assert scope.__exit__(None, None, None) is False  # not entered: nothing

    rows = read(path)
    check_spans([r for r in rows if r.cid])  # less the one log of no span
    starts = rows_by_name(path)
    assert starts["place"][0].parent == deploy.correlation_id
    assert starts["start"][0].parent == deploy.correlation_id
    assert starts["elsewhere"][0].parent == other
    assert starts["free"][0].parent == "" and starts["deploy"][0].parent == ""
    logs = [r for r in rows if r.event == "log"]
    assert [(r.cid, r.name, r.message) for r in logs] == [
        (deploy.correlation_id, "deploy", "placed"),
        (start.correlation_id, "start", "slow node"),
        ("", "", "no span"),
        (starts["failing"][0].cid, "failing", "KeyError: 'x'"),
    ]
    assert len(starts["once"]) == 2
    assert logs[-1].level == "ERROR"


def test_span_decorators_sync_and_async(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    tracer = ControlPlaneTracer(path)

    @tracer.span("place")
    def place(n: int) -> Span | None:
        tracer.start_span("score").end()
        return tracer.current_span()

    @tracer.span("deploy")
    async def deploy() -> list[Span | None]:
        await asyncio.sleep(0)
        return [place(1), place(2)]

    inner = asyncio.run(deploy())
    tracer.close()
    starts = rows_by_name(path)
    (d,) = starts["deploy"]
    assert [r.parent for r in starts["place"]] == [d.cid, d.cid]
    assert [r.parent for r in starts["score"]] == [r.cid for r in starts["place"]]
    assert [s.correlation_id for s in inner if s is not None] == [r.cid for r in starts["place"]]
    check_spans(read(path))


def assert_own_trees(path: Path, n: int) -> None:
    """Each worker i wrote root-i > inner-i > leaf-i and a log on inner-i."""
    rows = read(path)
    check_spans(rows)
    starts = {r.name: r for r in rows if r.event == "span_start"}
    assert len(starts) == 3 * n
    logs = {r.message: r for r in rows if r.event == "log"}
    for i in range(n):
        root, inner, leaf = starts[f"root-{i}"], starts[f"inner-{i}"], starts[f"leaf-{i}"]
        assert root.parent == ""
        assert inner.parent == root.cid, i
        assert leaf.parent == inner.cid, i
        assert logs[f"worker {i}"].cid == inner.cid


def test_100_asyncio_tasks_see_their_own_current_span(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    tracer = ControlPlaneTracer(path)

    async def worker(i: int) -> None:
        with tracer.span(f"root-{i}"):
            await asyncio.sleep(0.001 * (i % 7))  # interleave the tasks
            with tracer.span(f"inner-{i}"):
                await asyncio.sleep(0)
                tracer.log("INFO", f"worker {i}")
                await asyncio.sleep(0.001 * (i % 3))
                tracer.start_span(f"leaf-{i}").end()

    async def main() -> None:
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(100))), 20)

    asyncio.run(main())
    tracer.close()
    assert_own_trees(path, 100)


def test_8_threads_see_their_own_current_span(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    tracer = ControlPlaneTracer(path)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with tracer.span(f"root-{i}"):
                barrier.wait(timeout=10)  # all roots open at once
                with tracer.span(f"inner-{i}"):
                    barrier.wait(timeout=10)
                    tracer.log("INFO", f"worker {i}")
                    tracer.start_span(f"leaf-{i}").end()
                    barrier.wait(timeout=10)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not errors and not any(t.is_alive() for t in threads)
    tracer.close()
    assert_own_trees(path, 8)


# --- traceparent --------------------------------------------------------------

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def test_traceparent_maps_correlation_ids(tmp_path: Path) -> None:
    with ControlPlaneTracer(tmp_path / "t.csv") as tracer:
        root = tracer.start_span("root")
        child = root.child("child")
        grandchild = child.child("grandchild")
        for span in (root, child, grandchild):
            m = TRACEPARENT.match(span.traceparent())
            assert m, span.traceparent()
            trace, span_id = m.groups()
            assert trace == span.trace_id == uuid.UUID(root.correlation_id).hex
            assert span_id == uuid.UUID(span.correlation_id).hex[16:]
            # Every span of the trace shares the root's high 64 bits.
            assert uuid.UUID(span.correlation_id).hex[:16] == trace[:16]
            assert uuid.UUID(span.correlation_id).version == 4

        # Continuing a header in the same process: parent is the named span.
        cont = tracer.start_span("continued", traceparent=child.traceparent())
        assert cont.parent_id == child.correlation_id
        assert cont.trace_id == root.trace_id

        # A foreign header (the W3C example): parent = trace high half + span id.
        foreign = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        f = tracer.start_span("foreign", traceparent=foreign)
        assert f.parent_id == "4bf92f35-77b3-4da6-00f0-67aa0ba902b7"
        assert f.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert f.traceparent().startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")

        for bad in ("", "00-xyz", foreign.upper(), "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                    foreign.replace("-01", "-01-extra"), "ff" + foreign[2:]):
            with pytest.raises(ValueError, match="traceparent"):
                tracer.start_span("bad", traceparent=bad)
            with pytest.raises(ValueError, match="traceparent"):
                tracer.span("bad", traceparent=bad)
        with pytest.raises(ValueError, match=re.escape("'00-xyz'") + "|" + re.escape('"00-xyz"')):
            tracer.start_span("bad", traceparent="00-xyz")
        with pytest.raises(TypeError, match="traceparent"):
            tracer.start_span("bad", traceparent=b"00")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not both"):
            tracer.start_span("bad", parent_id=root.correlation_id, traceparent=foreign)


CHILD = """
import sys
from edgeless_telemetry import ControlPlaneTracer
tracer = ControlPlaneTracer(sys.argv[1])
with tracer.span("handle", traceparent=sys.argv[2]) as handle:
    tracer.start_span("work").end()
    tracer.log("INFO", "done")
    print(handle.traceparent())
tracer.close()
"""


def test_traceparent_round_trip_between_processes_is_one_trace(tmp_path: Path) -> None:
    orch, node = tmp_path / "orchestrator.csv", tmp_path / "node.csv"
    tracer = ControlPlaneTracer(orch)
    with tracer.span("request") as request, tracer.span("dispatch") as dispatch:
        header = dispatch.traceparent()
        out = subprocess.run([sys.executable, "-c", CHILD, str(node), header],
                             capture_output=True, text=True, timeout=30, check=True)
    tracer.close()
    # The other process's own header stays in the same W3C trace.
    assert out.stdout.strip().split("-")[1] == request.trace_id

    summary = subprocess.run(
        [sys.executable, "-m", "edgeless_telemetry.cli", "trace", "summary", "--json",
         str(orch), str(node)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    by_name = {row["name"]: row for row in json.loads(summary.stdout)}
    assert set(by_name) == {"request", "dispatch", "handle", "work"}
    assert all(row["count"] == 1 and row["unfinished"] == 0 for row in by_name.values())

    spans = trace_analysis.read_spans([orch, node])
    named = {s.name: s for s in spans.values()}
    assert named["handle"].parent_id == dispatch.correlation_id
    assert named["work"].parent_id == named["handle"].correlation_id

    def root_of(span: trace_analysis.SpanRecord) -> str:
        while span.parent_id is not None:
            span = spans[span.parent_id]
        return span.correlation_id

    assert {root_of(s) for s in spans.values()} == {request.correlation_id}
    # The Chrome view draws one trace: every span on the root's track.
    chrome = trace_analysis.chrome_trace(spans)
    assert {e["tid"] for e in chrome["traceEvents"] if e.get("ph") == "X"} == {1}
    # The CSV format is unchanged: both files parse with the same header.
    check_spans(read(orch))
    check_spans(read(node))
