"""``edgeless-telemetry orchestrator``: the collector as a process."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..auth import TOKEN_ENV, check_token, load_node_tokens, token_from_env
from ..collector import OrchestratorCollector
from ..paths import DATASET_HELP, dataset_prefix
from ..status import CollectorStatus


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("orchestrator", help="receive node samples, write Redis and/or CSV")
    p.add_argument("--listen", default="http://127.0.0.1:7100",
                   help="listen URL (default http://127.0.0.1:7100)")
    p.add_argument("--redis-url", default=None,
                   help="e.g. redis://127.0.0.1:6379/0, or redis+cluster://HOST:PORT[,HOST:PORT]"
                        " for a Redis Cluster")
    p.add_argument("--dataset-path", default=None, help=DATASET_HELP)
    p.add_argument("--append", action="store_true", help="append to existing dataset files")
    p.add_argument("--csv-layout", choices=("plain", "edgeless"), default="plain",
                   help="edgeless: write a leading empty column when there are no additional"
                        " header/fields, as EDGELESS's orchestrator does (default plain)")
    p.add_argument("--additional-header", default="", help="leading CSV header column(s)")
    p.add_argument("--additional-fields", default="", help="leading CSV field(s) of every row")
    p.add_argument("--max-body-bytes", type=int, default=16 << 20,
                   help="largest request body taken; larger ones get 413 (default 16 MiB; a"
                        " node's batches are at most 4 MiB)")
    p.add_argument("--token", default=None,
                   help=f"bearer token every node must send (default: ${TOKEN_ENV}; prefer"
                        " that, argv is visible to other users)")
    p.add_argument("--node-tokens", default=None, metavar="FILE",
                   help='JSON {"<node_id>": "<token>"}: a node sending with its token may only'
                        " send its own node_id")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds a whole request (head and body, from accept or the previous"
                        " response) may take to arrive (default 10)")
    p.add_argument("--max-connections", type=int, default=256,
                   help="connections open at once; past it the oldest one without a complete"
                        " request is closed, 503 if all are busy (default 256)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="seconds between status lines on stderr (what was stored, refused, whether"
                        " Redis takes writes), 0 = none (default 10)")
    p.add_argument("--verbose-stats", action="store_true",
                   help="also print every counter of stats() at exit")
    p.add_argument("--web-config", default=None, metavar="FILE",
                   help="exporter-toolkit web configuration (YAML: tls_server_config, basic_auth_users);"
                        " with TLS --listen may be https://; SIGHUP reads it again (certificate rotation)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.redis_url and not args.dataset_path:
        print("orchestrator: give --redis-url and/or --dataset-path", file=sys.stderr)
        return 2
    try:
        token = check_token(args.token, "--token") if args.token is not None else token_from_env()
        node_tokens = load_node_tokens(args.node_tokens) if args.node_tokens else None
    except ValueError as e:
        print(f"orchestrator: {e}", file=sys.stderr)
        return 2
    collector = OrchestratorCollector(
        args.listen,
        redis_url=args.redis_url,
        dataset_path=dataset_prefix(args.dataset_path) if args.dataset_path else None,
        append=args.append,
        layout=args.csv_layout,
        additional_header=args.additional_header,
        additional_fields=args.additional_fields,
        max_body_bytes=args.max_body_bytes,
        token=token,
        node_tokens=node_tokens,
        read_timeout_s=args.read_timeout,
        max_connections=args.max_connections,
        web_config=args.web_config,
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.web_config:
        signal.signal(signal.SIGHUP, lambda *_: reload_web_config(collector.reload_web_config, "orchestrator"))
    print(f"listening on {collector.url}", flush=True)
    status = CollectorStatus(collector)
    while not stop.wait(args.stats_interval or None):
        status.show()
    collector.stop()
    status.show()
    if args.verbose_stats:
        print(f"collector: {collector.stats()}", file=sys.stderr, flush=True)
    return 0


def reload_web_config(reload: Callable[[], None], who: str) -> None:
    """SIGHUP: reads the web config again; a bad one is reported, the running one stays."""
    try:
        reload()
        print(f"{who}: web config reloaded", file=sys.stderr, flush=True)
    except (ValueError, OSError) as e:
        print(f"{who}: web config not reloaded, the previous one stays: {e}", file=sys.stderr, flush=True)
