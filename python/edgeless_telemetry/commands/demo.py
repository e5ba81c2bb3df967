"""``edgeless-telemetry demo``: a simulated node recording function events."""

from __future__ import annotations

import argparse
import random
import time
import uuid
from typing import Any

from .._core import TelemetryProcessor
from ..enums import FunctionExitStatus, FunctionTime, TelemetryLogLevel
from ..performance import PerformanceTarget


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run a simulated node and print what it recorded")
    p.add_argument("--functions", type=int, default=4, help="simulated functions (default 4)")
    p.add_argument("--invocations", type=int, default=10_000, help="invocations per function")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    perf = PerformanceTarget()
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": str(uuid.uuid4())})
    handles = [
        node.fork({"FUNCTION_ID": str(uuid.UUID(int=rng.getrandbits(128))), "FUNCTION_TYPE": "demo"})
        for _ in range(args.functions)
    ]
    start = time.perf_counter()
    for h in handles:
        h.function_instantiate(rng.uniform(0.01, 0.05))
        h.function_init(rng.uniform(0.001, 0.01))
        for i in range(args.invocations):
            h.invocation_completed(rng.expovariate(200.0), "CALL" if i % 2 else "CAST")
            if i % 1000 == 0:
                h.log(TelemetryLogLevel.INFO, "demo", f"invocation {i}")
        h.function_stop(rng.uniform(0.001, 0.01))
        h.function_exit(FunctionExitStatus.OK)
    elapsed = time.perf_counter() - start
    metrics = perf.get_metrics()
    print(f"recorded {metrics.sample_count()} samples in {elapsed:.3f} s")
    print(f"{'function':36}  {'kind':12} {'count':>8} {'p50 ms':>8} {'p99 ms':>8}")
    import numpy as np

    for kind in FunctionTime:
        for fid, samples in metrics.function_times[kind].items():
            p50, p99 = np.percentile(samples.values, [50, 99]) * 1e3
            print(f"{fid:36}  {kind.name:12} {len(samples):8d} {p50:8.3f} {p99:8.3f}")
    return 0
