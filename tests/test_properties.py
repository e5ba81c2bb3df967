"""Property tests: whatever valid data goes in comes back out exactly."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeless_telemetry import FunctionTime, PerformanceTarget, TelemetryProcessor

durations = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from(list(FunctionTime)), durations), max_size=60),
    capacity=st.integers(min_value=1, max_value=20),
)
def test_samples_round_trip_with_drop_oldest(events: list[tuple[FunctionTime, float]], capacity: int) -> None:
    perf = PerformanceTarget(capacity=capacity)
    fid = str(uuid.uuid4())
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
    emit = {
        FunctionTime.INSTANTIATE: h.function_instantiate,
        FunctionTime.INIT: h.function_init,
        FunctionTime.EXECUTION: h.invocation_completed,
        FunctionTime.STOP: h.function_stop,
        FunctionTime.TRANSFER: h.function_transfer,
    }
    for kind, value in events:
        emit[kind](value)
    metrics = perf.get_metrics()
    dropped = 0
    for kind in FunctionTime:
        sent = [v for k, v in events if k == kind]
        kept = sent[-capacity:]
        dropped += len(sent) - len(kept)
        got = metrics.function_times[kind].get(fid)
        assert (got.values.tolist() if got is not None else []) == kept
    assert perf.stats()["samples_dropped"] == dropped


@settings(max_examples=200, deadline=None)
@given(target=st.text(max_size=50), message=st.text(max_size=200))
def test_log_text_round_trips(target: str, message: str) -> None:
    perf = PerformanceTarget()
    fid = str(uuid.uuid4())
    proc = TelemetryProcessor([perf], log=False)
    proc.get_handle({"FUNCTION_ID": fid}).log("INFO", target, message)
    (entry,) = perf.get_metrics().function_log_entries[fid]
    # hypothesis's text() has no lone surrogates: nothing may be altered.
    assert (entry.target, entry.message) == (target, message)
    assert proc.stats()["lossy_strings"] == 0
