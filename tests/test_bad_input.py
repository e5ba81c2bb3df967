"""Bad input: setup calls raise with a clear message; the hot path counts and
drops, never raises."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from edgeless_telemetry import (
    FunctionTime,
    PerformanceTarget,
    TelemetryEvent,
    TelemetryHandle,
    TelemetryProcessor,
)


@pytest.mark.parametrize(
    ("tags", "error", "match"),
    [
        ({1: "x"}, TypeError, "tag keys must be str"),
        ({"NODE_ID": 5}, TypeError, "tag values must be str"),
        ({"FUNCTION_ID": "fn-1"}, ValueError, "FUNCTION_ID must be a UUID.*'fn-1'|\"fn-1\""),
        ({"NODE_ID": "\ud800"}, ValueError, "not valid UTF-8"),
        ({"NODE_ID": "x" * 5000}, ValueError, "at most 4096"),
        ({f"K{i}": "v" for i in range(65)}, ValueError, "at most 64 tags"),
    ],
)
def test_setup_rejects_bad_tags(tags: Any, error: type[Exception], match: str) -> None:
    proc = TelemetryProcessor([], log=False)
    with pytest.raises(error, match=match):
        proc.get_handle(tags)
    with pytest.raises(error, match=match):
        proc.get_handle({}).fork(tags)


def test_processor_rejects_unknown_targets() -> None:
    with pytest.raises(TypeError, match="a target must be .* not int"):
        TelemetryProcessor([1])
    with pytest.raises(TypeError, match="list of targets"):
        TelemetryProcessor(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.001])
def test_event_constructors_reject_bad_durations(value: float) -> None:
    with pytest.raises(ValueError, match="duration"):
        TelemetryEvent.function_invocation_completed(value)


def test_event_constructors_reject_bad_enums() -> None:
    with pytest.raises(ValueError, match="FunctionExitStatus"):
        TelemetryEvent.function_exit(7)
    with pytest.raises(ValueError, match="unknown log level"):
        TelemetryEvent.function_log_entry("LOUD", "t", "m")


def test_hot_path_counts_and_drops(
    perf: PerformanceTarget, handle: TelemetryHandle, caplog: pytest.LogCaptureFixture
) -> None:
    proc_stats_before = None
    with caplog.at_level(logging.WARNING, logger="edgeless_telemetry"):
        for bad in [math.nan, math.inf, -1.0]:
            handle.invocation_completed(bad)
        for wrong in ["0.1", None, object()]:
            handle.function_init(wrong)  # type: ignore[arg-type]
        handle.function_exit(42)
        handle.log("LOUD", "t", "m")
        handle.observe("not an event")  # type: ignore[arg-type]
        handle.observe(TelemetryEvent.function_init(0.1), {"K": 3})  # type: ignore[dict-item]
    assert proc_stats_before is None
    assert perf.get_metrics().is_empty()
    # One warning per kind of drop, not one per event.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "further drops of this kind are only counted" in warnings[0].getMessage()


def test_hot_path_drop_counters() -> None:
    proc = TelemetryProcessor([], log=False)
    h = proc.get_handle({})
    h.function_stop(math.nan)
    h.function_stop(-2)
    h.function_stop("x")  # type: ignore[arg-type]
    h.function_exit(-1)
    stats = proc.stats()
    assert stats["dropped_invalid_value"] == 3
    assert stats["dropped_invalid_type"] == 1


def test_ints_and_float_like_durations_are_accepted(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    import numpy as np

    handle.function_init(2)
    handle.function_init(np.float32(0.5))
    assert perf.get_metrics().function_times[FunctionTime.INIT][function_id].values.tolist() == [2.0, 0.5]


def test_lone_surrogates_and_non_str_are_kept(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    proc = TelemetryProcessor([perf], log=False)
    h = proc.get_handle({"FUNCTION_ID": function_id})
    h.log("INFO", "t", "bad \ud800 surrogate")
    h.log("INFO", "t", 12345)  # type: ignore[arg-type]
    entries = perf.get_metrics().function_log_entries[function_id]
    # Escaped, not replaced: the code point is still readable.
    assert entries[0].message == "bad \\ud800 surrogate"
    assert entries[1].message == "12345"
    assert proc.stats()["lossy_strings"] == 1
