"""Label values in Prometheus series are capped, so `max_series` bounds a
rendering: a longer value is refused and counted, never rendered."""

from __future__ import annotations

import logging
import uuid

import pytest

from edgeless_telemetry import PerformanceTarget, PrometheusTarget, TelemetryEvent, TelemetryProcessor
from prom_support import sample

CAP = 256  # rust/prometheus/registry.rs MAX_LABEL_VALUE_BYTES
MAX_SERIES = 10_000  # PrometheusTarget's default
MEASURED = 1_000  # series per family measured (the size per series is exact)
REFUSED = "edgeless_telemetry_series_refused_total"


def tags(node: str = "n", fid: str | None = None, ftype: str = "f") -> dict[str, str]:
    return {"NODE_ID": node, "FUNCTION_ID": fid or str(uuid.uuid4()), "FUNCTION_TYPE": ftype}


@pytest.mark.parametrize(
    ("fits", "too_long"),
    [
        ("a" * CAP, "a" * (CAP + 1)),
        ("é" * (CAP // 2), "é" * (CAP // 2) + "a"),  # bytes, not characters
        ('"' * (CAP // 2), '"' * (CAP // 2 + 1)),  # as written: escaped, two bytes each
    ],
    ids=["ascii", "utf8", "escaped"],
)
def test_a_label_value_over_the_cap_is_refused_and_counted(
    fits: str, too_long: str, caplog: pytest.LogCaptureFixture
) -> None:
    perf = PerformanceTarget()
    prom = PrometheusTarget()
    proc = TelemetryProcessor([perf, prom], log=False)
    ok, fid_ok = proc.get_handle(tags(ftype=fits)), str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="edgeless_telemetry"):
        for node, ftype in [("n", fits), (too_long, "f"), ("n", too_long), ("m", too_long)]:
            h = proc.get_handle(tags(node=node, fid=fid_ok, ftype=ftype))
            h.function_instantiate(0.1)
            h.invocation_completed(0.2)
            h.invocation_completed(0.3)  # the refusal is counted once per handle
            h.function_transfer(0.4)
    ok.invocation_completed(0.5)
    body = prom.render().decode()
    stats = prom.stats()
    # Refused once per handle and family where a value it carries is too
    # long (transfer_times has no function_type: only the long node there).
    assert stats["execution_times_series"] == 2 and stats["execution_times_refused"] == 3
    assert stats["function_count_series"] == 1 and stats["function_count_refused"] == 3
    assert stats["transfer_times_series"] == 2 and stats["transfer_times_refused"] == 1
    assert sample(body, REFUSED, family="execution_times") == 3
    assert sample(body, REFUSED, family="transfer_times") == 1
    assert too_long.replace('"', '\\"') not in body
    # Only Prometheus refuses: the other targets keep every event.
    assert perf.stats()["samples_recorded"] == 4 * 4 + 1
    warnings = [r.getMessage() for r in caplog.records if "over 256 bytes" in r.getMessage()]
    assert len(warnings) == 1, warnings


def test_non_uuid_function_id_from_event_tags_is_capped_too() -> None:
    prom = PrometheusTarget()
    h = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": "n", "FUNCTION_TYPE": "f"})
    # Per-event tags are not checked for a UUID (as in EDGELESS).
    h.observe(TelemetryEvent.function_invocation_completed(0.1), {"FUNCTION_ID": "x" * CAP, "EVENT_TYPE": "CAST"})
    h.observe(TelemetryEvent.function_invocation_completed(0.1), {"FUNCTION_ID": "x" * (CAP + 1), "EVENT_TYPE": "CAST"})
    assert prom.stats()["execution_times_series"] == 1
    assert prom.stats()["execution_times_refused"] == 1


def rendered_bytes(fill: str) -> int:
    """Bytes per series of one family, every label value at the cap."""
    prom = PrometheusTarget()
    proc = TelemetryProcessor([prom], log=False)
    empty = len(prom.render())
    ftype, fid = "t" * CAP, "i" * CAP
    for i in range(MEASURED):
        node = f"{i:06d}".ljust(CAP, "n")
        h = proc.get_handle({"NODE_ID": node, "FUNCTION_TYPE": ftype})
        if fill == "function_count":
            h.function_instantiate(0.1)
        elif fill == "execution_times":
            event = TelemetryEvent.function_invocation_completed(12345.678)
            h.observe(event, {"FUNCTION_ID": fid, "EVENT_TYPE": "CALL"})
        else:
            h.observe(TelemetryEvent.function_transfer(12345.678), {"FUNCTION_ID": fid})
    assert prom.stats()[f"{fill}_series"] == MEASURED
    size = len(prom.render()) - empty
    assert size % MEASURED == 0
    return size // MEASURED


def test_worst_case_rendering_per_family() -> None:
    # The README's table: every label value at the cap, default buckets,
    # no const labels; a family's worst case is this times max_series.
    got = {f: rendered_bytes(f) for f in ("function_count", "execution_times", "transfer_times")}
    for family, per_series in got.items():
        print(f"{family}: {per_series:,} B per series at the cap;"
              f" {per_series * MAX_SERIES / 2**20:.1f} MiB at max_series={MAX_SERIES:,}")
    total = sum(got.values()) * MAX_SERIES
    print(f"all three full: {total / 2**20:.1f} MiB (was about 550 MiB for execution_times alone with 4 KiB values)")
    # 13 lines per histogram series (10 buckets, +Inf, _count, _sum), each
    # carrying every label: the cap bounds them.
    assert got["function_count"] <= 2 * CAP + 80
    assert got["transfer_times"] <= 13 * (2 * CAP + 80)
    assert got["execution_times"] <= 13 * (3 * CAP + 110)
    assert total < 200 * 2**20
