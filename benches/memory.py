"""Memory per buffered sample and per histogram series, ours beside the peers.

Each case runs in a fresh interpreter and reports the growth of its resident
set size over ``n`` items divided by ``n``, so allocator and interpreter
overheads are counted as a user would pay them.

    python benches/memory.py [--samples N] [--series N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import common  # noqa: E402

DURATION = common.DURATION


def _sample_ours(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    from edgeless_telemetry import PerformanceTarget, TelemetryProcessor

    perf = PerformanceTarget(capacity=n)
    handle = common.fork_function(TelemetryProcessor([perf], log=False))
    event = handle.invocation_completed

    def work() -> None:
        for i in range(n):
            event(i * 1e-9)

    def check() -> dict[str, Any]:
        stored = perf.stats().get("samples_dropped", 0)
        return {"kept": n - stored}

    return work, check


def _sample_list(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    import time

    samples: list[tuple[int, float]] = []

    def work() -> None:
        append, now = samples.append, time.time_ns
        for i in range(n):
            append((now(), i * 1e-9))

    return work, lambda: {"kept": len(samples)}


def _series_ours(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    from edgeless_telemetry import TelemetryProcessor

    prom = common.prometheus_target(max_series=n + 1)
    node = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": common.NODE_ID})
    fid = common.function_id

    def work() -> None:
        # The handle is dropped at once: this counts the series the target
        # keeps, not the handle (see the "handle" case).
        for i in range(n):
            node.fork({"FUNCTION_ID": fid(i), "FUNCTION_TYPE": "python"}).invocation_completed(
                DURATION)

    def check() -> dict[str, Any]:
        text = common.render(prom)
        if text is None:
            return {"kept": 0, "note": "placeholder PrometheusTarget keeps no series"}
        return {"kept": sum(1 for line in text.splitlines()
                            if line.startswith(b"execution_times_count{"))}

    return work, check


def _series_native(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """As series-ours, with native=True at its default settings."""
    from edgeless_telemetry import PrometheusTarget, TelemetryProcessor

    prom = PrometheusTarget("", max_series=n + 1, native=True)
    node = TelemetryProcessor([prom], log=False).get_handle({"NODE_ID": common.NODE_ID})
    fid = common.function_id

    def work() -> None:
        for i in range(n):
            node.fork({"FUNCTION_ID": fid(i), "FUNCTION_TYPE": "python"}).invocation_completed(
                DURATION)

    return work, lambda: {"kept": prom.stats()["execution_times_series"]}


def _series_prom(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    registry, hist = common.prom_client_histogram()
    fid = common.function_id

    def work() -> None:
        for i in range(n):
            hist.labels(common.NODE_ID, fid(i), "python", "Cast").observe(DURATION)

    def check() -> dict[str, Any]:
        samples = [s for m in registry.collect() for s in m.samples]
        return {"kept": sum(1 for s in samples if s.name == "execution_times_count")}

    return work, check


def _handle_ours(n: int) -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    _perf, _prom, processor = common.ours(max_series=n + 1, max_functions=n + 1)
    node = processor.get_handle({"NODE_ID": common.NODE_ID})
    fid = common.function_id
    handles: list[Any] = []

    def work() -> None:
        for i in range(n):
            h = node.fork({"FUNCTION_ID": fid(i), "FUNCTION_TYPE": "python"})
            h.invocation_completed(DURATION)
            handles.append(h)

    return work, lambda: {"kept": len(handles)}


CASES: dict[str, Callable[[int], tuple[Callable[[], None], Callable[[], dict[str, Any]]]]] = {
    "sample-ours": _sample_ours,
    "sample-list": _sample_list,
    "series-ours": _series_ours,
    "series-native": _series_native,
    "series-prom": _series_prom,
    "handle-ours": _handle_ours,
}


def child(case: str, n: int) -> dict[str, Any]:
    work, check = CASES[case](n)
    gc.collect()
    before = common.rss_bytes()
    work()
    gc.collect()
    grown = common.rss_bytes() - before
    result = {"case": case, "n": n, "bytes_per_item": grown / n}
    result.update(check())
    return result


def measure(case: str, n: int) -> dict[str, Any]:
    return common.run_child(__file__, case, str(n))


def run_all(samples: int = 1_000_000, series: int = 100_000) -> dict[str, dict[str, Any]]:
    sizes = {"sample-ours": samples, "sample-list": samples, "series-ours": series,
             "series-native": series, "series-prom": series, "handle-ours": series}
    return {case: measure(case, n) for case, n in sizes.items()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = run_all(args.samples, args.series)
    for r in results.values():
        print(f"{r['case']:12} n={r['n']:>9} {r['bytes_per_item']:8.1f} B/item  kept={r['kept']}"
              + (f"  ({r['note']})" if "note" in r else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
