"""``edgeless-telemetry summary``: the per-function table from storage."""

from __future__ import annotations

import argparse
from typing import Any

from ..paths import DATASET_HELP, dataset_prefix
from ..summary import format_table, read_dataset, read_redis


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("summary", help="per-function count/p50/p90/p99 from Redis or CSV")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset-path", help=DATASET_HELP)
    src.add_argument("--redis-url", help="e.g. redis://127.0.0.1:6379/0 or redis+cluster://HOST:PORT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.redis_url:
        series, logs = read_redis(args.redis_url)
    else:
        series, logs = read_dataset(dataset_prefix(args.dataset_path))
    print(format_table(series, logs))
    return 0
