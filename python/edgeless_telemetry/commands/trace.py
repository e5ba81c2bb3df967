"""``edgeless-telemetry trace``: summaries and Chrome traces of tracer CSVs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from .. import trace_analysis


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("trace", help="analyse ControlPlaneTracer CSV files")
    sub = p.add_subparsers(dest="trace_command", required=True)

    s = sub.add_parser(
        "summary",
        help="per span name: count, total, p50/p99 duration, error logs",
    )
    s.add_argument("files", nargs="+", help="tracer CSV files (read together)")
    s.add_argument("--json", action="store_true", help="print JSON (seconds) instead of a table")
    s.set_defaults(run=run_summary)

    c = sub.add_parser("chrome", help="write Chrome trace-event JSON (Perfetto, chrome://tracing)")
    c.add_argument("files", nargs="+", help="tracer CSV files (read together)")
    c.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    c.set_defaults(run=run_chrome)


def _read(files: list[str]) -> dict[str, trace_analysis.SpanRecord] | None:
    try:
        return trace_analysis.read_spans(files)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        print(f"edgeless-telemetry trace: {e}", file=sys.stderr)
        return None


def run_summary(args: argparse.Namespace) -> int:
    spans = _read(args.files)
    if spans is None:
        return 2
    rows = trace_analysis.summarize(spans)
    if args.json:
        data = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
            for d in map(dataclasses.asdict, rows)
        ]
        print(json.dumps(data, indent=2))
    else:
        print(trace_analysis.format_summary(rows))
    return 0


def run_chrome(args: argparse.Namespace) -> int:
    spans = _read(args.files)
    if spans is None:
        return 2
    trace = trace_analysis.chrome_trace(spans)
    if args.output == "-":
        json.dump(trace, sys.stdout)
        sys.stdout.write("\n")
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)  # as the tracer does
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(trace, f)
        print(f"wrote {len(trace['traceEvents'])} events to {args.output}", file=sys.stderr)
    return 0
