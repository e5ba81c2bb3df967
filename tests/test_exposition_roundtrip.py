"""The PrometheusTarget's exposition parsed back by prometheus_client's own
parsers (Prometheus text 0.0.4 and OpenMetrics 1.0.0): for random label
values (node and function type: any unicode, with quotes, backslashes, newlines, CR, braces) and
random observations, every label value, bucket count, count, sum and gauge
value comes back exactly."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from edgeless_telemetry import FunctionExitStatus, PrometheusTarget, TelemetryProcessor

# Unicode without lone surrogates (a str from the wire or a file never holds
# them), weighted towards the characters the formats must escape.
label_text = st.text(
    st.one_of(
        st.sampled_from(list('"\\\n\r\t{}=, #\x00\x7f\u2028\x85')),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=24,
)
durations = st.one_of(
    st.floats(min_value=0.0, max_value=2.0, allow_nan=False),
    st.sampled_from([0.0, 0.1, 0.2, 0.30000000000000004, 1.0, 5e-324, 1e300]),
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
)
series = st.tuples(label_text, st.uuids().map(str), label_text, st.booleans(), st.lists(durations, max_size=12))
buckets = st.one_of(
    st.none(),
    st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=6, unique=True).map(sorted),
)

Key = tuple[str, frozenset[tuple[str, str]]]
FAMILIES = ("execution_times", "transfer_times", "function_count")


def parsed(families: Any) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for fam in families:
        for s in fam.samples:
            labels = dict(s.labels)
            if "le" in labels:  # compared as numbers: spellings differ (1e-7, 1e-07)
                labels["le"] = le_text(float(labels["le"]))
            key = (s.name, frozenset(labels.items()))
            assert key not in out, f"sample {key} twice"
            out[key] = s.value
    return out


def le_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


@settings(max_examples=300, deadline=None)
@given(
    all_series=st.lists(series, max_size=6),
    bounds=buckets,
    gauge_ops=st.lists(st.booleans(), max_size=8),
    zone=st.one_of(st.none(), label_text),
)
def test_exposition_round_trips_through_prometheus_client(
    all_series: list[tuple[str, str, str, bool, list[float]]],
    bounds: list[float] | None,
    gauge_ops: list[bool],
    zone: str | None,
) -> None:
    const = {} if zone is None else {"zone": zone}  # a const label, escaped the same way
    prom = PrometheusTarget(buckets=bounds, const_labels=const)
    upper = [*(bounds if bounds is not None else [i / 10 for i in range(1, 11)]), float("inf")]
    proc = TelemetryProcessor([prom], log=False)
    observed: dict[tuple[str, frozenset[tuple[str, str]]], list[float]] = defaultdict(list)
    gauges: dict[frozenset[tuple[str, str]], int] = defaultdict(int)
    for node, fid, ftype, call, values in all_series:
        h = proc.get_handle({"NODE_ID": node, "FUNCTION_ID": fid, "FUNCTION_TYPE": ftype})
        kind = "Call" if call else "Cast"
        labels = {"node_id": node, "function_id": fid, "function_type": ftype, "invocation_type": kind}
        for v in values:
            h.invocation_completed(v, "CALL" if call else "CAST")
            observed[("execution_times", frozenset({**const, **labels}.items()))].append(v)
            h.function_transfer(v)
            observed[("transfer_times", frozenset({**const, "node_id": node, "function_id": fid}.items()))].append(v)
        for up in gauge_ops:
            if up:
                h.function_instantiate(0.0)
            else:
                h.function_exit(FunctionExitStatus.OK)
            gauges[frozenset({**const, "node_id": node, "function_type": ftype}.items())] += 1 if up else -1

    expected: dict[Key, float] = {}
    for (family, labels), values in observed.items():
        total = 0.0
        for v in values:  # in order, as the target adds them
            total += v
        ordered = sorted(values)
        for b in upper:
            count = bisect.bisect_right(ordered, b)  # le: a bound is inclusive
            expected[(f"{family}_bucket", labels | {("le", le_text(b))})] = count
        expected[(f"{family}_count", labels)] = len(values)
        expected[(f"{family}_sum", labels)] = total
    for labels, n in gauges.items():
        expected[("function_count", labels)] = n

    for fmt, parser in (("text", parse_text), ("openmetrics", parse_openmetrics)):
        body = prom.render(openmetrics=fmt == "openmetrics").decode()
        got = parsed(parser(body))
        ours = {k: v for k, v in got.items() if k[0].startswith(FAMILIES)}
        assert ours.keys() == expected.keys(), fmt
        for key, value in expected.items():
            assert ours[key] == value, (fmt, key)  # exact: floats compared bit for bit


def test_negative_bucket_bounds_are_refused() -> None:
    """Found by the test above: OpenMetrics forbids `_sum` beside a negative
    bucket, and durations are never negative, so such bounds are refused."""
    with pytest.raises(ValueError, match="negative"):
        PrometheusTarget(buckets=[-1.0, 0.5])
