"""``edgeless-telemetry node``: a simulated node shipping to an orchestrator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import uuid
from typing import Any

from .._core import PrometheusTarget, TelemetryProcessor
from ..auth import TOKEN_ENV, check_token, token_from_env
from ..performance import PerformanceTarget
from ..reporter import NodeReporter
from ..simulate import Progress, SimulatedNode, drive
from .demo import add_workload_args
from .orchestrator import reload_web_config


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("node", help="simulated node sending to an `orchestrator`")
    p.add_argument("--orchestrator-url", default="http://127.0.0.1:7100",
                   help="collector URL (default http://127.0.0.1:7100)")
    p.add_argument("--node-id", default=None, help="node id (default: a random UUID)")
    p.add_argument("--token", default=None,
                   help=f"the collector's bearer token (default: ${TOKEN_ENV}; prefer that,"
                        " argv is visible to other users)")
    p.add_argument("--web-config", default=None, metavar="FILE",
                   help="exporter-toolkit web configuration for /metrics (YAML: tls_server_config,"
                        " basic_auth_users); SIGHUP reads it again")
    add_workload_args(p, duration=0.0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    perf = PerformanceTarget()
    prometheus = PrometheusTarget(args.metrics_url, web_config=args.web_config)
    processor = TelemetryProcessor([perf, prometheus], log=False)
    node_id = args.node_id or str(uuid.uuid4())
    token = check_token(args.token, "--token") if args.token is not None else token_from_env()
    reporter = NodeReporter(perf, args.orchestrator_url, node_id, interval_s=args.interval,
                            token=token).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.web_config:
        signal.signal(signal.SIGHUP, lambda *_: reload_web_config(prometheus.reload_web_config, "node"))
    print(f"node {node_id} shipping to {args.orchestrator_url}", flush=True)
    sim = SimulatedNode(processor.get_handle({"NODE_ID": node_id}), args.functions, args.rate,
                        args.seed)
    try:
        drive(sim, args.duration, Progress(processor, perf, reporter), stop)
    except KeyboardInterrupt:
        print()
    delivered = reporter.stop()
    print(f"reporter: {reporter.stats()}", flush=True)
    if not delivered:
        print(f"node: samples left undelivered; last error: {reporter.last_error}",
              file=sys.stderr, flush=True)
    return 0 if delivered else 1
