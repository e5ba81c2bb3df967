"""Smoke tests for the memory and thread measurements and the report.

They run each measurement at a tiny size (never asserting on speed) so the
bench command cannot rot unnoticed between full runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import memory
import report
import threads
from goals import GOALS


def test_memory_cases_run_and_keep_their_items() -> None:
    n = 2000
    for case in memory.CASES:
        r = memory.measure(case, n)
        assert r["case"] == case and r["n"] == n
        assert isinstance(r["bytes_per_item"], float)
        if "note" not in r:  # the placeholder PrometheusTarget keeps no series
            assert r["kept"] == n, r


def test_threads_run_with_scraper_and_drainer() -> None:
    results = threads.run_all(seconds=0.2, thread_counts=(2,), repeats=1)
    assert sorted(results) == ["ours-2", "prom-2"]
    for r in results.values():
        assert r["threads"] == 2 and r["events"] > 0 and r["runs"] == [r["events_per_s"]]
        assert r["events_per_s"] == r["events"] / r["seconds"]
        assert r["chore_runs"] and all(runs >= 1 for runs in r["chore_runs"]), r


def _bench(group: str, name: str, role: str, label: str, items: int,
           median: float) -> dict[str, object]:
    return {"group": group, "name": name, "stats": {"median": median},
            "extra_info": {"role": role, "label": label, "items": items}}


def test_report_rows_ratios_and_missing_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "has_real_prometheus", lambda: True)
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"benchmarks": [
        _bench("ingest", "o2", "ours", "PrometheusTarget only", 1000, 50e-6),
        _bench("ingest", "o", "ours", "ours path (both targets)", 1000, 100e-6),
        _bench("ingest", "c", "peer", "bound child observe", 1000, 600e-6),
        _bench("ingest", "l", "peer", "prometheus_client labels().observe", 1000, 1500e-6),
        _bench("ingest", "f", "floor", "abs", 1000, 18e-6),
        _bench("ingest", "c2", "peer", "bound child observe", 1000, 700e-6),
        _bench("render-10", "r1", "ours", "render", 10, 1e-5),
        _bench("render-10", "p1", "peer", "generate_latest", 10, 1e-3),
        _bench("render-10000", "r2", "ours", "render", 10000, 1e-3),
        _bench("render-10000", "p2", "peer", "generate_latest", 10000, 1.0),
        _bench("drain", "d", "ours", "get_metrics", 100_000, 1e-3),
    ]}))
    mem = tmp_path / "m.json"
    mem.write_text(json.dumps({
        "sample-ours": {"case": "sample-ours", "n": 10, "kept": 10, "bytes_per_item": 16.0},
        "sample-list": {"case": "sample-list", "n": 10, "kept": 10, "bytes_per_item": 150.0},
        "series-ours": {"case": "series-ours", "n": 10, "kept": 0, "bytes_per_item": 0.5,
                        "note": "placeholder"},
    }))
    text = report.report(bench, mem, None, tmp_path / "out")

    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
             text.splitlines() if line.startswith("| ")}
    for g in GOALS:
        assert any(g.measure in k for k in lines), g.measure
    ingest = next(v for k, v in lines.items() if k.startswith("event through both"))
    assert ingest[1] == "100 ns/event" and ingest[2].endswith("labels().observe")
    assert ingest[4] == "15x" and ingest[6].startswith("yes")
    render = next(v for k, v in lines.items() if k.startswith("render 10,000"))
    assert render[4] == "1,000x" and render[6].startswith("yes")
    sample = next(v for k, v in lines.items() if k.startswith("memory per buffered"))
    assert sample[1] == "16.0 B" and sample[6].startswith("yes")
    series = next(v for k, v in lines.items() if k.startswith("memory per histogram"))
    assert series[1].startswith("not measured")
    for missing in ("tracer root span", "orchestrator into", "events/s from 4"):
        row = next(v for k, v in lines.items() if k.startswith(missing))
        assert row[1] == "not measured" and row[6].startswith("not measured")
    assert any("abs (floor)" in v[2] for v in lines.values())
    # The same peer measured twice in a group (two bench files) shows once.
    assert sum(" | bound child observe | " in line for line in text.splitlines()) == 2
    assert any(k.startswith("get_metrics") for k in lines)
    # A further contender of ours is compared with the first peer only.
    extra = [line.split(" | ") for line in text.splitlines() if line.startswith("| PrometheusTarget only")]
    assert len(extra) == 1 and extra[0][2] == "bound child observe" and extra[0][4] == "12x"
    assert (tmp_path / "out" / "REPORT.md").read_text() == text
    assert f"Goals met: 3 of {len(GOALS)}; not met: 0; not measured: {len(GOALS) - 3}." in text

    # Built with the placeholder PrometheusTarget, verdicts through it are provisional.
    monkeypatch.setattr(report, "has_real_prometheus", lambda: False)
    text = report.report(bench, mem, None, tmp_path / "out")
    ingest_line = next(line for line in text.splitlines() if line.startswith("| event through both"))
    assert "provisional: yes" in ingest_line
    assert (tmp_path / "out" / "render_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_rows_for_native_histograms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "has_real_prometheus", lambda: True)
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"benchmarks": [
        _bench("ingest-native", "n", "ours", "PrometheusTarget(native=True)", 1000, 230e-6),
        _bench("ingest-native", "c", "baseline", "PrometheusTarget (classic only)", 1000, 215e-6),
        _bench("render-10000-native", "r", "ours", "render(protobuf=True)", 10000, 0.05),
        _bench("render-10000-native", "p", "peer", "generate_latest", 10000, 1.0),
    ]}))
    mem = tmp_path / "m.json"
    mem.write_text(json.dumps({
        "series-ours": {"case": "series-ours", "n": 10, "kept": 10, "bytes_per_item": 385.0},
        "series-native": {"case": "series-native", "n": 10, "kept": 10, "bytes_per_item": 1206.0},
    }))
    text = report.report(bench, mem, None, tmp_path / "out")
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in
             text.splitlines() if line.startswith("| ")}
    ingest = next(v for k, v in lines.items() if k.startswith("event with native"))
    # 15 ns more per event than the baseline: over the 10 ns bound.
    assert ingest[4] == "15 ns more" and ingest[6].startswith("**no**")
    render = next(v for k, v in lines.items() if k.startswith("protobuf rendering"))
    assert render[4] == "20x" and render[6].startswith("**no**")
    memory_row = next(v for k, v in lines.items() if k.startswith("memory per native"))
    # 1 KB for the whole series, classic buckets included.
    assert memory_row[1] == "1206.0 B" and memory_row[6].startswith("**no**")
