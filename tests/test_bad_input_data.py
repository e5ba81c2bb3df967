"""Bad input and misuse on the data plane found by review: each test failed
before its fix (a refused function's handle lost its events uncounted and
for good; a `buckets` iterable was read to its end before its length was
checked; a reporter interval its thread cannot wait killed the thread; a
reporter stopped before it started never sent after start(); Ctrl-C or
SIGTERM landing inside a target was swallowed; a NUL in a field made our
CSV files unreadable on Python 3.10)."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edgeless_telemetry
from edgeless_telemetry import (
    ControlPlaneTracer,
    FunctionTime,
    NodeReporter,
    OrchestratorCollector,
    PerformanceTarget,
    PrometheusTarget,
    TelemetryEvent,
    TelemetryProcessor,
    _core,
)


def test_refused_function_counts_each_event_and_is_stored_once_a_slot_frees() -> None:
    perf = PerformanceTarget(max_functions=1)
    proc = TelemetryProcessor([perf], log=False)
    first, late = str(uuid.uuid4()), str(uuid.uuid4())
    a = proc.get_handle({"FUNCTION_ID": first})
    a.invocation_completed(0.1)
    b = proc.get_handle({"FUNCTION_ID": late})  # the table is full
    assert perf.stats()["functions_refused"] == 0  # nothing lost yet
    for _ in range(5):
        b.invocation_completed(0.2)
    b.log("INFO", "t", "refused too")
    b.function_exit(0)  # not stored by this target anyway: not counted
    # The generic path counts the same way: one per event.
    b.observe(TelemetryEvent.function_init(0.2), {"FUNCTION_ID": late})
    assert perf.stats()["functions_refused"] == 7
    times = perf.get_metrics().function_times[FunctionTime.EXECUTION]
    assert list(times) == [first]
    # `a` goes and its slot is freed by the drain above: `b` gets it at its
    # next event, no new handle needed.
    del a
    perf.get_metrics()
    b.invocation_completed(0.3)
    b.log("INFO", "t", "kept")
    m = perf.get_metrics()
    assert m.function_times[FunctionTime.EXECUTION][late].values.tolist() == [0.3]
    assert [e.message for e in m.function_log_entries[late]] == ["kept"]
    assert perf.stats()["functions_refused"] == 7
    # While `b` holds the slot, another function is refused, counted.
    proc.get_handle({"FUNCTION_ID": first}).function_stop(0.1)
    assert perf.stats()["functions_refused"] == 8


def test_buckets_are_read_no_further_than_the_longest_list_allowed() -> None:
    pulled = 0

    def endless() -> Iterator[float]:
        # Stands for range(10**9): before the fix it was read to its end
        # (8 GB of floats; under a memory limit the process aborted).
        nonlocal pulled
        while True:
            pulled += 1
            if pulled > 10_000:
                raise RuntimeError("read far past the 128-bucket limit")
            yield float(pulled)

    with pytest.raises(ValueError, match="at most 128 buckets"):
        PrometheusTarget(buckets=endless())
    assert pulled <= 130
    # The longest list allowed still works: 128 bounds and a trailing +Inf.
    bounds = [float(i) for i in range(1, 129)]
    prom = PrometheusTarget(buckets=[*bounds, float("inf")])
    fn = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": "n", "FUNCTION_ID": str(uuid.uuid4())})
    fn.invocation_completed(127.5, event_type="CALL")
    assert b'le="127.0"} 0\n' in prom.render() and b'le="128.0"} 1\n' in prom.render()
    with pytest.raises(ValueError, match="at most 128 buckets"):
        PrometheusTarget(buckets=[*bounds, 129.0])


@pytest.mark.parametrize("interval_s", [1e10, 1e20])
def test_reporter_refuses_an_interval_its_thread_cannot_wait(interval_s: float) -> None:
    # Past threading.TIMEOUT_MAX the thread's wait raised and the thread
    # died with a traceback (1e10); past 2**64 / 3 the constructor raised
    # OverflowError "int too big to convert" about an argument never given.
    with pytest.raises(ValueError, match="interval_s must be at most threading.TIMEOUT_MAX"):
        NodeReporter(PerformanceTarget(), "http://127.0.0.1:1", "n", interval_s=interval_s)
    NodeReporter(PerformanceTarget(), "http://127.0.0.1:1", "n", interval_s=threading.TIMEOUT_MAX)


def test_reporter_stopped_before_it_started_still_starts(collectors: Any) -> None:
    # stop() before start() (a cleanup path, or a final send on demand)
    # left the stop flag set: start() then ran a thread that ended at once,
    # and nothing recorded later was sent, with no error anywhere.
    col = collectors()
    perf = PerformanceTarget()
    fn = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": str(uuid.uuid4())})
    reporter = NodeReporter(perf, col.url, "node-1", interval_s=0.05)
    assert reporter.stop()
    reporter.start()
    try:
        fn.invocation_completed(0.1)
        deadline = time.monotonic() + 10
        while reporter.stats()["samples_sent"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert reporter.stats()["samples_sent"] == 1
        with pytest.raises(RuntimeError, match="already started"):
            reporter.start()
    finally:
        reporter.stop()


def test_an_int_too_large_for_a_float_is_an_invalid_value_not_a_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It was counted as a wrong type and logged as "must be a float, got
    # int", although ints are durations like any other number.
    proc = TelemetryProcessor([], log=False)
    h = proc.get_handle({})
    with caplog.at_level(logging.WARNING, logger="edgeless_telemetry"):
        h.invocation_completed(10**400)
        h.function_stop(-(10**400))
    h.function_init(10**300)  # fits a float: accepted
    stats = proc.stats()
    assert (stats["dropped_invalid_value"], stats["dropped_invalid_type"]) == (2, 0)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "must be finite, got int too large for a float" in warning


class Signalling:
    """A Python target during whose ``handle`` a signal arrives (as Ctrl-C
    or SIGTERM do while a target runs): its Python handler then runs, and
    raises, inside the target."""

    def __init__(self, signum: int, at_call: int = 1) -> None:
        self.signum, self.at_call, self.calls = signum, at_call, 0

    def handle(self, event: TelemetryEvent, tags: dict[str, str]) -> None:
        self.calls += 1
        if self.calls == self.at_call:
            os.kill(os.getpid(), self.signum)
            for _ in range(1000):  # the handler runs at a bytecode boundary
                pass


class SignallingHandler(logging.Handler):
    """A ``logging`` handler during which SIGTERM arrives."""

    def emit(self, record: logging.LogRecord) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt; SIGTERM calls sys.exit(3)."""

    def on_term(signum: int, frame: object) -> None:
        sys.exit(3)

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, on_term)
    yield
    signal.signal(signal.SIGINT, old_int)
    signal.signal(signal.SIGTERM, old_term)


@pytest.mark.usefixtures("signal_handlers")
def test_an_interrupt_inside_a_target_reaches_the_caller(function_id: str) -> None:
    # Swallowed before: counted as a target error (or printed as
    # unraisable by the logging target), and the program went on as if
    # Ctrl-C or SIGTERM had never come.
    perf = PerformanceTarget()
    target = Signalling(signal.SIGINT)
    proc = TelemetryProcessor([target, perf], log=False)
    fn = proc.get_handle({"FUNCTION_ID": function_id})
    with pytest.raises(KeyboardInterrupt):
        fn.invocation_completed(0.1)
    fn.invocation_completed(0.2)  # nothing left over from the first
    target.calls = 0
    with pytest.raises(KeyboardInterrupt), fn.invocation():
        pass
    target.calls, target.at_call = 0, 2
    with pytest.raises(KeyboardInterrupt):
        fn.observe_many(FunctionTime.INIT, [0.3, 0.4, 0.5])
    assert proc.stats()["target_errors"] == 0
    # The targets after the interrupted one still recorded each event;
    # observe_many stopped at the value the interrupt came with.
    times = perf.get_metrics().function_times
    assert times[FunctionTime.EXECUTION][function_id].values.tolist()[:2] == [0.1, 0.2]
    assert len(times[FunctionTime.EXECUTION][function_id]) == 3
    assert times[FunctionTime.INIT][function_id].values.tolist() == [0.3, 0.4]


@pytest.mark.usefixtures("signal_handlers")
def test_sigterm_inside_a_logging_handler_exits(function_id: str) -> None:
    perf = PerformanceTarget()
    proc = TelemetryProcessor([perf])  # log=True: log entries go to logging too
    fn = proc.get_handle({"FUNCTION_ID": function_id})
    logger = logging.getLogger("edgeless_telemetry")
    handler = SignallingHandler()
    logger.addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exited:
            fn.log("ERROR", "t", "stopping")  # ERROR: passes the default level
    finally:
        logger.removeHandler(handler)
    assert exited.value.code == 3
    fn.log("INFO", "t", "after")
    entries = perf.get_metrics().function_log_entries[function_id]
    assert [e.message for e in entries] == ["stopping", "after"]


class Raises:
    """A value whose conversions raise ``exc``: what a user's ``__float__``,
    ``__index__``, ``__str__`` or ``__repr__`` does when Ctrl-C (or a SIGTERM
    handler's ``sys.exit()``) lands inside it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def _raise(self) -> Any:
        raise self.exc

    __float__ = __index__ = __str__ = __repr__ = _raise


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)], ids=type)
def test_an_interrupt_inside_a_value_s_conversion_reaches_the_caller(
    function_id: str, exc: BaseException
) -> None:
    # Counted as a bad value before (dropped_invalid_type or _value), and
    # the program went on as if the signal had never come.
    perf = PerformanceTarget()
    proc = TelemetryProcessor([perf], log=False)
    fn = proc.get_handle({"FUNCTION_ID": function_id})
    calls = [  # each with a good value for the call after the interrupt
        (fn.invocation_completed, 0.5),
        (fn.function_init, 0.25),
        (fn.function_exit, 0),  # FunctionExitStatus.OK
        (lambda v: fn.log(v, "t", "m"), "INFO"),
        (lambda v: fn.log("INFO", v, "m"), "t"),
        (lambda v: fn.log("INFO", "t", v), "m"),
    ]
    for call, good in calls:
        with pytest.raises(type(exc)):
            call(Raises(exc))
        call(good)  # nothing left over from the interrupt
    stats = proc.stats()
    assert stats["dropped_invalid_type"] == stats["dropped_invalid_value"] == 0, stats
    metrics = perf.get_metrics()  # drains
    times = metrics.function_times
    assert times[FunctionTime.EXECUTION][function_id].values.tolist() == [0.5]
    assert times[FunctionTime.INIT][function_id].values.tolist() == [0.25]
    assert len(metrics.function_log_entries[function_id]) == 3
    # An ordinary exception in the same places is still a bad value.
    before = proc.stats()
    fn.invocation_completed(Raises(ValueError("no")))
    fn.log("INFO", "t", Raises(ValueError("no")))
    after = proc.stats()
    assert after["dropped_invalid_type"] == before["dropped_invalid_type"] + 2


def test_debug_logging_of_events_is_noticed_after_a_future_timestamp(function_id: str) -> None:
    # The logging target re-reads whether DEBUG is on once a second of
    # event time; an observe_many stamp far in the future put that second
    # there, and DEBUG switched on afterwards was never noticed.
    logger = logging.getLogger("edgeless_telemetry")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    try:
        logger.setLevel(logging.INFO)
        fn = TelemetryProcessor([PerformanceTarget()]).get_handle({"FUNCTION_ID": function_id})
        fn.observe_many(FunctionTime.EXECUTION, [0.1], timestamps_ns=[2**62])
        logger.setLevel(logging.DEBUG)
        fn.invocation_completed(0.25)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("0.25" in r for r in records), records


def _python310() -> str | None:
    """A CPython 3.10 (pyenv's, else one on PATH), or None: the csv module
    changed in 3.11."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    for exe in found[-1:] + [p for p in [shutil.which("python3.10")] if p]:
        probe = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                               capture_output=True, text=True, timeout=30)
        if probe.stdout.strip() == "True":
            return exe
    return None


PY310 = _python310()


@pytest.mark.skipif(PY310 is None, reason="needs a python3.10 to run the readers under")
def test_files_with_nul_are_read_back_on_python_3_10(tmp_path: Path, function_id: str) -> None:
    # Python 3.10's csv module refuses a line holding NUL, so one NUL in a
    # span name or log message made `trace summary`/`trace chrome` and
    # `summary --dataset-path` fail on the whole file there.
    trace = tmp_path / "trace.csv"
    tracer = ControlPlaneTracer(trace)
    with tracer.start_span("place\0x") as span:
        span.log("INFO", "a\0b,\n\"c\"")
    tracer.close()
    perf = PerformanceTarget()
    fn = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "n", "FUNCTION_ID": function_id})
    fn.invocation_completed(0.25)
    fn.log("INFO", "t\0", "x\0y")
    (batch,) = _core.drain_encode(perf, "node-1", 42, 1, 0, 1 << 24)
    prefix = str(tmp_path / "d_")
    core = _core.CollectorCore(dataset_path=prefix)
    assert core.ingest(bytes(batch[3]))[0] == 200
    core.close(0)
    package = Path(edgeless_telemetry.__file__).parent
    script = f"""
import json, sys, types
# The readers need no numpy (not installed for 3.10 here), nor the
# extension: load their modules without the package's __init__.
sys.modules["numpy"] = types.ModuleType("numpy")
package = types.ModuleType("edgeless_telemetry")
package.__path__ = [{str(package)!r}]
sys.modules["edgeless_telemetry"] = package
from edgeless_telemetry import summary, trace_analysis
spans = trace_analysis.read_spans([{str(trace)!r}])
series, logs = summary.read_dataset({prefix!r})
print(json.dumps([[s.name, [l.message for l in s.logs]] for s in spans.values()]
                 + [sorted(v for vs in series.values() for v in vs), logs]))
"""
    out = subprocess.run([str(PY310), "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["place\0x", ["a\0b,\n\"c\""]], [0.25], {function_id: 1}]


def test_reporter_flush_names_a_bad_deadline() -> None:
    # A NaN deadline raised "budget_s must be a number of seconds", an
    # argument of the core the caller never gave; a str a TypeError about
    # subtracting a float.
    reporter = NodeReporter(PerformanceTarget(), "http://127.0.0.1:1", "n", timeout_s=0.2)
    for bad in [float("nan"), "soon"]:
        with pytest.raises(ValueError, match="deadline must be a time.monotonic"):
            reporter.flush(deadline=bad)  # type: ignore[arg-type]
    assert reporter.flush(deadline=time.monotonic() + 5)  # nothing pending


def test_a_const_label_with_a_lone_surrogate_is_named() -> None:
    # It raised TypeError "const_labels must map str to str" for a str.
    with pytest.raises(ValueError, match="const label 'site' is not valid UTF-8"):
        PrometheusTarget(const_labels={"site": "a\ud800"})
    with pytest.raises(TypeError, match="must map str to str"):
        PrometheusTarget(const_labels={"site": b"a"})  # type: ignore[dict-item]
    assert b'site="a\\"b"' in PrometheusTarget(const_labels={"site": 'a"b'}).render()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: PerformanceTarget(capacity=v), "capacity"),
        (lambda v: PerformanceTarget(log_bytes=v), "log_bytes"),
        (lambda v: PerformanceTarget(max_functions=v), "max_functions"),
        (lambda v: PrometheusTarget("", max_series=v), "max_series"),
        (lambda v: PrometheusTarget("", native_max_buckets=v), "native_max_buckets"),
        (lambda v: ControlPlaneTracer(None, max_pending_bytes=v), "max_pending_bytes"),
        (lambda v: ControlPlaneTracer(None, max_message_bytes=v), "max_message_bytes"),
    ],
)
def test_a_limit_out_of_range_names_its_argument(make: Any, name: str) -> None:
    """A negative or huge int was a bare OverflowError ("can't convert
    negative int to unsigned") that did not say which limit was wrong."""
    for value in (-1, 2**70):
        with pytest.raises(ValueError, match=rf"\b{name} must be an int from \d+ to \d+, got {value}"):
            make(value)
    # In the message itself, not only in an exception note (PyO3 0.29+),
    # which Python 3.10 does not have.
    with pytest.raises(TypeError) as wrong_type:
        make("10")
    assert str(wrong_type.value).endswith(f"{name} must be an int, got str")


URL = "http://127.0.0.1:0"
REPORTER_URL = "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("make", "error", "owner", "name"),
    [
        (lambda: PrometheusTarget(9100), TypeError, "PrometheusTarget", "metrics_url"),
        (lambda: PrometheusTarget(namespace=1), TypeError, "PrometheusTarget", "namespace"),
        (lambda: PrometheusTarget(const_labels=[("a", "b")]), TypeError, "PrometheusTarget", "const_labels"),
        (lambda: PrometheusTarget(native="yes"), TypeError, "PrometheusTarget", "native"),
        (lambda: PrometheusTarget(native_schema=2**40), OverflowError, "PrometheusTarget", "native_schema"),
        (lambda: PrometheusTarget(native_zero_threshold="0"), TypeError, "PrometheusTarget",
         "native_zero_threshold"),
        (lambda: PrometheusTarget(web_config=5), TypeError, "PrometheusTarget", "web_config"),
        (lambda: PrometheusTarget().serve(9100), TypeError, "PrometheusTarget.serve", "metrics_url"),
        (lambda: TelemetryProcessor([], log="no"), TypeError, "TelemetryProcessor", "log"),
        (lambda: TelemetryProcessor([]).get_handle([("NODE_ID", "n")]), TypeError, "get_handle", "tags"),
        (lambda: TelemetryProcessor([]).get_handle().fork(None), TypeError, "fork", "child_tags"),
        (lambda: ControlPlaneTracer(None, append=1), TypeError, "ControlPlaneTracer", "append"),
        (lambda: NodeReporter(5, REPORTER_URL, "n"), TypeError, "NodeReporter", "target"),
        (lambda: NodeReporter(PerformanceTarget(), 9, "n"), TypeError, "NodeReporter", "orchestrator_url"),
        (lambda: NodeReporter(PerformanceTarget(), REPORTER_URL, "n", max_pending_bytes=-1),
         ValueError, "NodeReporter", "max_pending_bytes"),
        (lambda: NodeReporter(PerformanceTarget(), REPORTER_URL, "n", max_batch_bytes="1"),
         TypeError, "NodeReporter", "max_batch_bytes"),
        (lambda: NodeReporter(PerformanceTarget(), "https://127.0.0.1:9", "n", ca_file=5),
         TypeError, "NodeReporter", "ca_file"),
        (lambda: OrchestratorCollector(7100), TypeError, "OrchestratorCollector", "listen_url"),
        (lambda: OrchestratorCollector(URL, redis_url=b"redis://x"), TypeError, "OrchestratorCollector",
         "redis_url"),
        (lambda: OrchestratorCollector(URL, append="no"), TypeError, "OrchestratorCollector", "append"),
        (lambda: OrchestratorCollector(URL, layout=1), TypeError, "OrchestratorCollector", "layout"),
        (lambda: OrchestratorCollector(URL, max_body_bytes="1"), TypeError, "OrchestratorCollector",
         "max_body_bytes"),
        (lambda: OrchestratorCollector(URL, max_decoded_bytes=0), ValueError, "OrchestratorCollector",
         "max_decoded_bytes"),
        (lambda: OrchestratorCollector(URL, redis_ack_timeout_s="1"), TypeError, "OrchestratorCollector",
         "redis_ack_timeout_s"),
        (lambda: OrchestratorCollector(URL, token=1), TypeError, "OrchestratorCollector", "token"),
        (lambda: OrchestratorCollector(URL, node_tokens=[("n", "t")]), TypeError, "OrchestratorCollector",
         "node_tokens"),
        (lambda: OrchestratorCollector(URL, web_config=1), TypeError, "OrchestratorCollector", "web_config"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_set_up_argument_of_the_wrong_type_is_named_in_the_message(
    make: Any, error: type[Exception], owner: str, name: str
) -> None:
    """In the message, not only in PyO3's exception note: Python 3.10 (as on
    Ubuntu 22.04 nodes) shows no notes, and `PrometheusTarget(9100)` said
    only "'int' object is not an instance of 'str'"; `OrchestratorCollector(7100)`
    raised AttributeError from inside urllib."""
    with pytest.raises(error) as raised:
        make()
    assert str(raised.value).startswith(f"{owner}: {name}"), str(raised.value)


def test_a_collector_s_bad_argument_is_found_before_the_dataset_is_touched(tmp_path: Path) -> None:
    prefix = tmp_path / "d_"
    with pytest.raises(TypeError, match="max_connections"):
        OrchestratorCollector(URL, dataset_path=str(prefix), max_connections="8")
    assert list(tmp_path.iterdir()) == []


class _TwoArgError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(code, why)


class _BadIndex:
    def __index__(self) -> int:
        raise _TwoArgError(7, "no index today")


def test_a_named_argument_s_error_keeps_its_message_whatever_its_class_takes(tmp_path: Path) -> None:
    """The error is made again with the argument's name in its message. A
    class that takes more than a message (a lone surrogate's
    UnicodeEncodeError, a user's own exception) raised instead "TypeError:
    function takes exactly 5 arguments (1 given)", the message lost: now it
    is the nearest base class that takes one, the original its cause."""
    for make, owner, name in [
        (lambda: PrometheusTarget("\ud800"), "PrometheusTarget", "metrics_url"),
        (lambda: PrometheusTarget(namespace="a\udc80"), "PrometheusTarget", "namespace"),
        (lambda: OrchestratorCollector(URL, dataset_path=str(tmp_path / "d\ud800")), "OrchestratorCollector",
         "dataset_path"),
    ]:
        with pytest.raises(UnicodeError) as raised:
            make()
        assert str(raised.value).startswith(f"{owner}: {name}: "), str(raised.value)
        assert "surrogates not allowed" in str(raised.value)
        assert isinstance(raised.value.__cause__, UnicodeEncodeError)
    with pytest.raises(Exception) as raised:
        PrometheusTarget(native_schema=_BadIndex())  # type: ignore[arg-type]
    assert str(raised.value) == "PrometheusTarget: native_schema: (7, 'no index today')"
    assert isinstance(raised.value.__cause__, _TwoArgError)
    assert list(tmp_path.iterdir()) == []


def test_a_collector_takes_numpy_ints_for_its_sizes_as_before() -> None:
    """The wrapper's own type check took only `int`: numpy.int64 sizes
    (read from a config array, say), which the core took, raised
    "max_body_bytes must be an int, got int64"."""
    import numpy as np

    collector = OrchestratorCollector(
        URL, max_body_bytes=np.int64(1 << 20), max_inflight_bytes=np.int64(1 << 22),
        max_connections=np.int32(8), max_redis_queue_bytes=np.int64(1 << 20))  # type: ignore[arg-type]
    try:
        assert collector.url.startswith("http://127.0.0.1:")
    finally:
        collector.stop()
    for bad in (1.0, "8"):
        with pytest.raises(TypeError, match="OrchestratorCollector: max_connections must be an int"):
            OrchestratorCollector(URL, max_connections=bad)  # type: ignore[arg-type]
    # A bool is an int here, as for every size the core takes (max_redis_queue_bytes, ...).
    OrchestratorCollector(URL, max_connections=True).stop()
