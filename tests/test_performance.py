"""PerformanceTarget: EDGELESS get_metrics semantics, ring buffers, bounds."""

from __future__ import annotations

import time
import uuid
import warnings

import numpy as np
import pytest

from edgeless_telemetry import (
    FunctionTime,
    PerformanceTarget,
    TelemetryHandle,
    TelemetryLogLevel,
    TelemetryProcessor,
)

# Timestamps are extrapolated from the monotonic clock (README): within a
# microsecond of the OS wall clock.
US = 1_000


def test_edgeless_rounds_come_back_in_order_then_empty(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    # Mirrors EDGELESS's own unit test, for every kind.
    before = time.time_ns()
    for i in range(10):
        handle.function_instantiate(i * 1.0)
        handle.function_init(i * 2.0)
        handle.invocation_completed(i * 3.0)
        handle.function_stop(i * 4.0)
        handle.function_transfer(i * 5.0)
        handle.log(TelemetryLogLevel.INFO, "tgt", f"message {i}")
    after = time.time_ns()

    metrics = perf.get_metrics()
    for kind, factor in zip(FunctionTime, [1.0, 2.0, 3.0, 4.0, 5.0], strict=True):
        samples = metrics.function_times[kind][function_id]
        assert samples.values.dtype == np.float64
        assert samples.timestamps_ns.dtype == np.int64
        assert samples.values.tolist() == [i * factor for i in range(10)]
        assert np.all(np.diff(samples.timestamps_ns) >= 0)
        assert before - US <= samples.timestamps_ns[0] and samples.timestamps_ns[-1] <= after + US
    entries = metrics.function_log_entries[function_id]
    assert [e.message for e in entries] == [f"message {i}" for i in range(10)]
    assert all(e.target == "tgt" for e in entries)
    assert all(before - US <= e.timestamp_ns <= after + US for e in entries)

    again = perf.get_metrics()
    assert again.is_empty()
    assert set(again.function_times) == set(FunctionTime)


def test_handle_without_function_id_records_nothing_but_counts(perf: PerformanceTarget) -> None:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n"})
    node.invocation_completed(0.1)
    node.log("INFO", "t", "m")
    node.function_exit(0)  # exit is not a sample: not counted either
    assert perf.get_metrics().is_empty()
    assert perf.stats()["events_without_function_id"] == 2


def test_ring_drops_oldest_and_counts(function_id: str) -> None:
    perf = PerformanceTarget(capacity=100)
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": function_id})
    for i in range(250):
        h.invocation_completed(float(i))
    assert perf.stats()["samples_dropped"] == 150
    assert perf.stats()["pending_samples"] == 100
    values = perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id].values
    assert values.tolist() == [float(i) for i in range(150, 250)]
    # Counters are cumulative; the ring starts over.
    h.invocation_completed(1.0)
    assert perf.stats()["samples_dropped"] == 150
    assert len(perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id]) == 1


def test_memory_stays_bounded_past_capacity(function_id: str) -> None:
    # Pending samples never exceed capacity, however much is recorded; with
    # the 16-byte layout that bounds the buffer's memory.
    perf = PerformanceTarget(capacity=1000)
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": function_id})
    h.observe_many(FunctionTime.EXECUTION, np.full(200_000, 0.5))
    stats = perf.stats()
    assert stats["pending_samples"] == 1000
    assert stats["samples_dropped"] == 199_000


def test_log_entries_bounded_by_count_and_bytes(function_id: str) -> None:
    perf = PerformanceTarget(log_capacity=5, log_bytes=1000)
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": function_id})
    for i in range(8):
        h.log("INFO", "t", f"{i}")
    assert [e.message for e in perf.get_metrics().function_log_entries[function_id]] == [
        "3", "4", "5", "6", "7",
    ]
    for _ in range(4):
        h.log("INFO", "t", "x" * 399)  # 400 bytes each with the target
    entries = perf.get_metrics().function_log_entries[function_id]
    assert len(entries) == 2
    assert perf.stats()["log_entries_dropped"] == 3 + 2


def test_huge_message_is_truncated_at_char_boundary(function_id: str) -> None:
    perf = PerformanceTarget(max_message_bytes=1024)
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": function_id})
    h.log("ERROR", "t", "é" * (5 * 1024 * 1024))  # 10 MB of two-byte chars
    (entry,) = perf.get_metrics().function_log_entries[function_id]
    assert entry.message == "é" * 512
    assert perf.stats()["messages_truncated"] == 1


def test_huge_target_is_truncated_at_char_boundary(function_id: str) -> None:
    perf = PerformanceTarget()
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": function_id})
    h.log("INFO", "é" * 1_000_000, "m")  # a 2 MB target
    h.log("INFO", "edgeless_node::agent", "m")
    long, short = perf.get_metrics().function_log_entries[function_id]
    assert long.target == "é" * 128 and long.message == "m"
    assert short.target == "edgeless_node::agent"
    assert perf.stats()["targets_truncated"] == 1


def test_function_table_is_bounded_and_recycled() -> None:
    perf = PerformanceTarget(max_functions=3)
    proc = TelemetryProcessor([perf], log=False)
    handles = [proc.get_handle({"FUNCTION_ID": str(uuid.uuid4())}) for _ in range(4)]
    for h in handles:
        h.invocation_completed(0.1)
    assert perf.stats()["functions_refused"] == 1
    assert perf.get_metrics().sample_count() == 3
    # Once drained and no handle refers to them, slots are recycled.
    del handles, h
    perf.get_metrics()
    fresh = [proc.get_handle({"FUNCTION_ID": str(uuid.uuid4())}) for _ in range(3)]
    for h in fresh:
        h.invocation_completed(0.2)
    assert perf.get_metrics().sample_count() == 3
    assert perf.stats()["functions_refused"] == 1


def test_function_ids_are_canonical(perf: PerformanceTarget) -> None:
    raw = "1C6E8F0E-6B0A-4B5E-9D4E-2F1F2F6A1B11"
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": raw})
    h.function_init(0.5)
    assert list(perf.get_metrics().function_times[FunctionTime.INIT]) == [raw.lower()]


def test_observe_many_records_with_given_timestamps(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    values = np.array([0.1, float("nan"), 0.3, -1.0])
    stamps = np.array([10, 20, 30, 40], dtype=np.int64)
    assert handle.observe_many(FunctionTime.TRANSFER, values, timestamps_ns=stamps) == 2
    s = perf.get_metrics().function_times[FunctionTime.TRANSFER][function_id]
    assert s.values.tolist() == [0.1, 0.3]
    assert s.timestamps_ns.tolist() == [10, 30]
    with pytest.raises(ValueError, match="timestamps_ns has 1 entries"):
        handle.observe_many(FunctionTime.TRANSFER, values, timestamps_ns=[1])
    with pytest.raises(ValueError, match="FunctionTime"):
        handle.observe_many(9, values)


@pytest.mark.parametrize(
    ("values", "stamps", "error", "message"),
    [
        ("1.5", None, TypeError, "values must be numbers, not text"),
        (["0.1", "0.2"], None, TypeError, "values must be numbers, not text"),
        (b"1", None, TypeError, "values must be numbers, not text"),
        ([0.1], ["10"], TypeError, "timestamps_ns must be numbers, not text"),
        ([[0.1, 0.2]], None, ValueError, "values must be 1-D"),
        ([0.1, 0.2], [[1, 2]], ValueError, "timestamps_ns must be 1-D"),
        # numpy parses these item by item too (a pandas column of str is an
        # object array): they were recorded before.
        (np.array([0.1, "0.2"], dtype=object), None, TypeError, "values must be numbers, not text"),
        (np.array([b"1"], dtype=object), None, TypeError, "values must be numbers, not text"),
        ([0.1], np.array(["10"], dtype=object), TypeError, "timestamps_ns must be numbers, not text"),
        (np.array(["1.5"], dtype=np.dtypes.StringDType()) if hasattr(np, "dtypes")
         and hasattr(np.dtypes, "StringDType") else "1.5", None, TypeError, "values must be numbers, not text"),
    ],
    ids=["str", "list-of-str", "bytes", "str-stamps", "2-D", "2-D-stamps", "object-str", "object-bytes",
         "object-str-stamps", "numpy-StringDType"],
)
def test_observe_many_refuses_text_and_shapes_and_records_nothing(
    perf: PerformanceTarget, handle: TelemetryHandle,
    values: object, stamps: object, error: type[Exception], message: str,
) -> None:
    """numpy alone would read "1.5" as 1.5; text is an unparsed field, so
    the whole call is refused before anything is recorded or counted."""
    assert handle.observe_many(FunctionTime.EXECUTION, [0.5]) == 1
    with pytest.raises(error, match=message):
        handle.observe_many(FunctionTime.EXECUTION, values, timestamps_ns=stamps)
    assert perf.get_metrics().sample_count() == 1  # only the 0.5


def test_observe_many_still_takes_an_object_array_of_numbers(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    from decimal import Decimal

    values = np.array([0.25, Decimal("0.5"), np.float32(0.75), 1], dtype=object)
    assert handle.observe_many(FunctionTime.EXECUTION, values, timestamps_ns=np.array([1, 2, 3, 4], dtype=object)) == 4
    s = perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id]
    assert (s.values.tolist(), s.timestamps_ns.tolist()) == ([0.25, 0.5, 0.75, 1.0], [1, 2, 3, 4])


def test_observe_many_drops_and_counts_samples_whose_timestamp_is_no_time(
    perf: PerformanceTarget, function_id: str
) -> None:
    """NaN, infinite, negative or past-int64 stamps: that sample is dropped
    and counted as an invalid value, the others recorded with their own
    stamps (numpy alone would cast NaN to an arbitrary int64, warning)."""
    proc = TelemetryProcessor([perf], log=False)
    h = proc.get_handle({"FUNCTION_ID": function_id})
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    floats = [10.0, float("nan"), float("inf"), -1.0, 1e30, 60.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert h.observe_many(FunctionTime.TRANSFER, values, timestamps_ns=floats) == 2
        assert h.observe_many(FunctionTime.TRANSFER, [0.7, 0.8], timestamps_ns=[-5, 80]) == 1
        assert h.observe_many(FunctionTime.TRANSFER, [0.9], timestamps_ns=np.uint64(2**64 - 1)) == 0
    s = perf.get_metrics().function_times[FunctionTime.TRANSFER][function_id]
    assert s.values.tolist() == [0.1, 0.6, 0.8]
    assert s.timestamps_ns.tolist() == [10, 60, 80]
    assert proc.stats()["dropped_invalid_value"] == 4 + 1 + 1


def test_observe_many_keeps_the_latest_float_timestamps_an_int64_holds(
    perf: PerformanceTarget, function_id: str
) -> None:
    """Every float below 2**63 is an int64 time; the check cut off at
    9.223372036854775e18, which rounds to 2**63 - 1024, so that one (the
    latest float time there is) was dropped as "no time"."""
    proc = TelemetryProcessor([perf], log=False)
    h = proc.get_handle({"FUNCTION_ID": function_id})
    stamps = np.array([2.0**63 - 2048, 2.0**63 - 1024, 2.0**63])
    assert h.observe_many(FunctionTime.TRANSFER, [0.1, 0.2, 0.3], timestamps_ns=stamps) == 2
    s = perf.get_metrics().function_times[FunctionTime.TRANSFER][function_id]
    assert s.timestamps_ns.tolist() == [2**63 - 2048, 2**63 - 1024]
    assert proc.stats()["dropped_invalid_value"] == 1  # 2**63 itself


def test_observe_many_drops_python_ints_past_64_bits_as_no_time(
    perf: PerformanceTarget, function_id: str
) -> None:
    """numpy keeps an int past 64 bits as an object, and its int64 cast
    raised OverflowError ("Python int too large to convert to C long") for
    the whole call, recording nothing: such a stamp is past int64 (or
    before the epoch) like 2**63, dropped and counted; the others of that
    array are read as numpy reads them (int(item))."""
    from decimal import Decimal

    proc = TelemetryProcessor([perf], log=False)
    h = proc.get_handle({"FUNCTION_ID": function_id})
    stamps = [10, 2**64, -(2**70), Decimal(20), 10**400, 30.9]
    assert h.observe_many(FunctionTime.TRANSFER, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], timestamps_ns=stamps) == 3
    s = perf.get_metrics().function_times[FunctionTime.TRANSFER][function_id]
    assert (s.values.tolist(), s.timestamps_ns.tolist()) == ([0.1, 0.4, 0.6], [10, 20, 30])
    assert proc.stats()["dropped_invalid_value"] == 3
    with pytest.raises(TypeError):  # as numpy's cast: None is no int
        h.observe_many(FunctionTime.TRANSFER, [0.1, 0.2], timestamps_ns=[2**64, None])


def test_observe_many_takes_a_scalar_as_one_value(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    assert handle.observe_many(FunctionTime.EXECUTION, 0.25, timestamps_ns=7) == 1
    s = perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id]
    assert (s.values.tolist(), s.timestamps_ns.tolist()) == ([0.25], [7])


def test_drained_arrays_are_writable_and_independent(
    perf: PerformanceTarget, handle: TelemetryHandle, function_id: str
) -> None:
    handle.invocation_completed(0.25)
    s = perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id]
    s.values[0] = 1.0  # the caller owns the arrays
    handle.invocation_completed(0.5)
    assert perf.get_metrics().function_times[FunctionTime.EXECUTION][function_id].values[0] == 0.5


@pytest.mark.parametrize("bad", ["capacity", "log_capacity", "max_functions"])
def test_constructor_rejects_zero_bounds(bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        PerformanceTarget(**{bad: 0})  # type: ignore[arg-type]
