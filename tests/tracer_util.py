"""Reading tracer CSV back in tests, with Python's own ``csv`` module."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections import Counter
from dataclasses import dataclass

HEADER = [
    "timestamp_sec",
    "timestamp_ns",
    "event_type",
    "correlation_id",
    "parent_id",
    "name",
    "level",
    "message",
]


@dataclass(frozen=True)
class Row:
    ts_ns: int
    event: str
    cid: str
    parent: str
    name: str
    level: str
    message: str


def parse(text: str) -> list[Row]:
    """Parses a whole tracer CSV; fails on a wrong header or row width."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == HEADER, rows[0]
    out = []
    for r in rows[1:]:
        assert len(r) == 8, r
        out.append(Row(int(r[0]) * 1_000_000_000 + int(r[1]), *r[2:]))
    return out


def read(path: str | os.PathLike[str]) -> list[Row]:
    with open(path, newline="", encoding="utf-8") as f:
        return parse(f.read())


def check_spans(rows: list[Row]) -> dict[str, tuple[Row, Row]]:
    """Every span has exactly one start and one end row, the end after the
    start, both with the same ids and name; logs carry a known span's ids.
    Returns (start, end) by correlation id."""
    starts = {r.cid: r for r in rows if r.event == "span_start"}
    ends = {r.cid: r for r in rows if r.event == "span_end"}
    counts = Counter((r.event, r.cid) for r in rows if r.event != "log")
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    assert starts.keys() == ends.keys()
    index = {id(r): i for i, r in enumerate(rows)}
    for cid, start in starts.items():
        end = ends[cid]
        assert uuid.UUID(cid).version == 4
        assert (end.parent, end.name) == (start.parent, start.name)
        assert end.ts_ns >= start.ts_ns and index[id(end)] > index[id(start)]
        assert start.level == end.level == start.message == end.message == ""
    for r in rows:
        if r.event == "log":
            s = starts[r.cid]
            assert (r.parent, r.name) == (s.parent, s.name)
            assert r.level in {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
    return {cid: (starts[cid], ends[cid]) for cid in starts}
