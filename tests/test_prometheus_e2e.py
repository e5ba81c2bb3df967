"""End to end: Debian's real Prometheus scrapes three PrometheusTargets with
the repo's scrape config, and every query of the repo's Grafana dashboard
answers with the numbers the nodes emitted.

A mixed fleet: two nodes under the scrape config's job (`edgeless-node`, as
EDGELESS names it), a third under another job name, and that third node's
id and function type hold newlines (Prometheus 2's `.*` would not match
them: the dashboard's "All" must)."""

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
    "node\n3": {"multi\nline": (1, 0, 0.25)},
}
TRANSFER = {"node-1": 0.15, "node-2": 0.45, "node\n3": 0.45}
OTHER_JOB = "edgeless-node-site-b"
CALLS, CASTS = 4, 6  # per function instance and round


class Node:
    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.prom = PrometheusTarget("http://127.0.0.1:0")
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
        with run_prometheus(tmp_path, ports[:2], {OTHER_JOB: ports[2:]}) as prom:
            # A first scrape sees the series, so the rounds after it are rates.
            prom.wait_for(
                'up{job=~"edgeless-node.*"}',
                lambda r: len(r) == 3 and all(x["value"][1] == "1" for x in r),
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
                "sum by (invocation_type) (execution_times_count)",
                lambda r: by(r, "invocation_type") == {(k,): float(v) for k, v in total.items()},
            )
            checked = 0
            for name, query in dashboard_queries():
                check_query(prom, name, query, nodes, total)
                checked += 1
            assert checked >= 10
            # Prometheus negotiated OpenMetrics and gzip for every scrape.
            for n in nodes:
                st = n.prom.stats()
                assert st["scrapes"] == st["scrapes_openmetrics"] == st["scrapes_gzip"] > 0, st
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
        want = {(n.id, ftype, h.tags["FUNCTION_ID"]) for n in nodes for ftype, h in n.functions}
        assert set(got) == want, (name, got)
        assert all(v > 0 for v in got.values()), (name, got)
    elif "histogram_quantile" in expr and "execution_times" in expr:
        got = by(result, "function_type")
        # python runs 0.25 s (bucket 0.2..0.3), wasm 0.75 s (0.7..0.8).
        assert 0.2 < got[("python",)] <= 0.3, (name, got)
        assert 0.7 < got[("wasm",)] <= 0.8, (name, got)
    elif "histogram_quantile" in expr and "transfer_times" in expr:
        got = by(result, "node_id")
        assert 0.1 < got[("node-1",)] <= 0.2, (name, got)
        assert 0.4 < got[("node-2",)] <= 0.5, (name, got)
        assert 0.4 < got[("node\n3",)] <= 0.5, (name, got)
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
        # per node: the processor's 4 reasons and the PrometheusTarget's missing_tag
        assert len(result) == len(nodes) * 5, (name, result)
        assert got[("processor", "invalid_value")] == 1.0 and got[("processor", "invalid_type")] == 0.0, got
    elif "series_refused" in expr:
        got = by(result, "family")
        assert len(result) == len(nodes) * 3 and set(got.values()) == {0.0}, (name, result)
    else:
        pytest.fail(f"dashboard query {name!r} has no expected value in this test: {expr}")
