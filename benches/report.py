"""One comparison table from a bench run: ours, the peer, the ratio, the goal.

Reads the pytest-benchmark JSON and the memory and thread measurements,
prints the table as Markdown, writes it to ``REPORT.md`` (ready to paste into
the README) and draws ``render_cost.png``. A goal whose measurement is
missing (capability not merged yet) shows "not measured".

    python benches/report.py --bench B.json --memory M.json --threads T.json --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import has_real_prometheus  # noqa: E402
from goals import GOALS, ITEM_NOUNS, PER_CALL_PREFIXES, Goal  # noqa: E402

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Bench:
    group: str
    name: str
    role: str
    label: str
    items: int
    median: float
    """Seconds per measured call."""

    @property
    def per_item(self) -> float:
        return self.median / self.items

    @property
    def rate(self) -> float:
        return self.items / self.median


@dataclass
class Row:
    measure: str
    ours: str
    peer: str
    peer_value: str = "—"
    ratio: str = "—"
    goal: str = "—"
    met: str = "—"


def load_benches(path: Path | None) -> dict[str, list[Bench]]:
    groups: dict[str, list[Bench]] = {}
    if path is None or not path.exists():
        return groups
    for b in json.loads(path.read_text()).get("benchmarks", []):
        info = b.get("extra_info", {})
        group = b.get("group") or "?"
        groups.setdefault(group, []).append(Bench(
            group=group, name=b.get("fullname", b["name"]), role=info.get("role", "ours"),
            label=info.get("label", b["name"]), items=int(info.get("items", 1)),
            median=float(b["stats"]["median"]),
        ))
    return groups


def load_json(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fmt_time(s: float) -> str:
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if s < scale * 1000:
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


def fmt_rate(r: float, noun: str = "") -> str:
    noun = f" {noun}s" if noun else ""
    if r >= 1e6:
        return f"{r / 1e6:.3g}M{noun}/s"
    if r >= 1e3:
        return f"{r / 1e3:.3g}k{noun}/s"
    return f"{r:.3g}{noun}/s"


def fmt_ratio(r: float) -> str:
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def per_call(group: str) -> bool:
    return group.startswith(PER_CALL_PREFIXES)


def fmt_bench(b: Bench, kind: str = "time") -> str:
    noun = ITEM_NOUNS.get(b.group, "item")
    if kind == "rate":
        return fmt_rate(b.rate, noun)
    if per_call(b.group):
        return f"{fmt_time(b.median)}/call"
    return f"{fmt_time(b.per_item)}/{noun}"


def pick(benches: list[Bench], role: str, prefer: tuple[str, ...]) -> Bench | None:
    """The first bench of ``role`` whose label holds a preferred substring
    (in order of preference), else the first of that role."""
    candidates = [b for b in benches if b.role == role]
    for want in prefer:
        for b in candidates:
            if want.lower() in b.label.lower():
                return b
    return candidates[0] if candidates else None


def pick_peer(benches: list[Bench], prefer: tuple[str, ...]) -> Bench | None:
    return pick(benches, "peer", prefer)


def unique_labels(benches: list[Bench]) -> list[Bench]:
    """The first bench of each (role, label): two files may measure the
    same peer in one group."""
    seen: set[tuple[str, str]] = set()
    out = []
    for b in benches:
        if (b.role, b.label) not in seen:
            seen.add((b.role, b.label))
            out.append(b)
    return out


def goal_text(g: Goal) -> str:
    parts = []
    if g.ratio is not None:
        parts.append(f"≥{g.ratio:g}x")
    if g.cost_at_most is not None:
        parts.append(f"cost ≤{g.cost_at_most:g}x its")
    if g.more_at_most is not None:
        parts.append(f"≤{fmt_time(g.more_at_most)} more than its")
    if g.limit is not None:
        if g.kind == "rate":
            parts.append(f"≥{fmt_rate(g.limit)}")
        elif g.kind == "bytes":
            parts.append(f"≤{g.limit:g} B")
        else:
            parts.append(f"≤{fmt_time(g.limit)}")
    return ", ".join(parts)


def verdict(g: Goal, ours: float, ratio: float | None) -> str:
    """ours: seconds per item, items per second or bytes, per ``g.kind``."""
    if (g.ratio is not None or g.cost_at_most is not None
            or g.more_at_most is not None) and ratio is None:
        return "no peer measured"
    ok = True
    if g.ratio is not None and ratio is not None:
        ok &= ratio >= g.ratio
    if g.cost_at_most is not None and ratio is not None:
        ok &= ratio >= 1 / g.cost_at_most  # ratio is theirs over ours
    if g.more_at_most is not None and ratio is not None:
        ok &= ours - ours * ratio <= g.more_at_most  # ours minus theirs
    if g.limit is not None:
        ok &= ours >= g.limit if g.kind == "rate" else ours <= g.limit
    return "yes" if ok else "**no**"


def bench_goal_row(g: Goal, groups: dict[str, list[Bench]]) -> tuple[Row, set[str]]:
    row = Row(f"{g.measure} [`{g.key}`]", NOT_MEASURED, "—", goal=goal_text(g),
              met=NOT_MEASURED)
    benches = groups.get(g.key, [])
    ours = pick(benches, "ours", g.ours)
    if ours is None:
        return row, set()
    peer = pick(benches, g.peer_role, g.peer)
    ratio = peer.per_item / ours.per_item if peer else None
    row.ours = fmt_bench(ours, g.kind)
    if peer:
        row.peer, row.peer_value = peer.label, fmt_bench(peer, g.kind)
        row.ratio = fmt_ratio(ratio) if ratio is not None else "—"
        if g.cost_at_most is not None and ratio:
            row.ratio = f"costs {fmt_ratio(1 / ratio)} its"  # ours over the baseline
        if g.more_at_most is not None:
            row.ratio = f"{fmt_time(ours.per_item - peer.per_item)} more"
    row.met = verdict(g, ours.rate if g.kind == "rate" else ours.per_item, ratio)
    return row, {ours.name + "|" + (peer.name if peer else "")}


def case_row(g: Goal, data: dict[str, Any], fmt: Any, value: str) -> Row:
    row = Row(g.measure, NOT_MEASURED, "—", goal=goal_text(g), met=NOT_MEASURED)
    ours = data.get(g.key)
    if not ours:
        return row
    if "kept" in ours and ours["kept"] < ours["n"]:
        note = ours.get("note", f"only {ours.get('kept')} of {ours['n']} items kept")
        row.ours = f"{NOT_MEASURED} ({note})"
        return row
    peer = data.get(g.peer[0])
    mine = float(ours[value])
    row.ours = fmt(mine)
    ratio = None
    if peer:
        theirs = float(peer[value])
        ratio = mine / theirs if g.kind == "rate" else theirs / mine if mine > 0 else None
        row.peer, row.peer_value = peer.get("label", g.peer[0]), fmt(theirs)
        row.ratio = fmt_ratio(ratio) if ratio is not None else "—"
    row.met = verdict(g, mine, ratio)
    return row


PEER_LABELS = {
    "sample-list": "Python list of (time_ns, value) tuples",
    "series-prom": "prometheus_client, 4 labels, 11 buckets",
    "series-ours": "PrometheusTarget series, classic buckets only",
}


def build_rows(groups: dict[str, list[Bench]], memory: dict[str, Any],
               threads: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    shown: set[str] = set()
    for case, label in PEER_LABELS.items():
        if case in memory:
            memory[case].setdefault("label", label)
    for r in threads.values():
        if r.get("kind") == "prom":
            n = r["threads"]
            r.setdefault("label", f"prometheus_client bound child, {n} thread{'s' * (n > 1)}")
    for g in GOALS:
        if g.source == "bench":
            row, pairs = bench_goal_row(g, groups)
            shown |= pairs
        elif g.source == "memory":
            row = case_row(g, memory, lambda v: f"{v:.1f} B", "bytes_per_item")
        else:
            row = case_row(g, threads, lambda v: fmt_rate(v, "event"), "events_per_s")
            if threads.get(g.key, {}).get("scraper") is False:
                row.ours += " (no scraper)"
        if g.via_prometheus and not has_real_prometheus() and row.met != NOT_MEASURED:
            row.met = f"provisional: {row.met} (placeholder PrometheusTarget)"
        rows.append(row)
    # Other rows: the group's lead contender (the goal's, else the first)
    # against every peer and the floor; further contenders of ours against
    # the group's first peer only, to keep the table short.
    lead_prefs = {g.key: g.ours for g in GOALS if g.source == "bench"}
    for group in sorted(groups, key=group_order):
        benches = groups[group]
        lead = pick(benches, "ours", lead_prefs.get(group, ()))
        first_peer = pick(benches, "peer", ())
        for ours in (b for b in benches if b.role == "ours"):
            others = (unique_labels([b for b in benches if b.role != "ours"]) if ours is lead
                      else [first_peer] if first_peer else [])
            if not others:
                rows.append(Row(f"{ours.label} [`{group}`]", fmt_bench(ours), "—"))
            for peer in others:
                if f"{ours.name}|{peer.name}" in shown:
                    continue
                rows.append(Row(
                    f"{ours.label} [`{group}`]", fmt_bench(ours),
                    peer.label + (f" ({peer.role})" if peer.role in ("floor", "baseline")
                                  else ""),
                    fmt_bench(peer), fmt_ratio(peer.per_item / ours.per_item)))
    handle = memory.get("handle-ours")
    if handle:
        rows.append(Row("memory per live forked handle (both targets, incl. its series)",
                        f"{handle['bytes_per_item']:.1f} B", "—"))
    return rows


def group_order(group: str) -> tuple[int, int, str]:
    m = re.fullmatch(r"render-(\d+)", group)
    order = ["ingest", "ingest-performance", "ingest-batch", "timing", "render", "scrape-latency",
             "tracer-span",
             "tracer-writer", "drain", "drain-encode", "redis-ingest"]
    base = "render" if m else group
    rank = order.index(base) if base in order else len(order)
    return rank, int(m.group(1)) if m else 0, group


def markdown(rows: list[Row]) -> str:
    head = ["measure", "ours", "peer", "peer's", "ratio", "goal", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.measure, r.ours, r.peer, r.peer_value, r.ratio, r.goal, r.met]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def machine_facts() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], check=True,
                                capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for dist in ("prometheus-client", "opentelemetry-sdk", "redis"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{date}; {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}; "
            f"commit {commit}; peers: {', '.join(versions)}")


NOTES = """\
Ratios are the peer's cost over ours (or our rate over the peer's): above 1
means ours is better. Times are medians of pytest-benchmark rounds divided by
the work items per round; per-event groups call in a plain Python loop of
1,000 calls, the same loop for every contender (the floor row is that loop
calling `abs`). Memory is RSS growth of a fresh process over 1M samples or
100k series; threads: median of 3 runs of 1.5 s per configuration, each in a
fresh process, with a scraper and a drainer every 5 ms."""


def chart(groups: dict[str, list[Bench]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    # One line for ours and one for the peer; labelled by their first label.
    series: dict[str, list[tuple[int, float]]] = {}
    names: dict[str, str] = {}
    for group, benches in groups.items():
        m = re.fullmatch(r"render-(\d+)", group)
        if not m:
            continue
        n = int(m.group(1))
        ours = next((b for b in benches if b.role == "ours"), None)
        peer = pick_peer(benches, ("generate_latest",))
        for b in (ours, peer):
            if b is not None:
                series.setdefault(b.role, []).append((n, b.median))
                names.setdefault(b.role, f"{b.role}: {b.label}")
    for role, points in sorted(series.items()):
        points.sort()
        left.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                  label=names[role], color="tab:green" if role == "ours" else "tab:red")
    theirs = dict(series.get("peer", []))
    for n, t in series.get("ours", []):
        if n in theirs:
            left.annotate(f"{theirs[n] / t:,.0f}x", (n, (t * theirs[n]) ** 0.5), ha="center",
                          fontsize=8)
    if series:
        left.set_xscale("log")
        left.set_yscale("log")
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "render-* groups " + NOT_MEASURED, ha="center",
                  transform=left.transAxes)
    left.set_xlabel("histogram series")
    left.set_ylabel("seconds per exposition")
    left.set_title("Exposition cost vs number of series")
    left.grid(True, which="both", alpha=0.3)

    ingest = sorted(unique_labels(groups.get("ingest", [])), key=lambda b: b.per_item)
    if ingest:
        colors = {"ours": "tab:green", "peer": "tab:red", "floor": "tab:gray"}
        right.barh(range(len(ingest)), [b.per_item * 1e9 for b in ingest],
                   color=[colors.get(b.role, "tab:blue") for b in ingest])
        right.set_yticks(range(len(ingest)), [b.label for b in ingest])
        right.set_xscale("log")
        for i, b in enumerate(ingest):
            right.text(b.per_item * 1e9, i, f" {b.per_item * 1e9:.0f}", va="center",
                       fontsize=8)
        right.tick_params(axis="y", labelsize=8)
    else:
        right.text(0.5, 0.5, "ingest " + NOT_MEASURED, ha="center",
                   transform=right.transAxes)
    right.set_xlabel("ns per event (log)")
    right.set_title("Cost of one event")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(bench: Path | None, memory: Path | None, threads: Path | None,
           out: Path) -> str:
    groups = load_benches(bench)
    rows = build_rows(groups, load_json(memory), load_json(threads))
    notes = NOTES
    if not has_real_prometheus():
        notes += ("\n\n**PrometheusTarget in this build is the placeholder that passes every"
                  " event and keeps no series**: rows through it are optimistic.")
    verdicts = [r.met for r in rows[:len(GOALS)]]
    met = sum("yes" in v for v in verdicts)
    missed = sum("**no**" in v for v in verdicts)
    provisional = sum(v.startswith("provisional") for v in verdicts)
    # The rest: not measured, or no peer measured to take a ratio against.
    summary = (f"Goals met: {met} of {len(GOALS)}"
               + (f" ({provisional} provisional)" if provisional else "")
               + f"; not met: {missed}; {NOT_MEASURED}: {len(verdicts) - met - missed}.")
    text = f"Measured {machine_facts()}.\n\n{summary}\n\n{markdown(rows)}\n\n{notes}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "REPORT.md").write_text(text)
    chart(groups, out / "render_cost.png")
    return text


README_START = "<!-- bench-report:start -->"
README_END = "<!-- bench-report:end -->"


def update_readme(readme: Path, text: str) -> None:
    """Replaces the report between the README's markers with ``text``."""
    content = readme.read_text()
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {README_START} ... {README_END} block to replace")
    readme.write_text(content[:start + len(README_START)] + "\n" + text + content[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path)
    parser.add_argument("--memory", type=Path)
    parser.add_argument("--threads", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--readme", type=Path, help="also put the table into this README's "
                        f"{README_START} block")
    args = parser.parse_args()
    text = report(args.bench, args.memory, args.threads, args.out)
    print(text)
    if args.readme:
        update_readme(args.readme, text)
        print(f"updated {args.readme}")
    print(f"wrote {args.out / 'REPORT.md'} and {args.out / 'render_cost.png'}")


if __name__ == "__main__":
    main()
