#!/usr/bin/env bash
# The bench command: the pytest-benchmark suite (ours beside the peers, same
# run), memory per sample and per series, ingestion from 1/2/4 threads, then
# one comparison table against the goals in docs/architecture.md. Writes bench-results/
# (benchmarks.json, memory.json, threads.json, REPORT.md, render_cost.png).
# Extra arguments go to pytest, e.g. `scripts/bench.sh -k ingest`;
# UPDATE_README=1 also puts the table into README.md's Performance section.
source "$(dirname "$0")/_env.sh"
ensure_venv test bench
build_package

OUT="$ROOT/bench-results"
mkdir -p "$OUT"
rm -f "$OUT/benchmarks.json"
# A failing measurement still leaves the others' numbers for the report
# (missing ones show "not measured"); the command exits non-zero at the end.
status=0
"$PY" -m pytest -q benches --benchmark-only --benchmark-json="$OUT/benchmarks.json" \
    --benchmark-columns=median,iqr,rounds --benchmark-sort=name "$@" || status=$?
rm -f "$OUT/memory.json" "$OUT/threads.json"
"$PY" benches/memory.py --out "$OUT/memory.json" || status=$?
"$PY" benches/threads.py --out "$OUT/threads.json" || status=$?
"$PY" benches/report.py --bench "$OUT/benchmarks.json" --memory "$OUT/memory.json" \
    --threads "$OUT/threads.json" --out "$OUT" \
    ${UPDATE_README:+--readme "$ROOT/README.md"}
exit "$status"
