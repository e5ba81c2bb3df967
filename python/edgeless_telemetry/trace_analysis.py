"""Reading ControlPlaneTracer CSV files: per-name summaries and Chrome traces.

Several files can be read together: a span started with
``start_span(name, parent_id=...)`` in one process then joins the trace of
its parent written by another, which is how the orchestrator's and the
nodes' files are analysed as one.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from . import csv_nul

HEADER = (
    "timestamp_sec",
    "timestamp_ns",
    "event_type",
    "correlation_id",
    "parent_id",
    "name",
    "level",
    "message",
)
EVENT_TYPES = ("span_start", "span_end", "log")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class LogRecord:
    timestamp_ns: int
    level: str
    message: str


@dataclass
class SpanRecord:
    """One span as read back: its start and end (either may be missing when
    the file was cut short or a span is still open) and its logs."""

    correlation_id: str
    parent_id: str | None
    name: str
    start_ns: int | None = None
    end_ns: int | None = None
    logs: list[LogRecord] = field(default_factory=list)

    @property
    def duration_ns(self) -> int | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class SpanSummary:
    """Per span name: finished spans and their durations (seconds), spans
    with no end row, and ERROR log rows on spans of that name."""

    name: str
    count: int
    unfinished: int
    total_s: float
    p50_s: float
    p99_s: float
    error_logs: int


def _rows(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(csv_nul.lines(f))
        header = next(reader, None)
        if header is None or tuple(header) != HEADER:
            raise ValueError(f"{os.fspath(path)}: not a tracer CSV (header {header!r})")
        for row in reader:
            yield reader.line_num, csv_nul.fields(row)


def read_spans(paths: Iterable[PathLike]) -> dict[str, SpanRecord]:
    """All spans in the files, by correlation id, in order of first appearance.

    Raises ``ValueError`` naming the file and line for malformed rows.
    """
    spans: dict[str, SpanRecord] = {}
    for path in paths:
        for line, row in _rows(path):
            where = f"{os.fspath(path)}:{line}"
            if len(row) != len(HEADER):
                raise ValueError(f"{where}: expected {len(HEADER)} fields, got {len(row)}")
            sec, ns, event, cid, parent, name, level, message = row
            if event not in EVENT_TYPES:
                raise ValueError(f"{where}: unknown event_type {event!r}")
            try:
                ts = int(sec) * 1_000_000_000 + int(ns)
            except ValueError:
                raise ValueError(f"{where}: bad timestamp {sec!r},{ns!r}") from None
            if not cid and event == "log":
                continue  # a tracer-level log belongs to no span
            span = spans.get(cid)
            if span is None:
                span = spans[cid] = SpanRecord(cid, parent or None, name)
            if event == "span_start":
                if span.start_ns is None:
                    span.start_ns = ts
            elif event == "span_end":
                if span.end_ns is None:
                    span.end_ns = ts
            else:
                span.logs.append(LogRecord(ts, level, message))
    return spans


def summarize(spans: dict[str, SpanRecord]) -> list[SpanSummary]:
    """One summary per span name, the largest total time first."""
    durations: dict[str, list[int]] = {}
    unfinished: dict[str, int] = {}
    errors: dict[str, int] = {}
    for span in spans.values():
        durations.setdefault(span.name, [])
        d = span.duration_ns
        if d is None:
            unfinished[span.name] = unfinished.get(span.name, 0) + 1
        else:
            durations[span.name].append(d)
        n_err = sum(1 for log in span.logs if log.level == "ERROR")
        errors[span.name] = errors.get(span.name, 0) + n_err
    out = []
    for name, ds in durations.items():
        if ds:
            secs = np.asarray(ds, dtype=np.float64) / 1e9
            p50, p99 = (float(x) for x in np.percentile(secs, [50, 99]))
            total = float(secs.sum())
        else:
            p50 = p99 = math.nan
            total = 0.0
        out.append(
            SpanSummary(
                name=name,
                count=len(ds),
                unfinished=unfinished.get(name, 0),
                total_s=total,
                p50_s=p50,
                p99_s=p99,
                error_logs=errors.get(name, 0),
            )
        )
    out.sort(key=lambda s: (-s.total_s, s.name))
    return out


def format_summary(rows: list[SpanSummary]) -> str:
    """A fixed-width table, durations in milliseconds."""

    def ms(x: float) -> str:
        return "-" if math.isnan(x) else f"{x * 1e3:.3f}"

    width = max([len("name")] + [len(r.name) for r in rows])
    lines = [
        f"{'name':{width}}  {'count':>8} {'open':>6} {'total ms':>12} "
        f"{'p50 ms':>10} {'p99 ms':>10} {'errors':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r.name:{width}}  {r.count:8d} {r.unfinished:6d} {ms(r.total_s):>12} "
            f"{ms(r.p50_s):>10} {ms(r.p99_s):>10} {r.error_logs:7d}"
        )
    return "\n".join(lines)


def chrome_trace(spans: dict[str, SpanRecord]) -> dict[str, Any]:
    """Chrome trace-event JSON (Perfetto, chrome://tracing).

    Spans are complete events (``ph: "X"``, ``ts``/``dur`` in µs from the
    earliest row); logs are instant events on their span's track. Each trace
    (a root and its descendants) gets its own track (``tid``), so a child
    draws nested under its parent; a child that overlaps a sibling and so
    cannot nest gets an extra track of that trace. A span with no end row is
    drawn up to the last timestamp and marked ``unfinished``.
    """
    stamps = [s.start_ns for s in spans.values() if s.start_ns is not None]
    stamps += [s.end_ns for s in spans.values() if s.end_ns is not None]
    stamps += [log.timestamp_ns for s in spans.values() for log in s.logs]
    if not stamps:
        return {"traceEvents": [], "displayTimeUnit": "ms"}
    origin, last = min(stamps), max(stamps)

    def us(ts: int) -> float:
        return (ts - origin) / 1000.0

    started = [s for s in spans.values() if s.start_ns is not None]
    ends = {s.correlation_id: s.end_ns if s.end_ns is not None else last for s in started}
    started.sort(key=lambda s: (s.start_ns, -ends[s.correlation_id]))
    lane_of: dict[str, int] = {}
    stacks: list[list[str]] = []  # per lane: open spans, innermost last
    names: list[str] = []
    events: list[dict[str, Any]] = []
    for span in started:
        start = span.start_ns
        assert start is not None
        parent = span.parent_id
        lane = -1
        if parent is not None and parent in lane_of:
            candidate = lane_of[parent]
            stack = stacks[candidate]
            while stack and ends[stack[-1]] <= start:
                stack.pop()
            if stack and stack[-1] == parent and ends[parent] >= ends[span.correlation_id]:
                lane = candidate
        if lane < 0:
            lane = len(stacks)
            stacks.append([])
            names.append(f"{span.name} {span.correlation_id[:8]}")
        stacks[lane].append(span.correlation_id)
        lane_of[span.correlation_id] = lane
        args: dict[str, Any] = {"correlation_id": span.correlation_id}
        if parent is not None:
            args["parent_id"] = parent
        if span.end_ns is None:
            args["unfinished"] = True
        events.append(
            {
                "name": span.name,
                "cat": "span",
                "ph": "X",
                "ts": us(start),
                "dur": (ends[span.correlation_id] - start) / 1000.0,
                "pid": 1,
                "tid": lane + 1,
                "args": args,
            }
        )
        for log in span.logs:
            events.append(
                {
                    "name": f"{log.level}: {log.message.splitlines()[0] if log.message else ''}"[
                        :120
                    ],
                    "cat": "log",
                    "ph": "i",
                    "s": "t",
                    "ts": us(log.timestamp_ns),
                    "pid": 1,
                    "tid": lane + 1,
                    "args": {
                        "level": log.level,
                        "message": log.message,
                        "correlation_id": span.correlation_id,
                    },
                }
            )
    meta: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "control plane"}}
    ]
    for i, name in enumerate(names):
        meta.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": i + 1, "args": {"name": name}})
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {"time_origin_ns": origin},
    }
