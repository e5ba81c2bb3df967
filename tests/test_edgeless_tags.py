"""Prometheus series exactly as EDGELESS's own PrometheusTarget makes them.

The expectation in each case is what EDGELESS's
`edgeless_telemetry/src/prometheus_target.rs` does with the same tags:
- `function_count` moves only with both NODE_ID and FUNCTION_TYPE (no
  RESOURCE_CLASS_TYPE fallback);
- `execution_times` needs NODE_ID, FUNCTION_ID and EVENT_TYPE; its
  `function_type` is FUNCTION_TYPE, else RESOURCE_CLASS_TYPE, else "";
- `transfer_times` needs NODE_ID and FUNCTION_ID;
- the target ends the chain (FINAL) for those four events even when it
  records nothing.
What EDGELESS ignores we ignore too, but count in
`edgeless_telemetry_dropped_total{target="prometheus",reason="missing_tag"}`.
"""

from __future__ import annotations

import pytest

from edgeless_telemetry import (
    ChainResult,
    FunctionExitStatus,
    PrometheusTarget,
    TelemetryEvent,
    TelemetryProcessor,
)
from prom_support import samples

FID = "1c6e8f0e-6b0a-4b5e-9d4e-2f1f2f6a1b11"


class Recorder:
    """A Python target after the PrometheusTarget: sees what the chain passes on."""

    def __init__(self) -> None:
        self.seen = 0

    def handle(self, event: object, tags: dict[str, str]) -> ChainResult:
        self.seen += 1
        return ChainResult.PASSED


def series(prom: PrometheusTarget) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in samples(prom.render().decode()).items()
            if k[0] in ("function_count", "execution_times_count", "transfer_times_count")}


def missing(prom: PrometheusTarget) -> float:
    got = samples(prom.render().decode())
    return got[("edgeless_telemetry_dropped_total",
                frozenset({("target", "prometheus"), ("reason", "missing_tag")}))]


# tags -> the series EDGELESS creates for one instantiate, one invocation
# observed with event_tags {EVENT_TYPE: "CALL"}, and one transfer.
CASES = [
    ({"NODE_ID": "n", "FUNCTION_ID": FID, "FUNCTION_TYPE": "py"},
     {("function_count", (("function_type", "py"), ("node_id", "n"))): 1.0,
      ("execution_times_count", (("function_id", FID), ("function_type", "py"),
                                 ("invocation_type", "Call"), ("node_id", "n"))): 1.0,
      ("transfer_times_count", (("function_id", FID), ("node_id", "n"))): 1.0}, 0),
    ({"NODE_ID": "n", "FUNCTION_ID": FID, "RESOURCE_CLASS_TYPE": "gpu"},
     {("execution_times_count", (("function_id", FID), ("function_type", "gpu"),
                                 ("invocation_type", "Call"), ("node_id", "n"))): 1.0,
      ("transfer_times_count", (("function_id", FID), ("node_id", "n"))): 1.0}, 1),
    ({"NODE_ID": "n", "FUNCTION_ID": FID},
     {("execution_times_count", (("function_id", FID), ("function_type", ""),
                                 ("invocation_type", "Call"), ("node_id", "n"))): 1.0,
      ("transfer_times_count", (("function_id", FID), ("node_id", "n"))): 1.0}, 1),
    ({"FUNCTION_ID": FID, "FUNCTION_TYPE": "py"}, {}, 3),
    ({"NODE_ID": "n", "FUNCTION_TYPE": "py"},
     {("function_count", (("function_type", "py"), ("node_id", "n"))): 1.0}, 2),
]


@pytest.mark.parametrize(("tags", "want", "ignored"), CASES)
def test_series_as_edgeless_makes_them(tags: dict[str, str], want: dict[object, float],
                                       ignored: int) -> None:
    prom = PrometheusTarget("")
    after = Recorder()
    h = TelemetryProcessor([prom, after], log=False).get_handle(tags)
    h.observe(TelemetryEvent.function_instantiate(0.01))
    h.observe(TelemetryEvent.function_invocation_completed(0.2), {"EVENT_TYPE": "CALL"})
    h.observe(TelemetryEvent.function_transfer(0.1))
    got = {(name, tuple(sorted(labels))): v for (name, labels), v in series(prom).items()}
    assert got == want
    assert missing(prom) == ignored
    assert after.seen == 0  # FINAL for every one of them, recorded or not


def test_invocation_without_event_type_is_not_recorded_but_counted() -> None:
    prom = PrometheusTarget("")
    after = Recorder()
    h = TelemetryProcessor([prom, after], log=False).get_handle(
        {"NODE_ID": "n", "FUNCTION_ID": FID, "FUNCTION_TYPE": "py"})
    h.observe(TelemetryEvent.function_invocation_completed(0.2))  # no EVENT_TYPE anywhere
    assert series(prom) == {}
    assert missing(prom) == 1 and after.seen == 0
    # The fast method names an invocation: a cast unless told otherwise.
    h.invocation_completed(0.2)
    h.invocation_completed(0.2, event_type="CALL")
    kinds = {dict(labels)["invocation_type"]: v for (name, labels), v in series(prom).items()
             if name == "execution_times_count"}
    assert kinds == {"Cast": 1.0, "Call": 1.0}
    # A handle tagged EVENT_TYPE is typed for observe() too.
    t = h.fork({"EVENT_TYPE": "CALL"})
    t.observe(TelemetryEvent.function_invocation_completed(0.2))
    assert missing(prom) == 1


def test_exit_without_function_type_moves_nothing() -> None:
    prom = PrometheusTarget("")
    h = TelemetryProcessor([prom], log=False).get_handle(
        {"NODE_ID": "n", "FUNCTION_ID": FID, "RESOURCE_CLASS_TYPE": "gpu"})
    h.function_instantiate(0.01)
    h.function_exit(FunctionExitStatus.OK)
    assert not [k for k in series(prom) if k[0] == "function_count"]
    assert missing(prom) == 2


def test_wrong_types_on_the_hot_path_are_counted_not_raised() -> None:
    processor = TelemetryProcessor([PrometheusTarget("")], log=False)
    h = processor.get_handle({"NODE_ID": "n", "FUNCTION_ID": FID})
    h.invocation_completed(0.1, event_type=5)  # type: ignore[arg-type]
    h.observe(TelemetryEvent.function_transfer(0.1), event_tags=["EVENT_TYPE"])  # type: ignore[arg-type]
    h.observe(TelemetryEvent.function_transfer(0.1), event_tags={"A": 5})  # type: ignore[dict-item]
    assert processor.stats()["dropped_invalid_type"] == 3
