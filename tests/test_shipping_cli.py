"""The main job on the command line: ``demo`` and ``summary``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from redis_fixture import RedisServer


def cli(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "edgeless_telemetry.cli", *args],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout


def table_rows(out: str) -> dict[tuple[str, str], int]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and len(parts[0]) == 36 and parts[2].isdigit():
            rows[(parts[0], parts[1])] = int(parts[2])
    return rows


def test_demo_ships_everything_and_summary_reads_it_back(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = str(tmp_path / "out") + "/"
    out = cli("demo", "--duration", "1.5", "--rate", "20000", "--functions", "3",
              "--interval", "0.3", "--output", prefix, "--redis-url", redis_server.url)
    assert "events/s=" in out and "shipped=" in out
    demo_rows = table_rows(out)
    kinds = {k for _, k in demo_rows}
    assert kinds == {"instantiate", "init", "execution", "stop", "transfer", "log"}
    assert len({f for f, _ in demo_rows}) == 3
    from_csv = table_rows(cli("summary", "--dataset-path", prefix))
    from_redis = table_rows(cli("summary", "--redis-url", redis_server.url))
    assert from_csv == demo_rows
    assert from_redis == demo_rows
    total = sum(n for (_, k), n in demo_rows.items() if k != "log")
    assert f"{total} samples" in out
    assert (tmp_path / "out" / "performance_samples.csv").exists()
    assert (tmp_path / "out" / "application_logs.csv").exists()
