"""End to end: Debian's real Prometheus, started with native histograms on,
scrapes four PrometheusTargets with the repo's scrape config, and every query
of the repo's Grafana dashboard answers with the numbers the nodes emitted.

A mixed fleet: three nodes under the scrape config's job (`edgeless-node`, as
EDGELESS names it), one of them with native histograms (`native=True`), a
fourth under another job name, and that fourth node's id and function type
hold newlines (Prometheus 2's `.*` would not match them: the dashboard's
"All" must). Prometheus 2.42 stores only the native form of a histogram that
has native buckets, so the classic quantile panels answer from the classic
nodes, the native ones from the native node, and the count panels from all."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgeless_telemetry import FunctionExitStatus, PrometheusTarget, TelemetryProcessor
from prom_support import dashboard_queries, grafana_to_promql, run_prometheus

# node -> function type -> (instances started, exited, invocation duration)
PLAN = {
    "node-1": {"python": (3, 1, 0.25), "wasm": (1, 0, 0.75)},
    "node-2": {"python": (2, 0, 0.25)},
    "node-4": {"python": (2, 1, 0.25), "wasm": (1, 0, 0.75)},
    "node\n3": {"multi\nline": (1, 0, 0.25)},
}
TRANSFER = {"node-1": 0.15, "node-2": 0.45, "node-4": 0.15, "node\n3": 0.45}
NATIVE = {"node-4"}  # PrometheusTarget(native=True)
OTHER_JOB = "edgeless-node-site-b"
NATIVE_FLAG = "--enable-feature=native-histograms"
# The (0.1 s wide) classic bucket each duration falls in; the native
# buckets around it (schema 3: 9 % wide) lie inside it.
BUCKET = {0.15: (0.1, 0.2), 0.25: (0.2, 0.3), 0.45: (0.4, 0.5), 0.75: (0.7, 0.8)}
CALLS, CASTS = 4, 6  # per function instance and round


class Node:
    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.native = node_id in NATIVE
        self.prom = PrometheusTarget("http://127.0.0.1:0", native=self.native)
        proc = TelemetryProcessor([self.prom], log=False)
        base = proc.get_handle({"NODE_ID": node_id})
        self.functions = []
        for ftype, (started, exited, _) in PLAN[node_id].items():
            for i in range(started):
                h = base.fork({"FUNCTION_ID": str(uuid.uuid4()), "FUNCTION_TYPE": ftype})
                h.function_instantiate(0.01)
                if i < exited:
                    h.function_exit(FunctionExitStatus.OK)
                self.functions.append((ftype, h))
        base.function_init(float("nan"))  # dropped, and shown on the dashboard
        self.emitted = {"Call": 0, "Cast": 0}

    def round(self) -> None:
        for ftype, h in self.functions:
            d = PLAN[self.id][ftype][2]
            for _ in range(CALLS):
                h.invocation_completed(d, event_type="CALL")
            for _ in range(CASTS):
                h.invocation_completed(d)
            h.function_transfer(TRANSFER[self.id])
            self.emitted["Call"] += CALLS
            self.emitted["Cast"] += CASTS


def by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in labels): float(r["value"][1]) for r in result}


def test_dashboard_queries_against_real_prometheus(tmp_path: Path) -> None:
    nodes = [Node(node_id) for node_id in PLAN]
    ports = [n.prom.port or 0 for n in nodes]
    assert all(ports)
    try:
        with run_prometheus(tmp_path, ports[:3], {OTHER_JOB: ports[3:]},
                            extra_flags=[NATIVE_FLAG]) as prom:
            # A first scrape sees the series, so the rounds after it are rates.
            prom.wait_for(
                'up{job=~"edgeless-node.*"}',
                lambda r: len(r) == len(nodes) and all(x["value"][1] == "1" for x in r),
            )
            for n in nodes:
                n.round()
            scrapes = [n.prom.stats()["scrapes"] for n in nodes]
            deadline = time.monotonic() + 20
            while any(n.prom.stats()["scrapes"] < s + 2 for n, s in zip(nodes, scrapes, strict=True)):
                assert time.monotonic() < deadline, "nodes were not scraped"
                time.sleep(0.1)
            for n in nodes:
                n.round()
            total = {k: sum(n.emitted[k] for n in nodes) for k in ("Call", "Cast")}
            prom.wait_for(
                "sum by (invocation_type) (execution_times_count or histogram_count(execution_times))",
                lambda r: by(r, "invocation_type") == {(k,): float(v) for k, v in total.items()},
            )
            # The native node's histograms are stored in native form only.
            native_ids = [h.tags["FUNCTION_ID"] for n in nodes if n.native for _, h in n.functions]
            assert prom.query('execution_times_count{node_id="node-4"}') == []
            # (one series per function and invocation type)
            assert len(prom.query('execution_times{node_id="node-4"}')) == 2 * len(native_ids)
            checked = 0
            for name, query in dashboard_queries():
                check_query(prom, name, query, nodes, total)
                checked += 1
            assert checked >= 20
            # Prometheus negotiated gzip for every scrape, and protobuf from
            # the native node, OpenMetrics from the others.
            for n in nodes:
                st = n.prom.stats()
                form = st["scrapes_protobuf"] if n.native else st["scrapes_openmetrics"]
                assert st["scrapes"] == form == st["scrapes_gzip"] > 0, st
    finally:
        for n in nodes:
            n.prom.close()


ALL_VALUES = {
    "job": ["edgeless-node", OTHER_JOB],
    "node": list(PLAN),
    "function_type": sorted({t for plan in PLAN.values() for t in plan}),
}


def check_query(prom: Any, name: str, query: str, nodes: list[Node], total: dict[str, int]) -> None:
    expr = grafana_to_promql(query, ALL_VALUES)
    if expr.startswith("label_values("):
        metric, label = expr[len("label_values(") : -1].rsplit(",", 1)
        values = set(prom.api(f"label/{label.strip()}/values", **{"match[]": metric}))
        expected = {"job": set(ALL_VALUES["job"]), "node_id": set(PLAN),
                    "function_type": set(ALL_VALUES["function_type"])}
        assert values == expected[label.strip()], (name, values)
        return
    result = prom.query(expr)
    assert result, f"{name}: {expr} returned no data"
    if "rate(execution_times_count" in expr:
        got = by(result, "node_id", "function_type", "function_id")
        functions = {(n.id, ftype, h.tags["FUNCTION_ID"]) for n in nodes for ftype, h in n.functions}
        assert set(got) == functions, (name, got)
        assert all(v > 0 for v in got.values()), (name, got)
    elif "histogram_quantile" in expr:
        # Classic panels answer from the classic nodes, native ones from the
        # native node (Prometheus 2.42 keeps one form per histogram).
        native = "_bucket{" not in expr
        panel_nodes = [n for n in nodes if n.native == native]
        if "transfer_times" in expr:
            got = by(result, "node_id")
            assert set(got) == {(n.id,) for n in panel_nodes}, (name, got)
            for n in panel_nodes:
                lo, hi = BUCKET[TRANSFER[n.id]]
                assert lo < got[(n.id,)] <= hi, (name, n.id, got)
        elif "function_id" in expr:
            got = by(result, "function_id")
            durations = {h.tags["FUNCTION_ID"]: PLAN[n.id][ftype][2]
                         for n in panel_nodes for ftype, h in n.functions}
            assert set(got) == {(f,) for f in durations}, (name, got)
            for f, d in durations.items():
                lo, hi = BUCKET[d]
                assert lo < got[(f,)] <= hi, (name, f, got)
        else:
            got = by(result, "function_type")
            durations = {ftype: PLAN[n.id][ftype][2] for n in panel_nodes for ftype in PLAN[n.id]}
            assert set(got) == {(t,) for t in durations}, (name, got)
            for t, d in durations.items():
                lo, hi = BUCKET[d]
                assert lo < got[(t,)] <= hi, (name, t, got)
    elif "(function_count" in expr:
        got = by(result, "node_id", "function_type")
        want = {
            (node, ftype): float(started - exited)
            for node, plan in PLAN.items()
            for ftype, (started, exited, _) in plan.items()
        }
        assert got == want, (name, got)
    elif "execution_times_count" in expr:
        assert by(result, "invocation_type") == {(k,): float(v) for k, v in total.items()}, name
    elif expr.startswith("up{"):
        assert sorted(v for v in by(result, "instance").values()) == [1.0] * len(nodes), name
    elif "dropped_total" in expr:
        got = by(result, "target", "reason")
        # per node: the processor's 5 reasons and the PrometheusTarget's missing_tag
        assert len(result) == len(nodes) * 6, (name, result)
        assert got[("processor", "invalid_value")] == 1.0 and got[("processor", "invalid_type")] == 0.0, got
    elif "series_refused" in expr:
        got = by(result, "family")
        assert len(result) == len(nodes) * 3 and set(got.values()) == {0.0}, (name, result)
    else:
        pytest.fail(f"dashboard query {name!r} has no expected value in this test: {expr}")
