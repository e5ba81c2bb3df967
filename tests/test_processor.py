"""Handles, fork, the generic observe path and the processing chain."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from edgeless_telemetry import (
    ChainResult,
    FunctionExitStatus,
    FunctionTime,
    PerformanceTarget,
    TelemetryEvent,
    TelemetryLogLevel,
    TelemetryProcessor,
)


class Recorder:
    """A target written in Python: records what it sees."""

    def __init__(self, result: Any = ChainResult.PROCESSED) -> None:
        self.seen: list[tuple[TelemetryEvent, dict[str, str]]] = []
        self.result = result

    def handle(self, event: TelemetryEvent, tags: dict[str, str]) -> Any:
        self.seen.append((event, tags))
        return self.result


def test_fork_merges_tags_child_wins() -> None:
    proc = TelemetryProcessor([], log=False)
    parent = proc.get_handle({"NODE_ID": "n1", "FUNCTION_TYPE": "a"})
    child = parent.fork({"FUNCTION_TYPE": "b", "X": "y"})
    assert child.tags == {"NODE_ID": "n1", "FUNCTION_TYPE": "b", "X": "y"}
    assert parent.tags == {"NODE_ID": "n1", "FUNCTION_TYPE": "a"}


def test_python_target_sees_events_and_merged_tags() -> None:
    rec = Recorder()
    h = TelemetryProcessor([rec], log=False).get_handle({"NODE_ID": "n"}).fork({"A": "1"})
    h.invocation_completed(0.5, event_type="CALL")
    h.function_exit(FunctionExitStatus.CODE_ERROR)
    h.log(TelemetryLogLevel.WARN, "tgt", "msg")
    h.observe(TelemetryEvent.function_transfer(0.25), {"B": "2"})
    events = [e for e, _ in rec.seen]
    assert events == [
        TelemetryEvent.function_invocation_completed(0.5),
        TelemetryEvent.function_exit(FunctionExitStatus.CODE_ERROR),
        TelemetryEvent.function_log_entry(TelemetryLogLevel.WARN, "tgt", "msg"),
        TelemetryEvent.function_transfer(0.25),
    ]
    assert rec.seen[0][1] == {"NODE_ID": "n", "A": "1", "EVENT_TYPE": "CALL"}
    assert rec.seen[1][1] == {"NODE_ID": "n", "A": "1"}
    assert rec.seen[3][1] == {"NODE_ID": "n", "A": "1", "B": "2"}
    assert events[0].function_time == FunctionTime.EXECUTION
    assert events[2].level == TelemetryLogLevel.WARN and events[2].message == "msg"


@pytest.mark.parametrize(
    ("first", "second_sees"),
    [(ChainResult.PASSED, True), (ChainResult.PROCESSED, True), (ChainResult.FINAL, False), (None, True)],
)
def test_chain_semantics(first: Any, second_sees: bool) -> None:
    a, b = Recorder(first), Recorder()
    h = TelemetryProcessor([a, b], log=False).get_handle()
    h.function_init(0.1)
    assert len(a.seen) == 1
    assert len(b.seen) == (1 if second_sees else 0)


def test_final_target_shields_performance_target(function_id: str) -> None:
    perf = PerformanceTarget()
    h = TelemetryProcessor([Recorder(ChainResult.FINAL), perf], log=False).get_handle(
        {"FUNCTION_ID": function_id}
    )
    h.function_init(0.1)
    assert perf.get_metrics().is_empty()


def test_failing_python_target_is_counted_and_chain_continues(function_id: str) -> None:
    class Broken:
        def handle(self, event: TelemetryEvent, tags: dict[str, str]) -> Any:
            raise RuntimeError("boom")

    perf = PerformanceTarget()
    proc = TelemetryProcessor([Broken(), Recorder(7), perf], log=False)
    h = proc.get_handle({"FUNCTION_ID": function_id})
    h.function_init(0.1)
    h.function_init(0.2)
    assert proc.stats()["target_errors"] == 4  # raised twice, bad result twice
    assert perf.get_metrics().function_times[FunctionTime.INIT][function_id].values.tolist() == [0.1, 0.2]


def test_observe_with_event_tags_resolves_for_that_event(perf: PerformanceTarget) -> None:
    h = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"})
    fid = str(uuid.uuid4())
    h.observe(TelemetryEvent.function_invocation_completed(0.3), {"FUNCTION_ID": fid})
    h.observe(TelemetryEvent.function_invocation_completed(0.4), {"FUNCTION_ID": "not-a-uuid"})
    metrics = perf.get_metrics()
    assert metrics.function_times[FunctionTime.EXECUTION][fid].values.tolist() == [0.3]
    assert perf.stats()["events_without_function_id"] == 1


def test_log_target_forwards_log_entries(caplog: pytest.LogCaptureFixture, function_id: str) -> None:
    h = TelemetryProcessor([]).get_handle({"NODE_ID": "n1", "FUNCTION_ID": function_id})
    with caplog.at_level(logging.INFO, logger="edgeless_telemetry"):
        h.log(TelemetryLogLevel.ERROR, "tgt", "it broke")
        h.log("TRACE", "tgt", "too fine")  # below INFO: filtered by logging
        h.invocation_completed(0.1)  # not a log entry: DEBUG only
    records = [r for r in caplog.records if r.name == "edgeless_telemetry"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert "it broke" in records[0].getMessage()
    assert function_id in records[0].getMessage() and "n1" in records[0].getMessage()


def test_log_target_logs_other_events_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="edgeless_telemetry"):
        # A new processor re-reads the level on its first event.
        h = TelemetryProcessor([]).get_handle({"NODE_ID": "n1"})
        h.function_stop(0.5)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("function_stop(0.5)" in m for m in messages)


def test_targets_property_keeps_objects(perf: PerformanceTarget) -> None:
    rec = Recorder()
    assert TelemetryProcessor([perf, rec]).targets == (perf, rec)
