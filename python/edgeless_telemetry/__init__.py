"""Low-overhead telemetry for EDGELESS nodes and control plane.

The event path, targets and tracer live in the Rust extension ``_core``;
this package adds the enums, the drained-metrics types and the CLI.
"""

from __future__ import annotations

from ._core import (
    ControlPlaneTracer,
    PrometheusTarget,
    Span,
    TelemetryEvent,
    TelemetryHandle,
    TelemetryProcessor,
    __version__,
)
from .collector import OrchestratorCollector
from .enums import ChainResult, FunctionExitStatus, FunctionTime, TelemetryLogLevel
from .performance import FunctionLogEntry, Metrics, PerformanceTarget, Samples
from .reporter import NodeReporter

__all__ = [
    "ChainResult",
    "ControlPlaneTracer",
    "FunctionExitStatus",
    "FunctionLogEntry",
    "FunctionTime",
    "Metrics",
    "NodeReporter",
    "OrchestratorCollector",
    "PerformanceTarget",
    "PrometheusTarget",
    "Samples",
    "Span",
    "TelemetryEvent",
    "TelemetryHandle",
    "TelemetryLogLevel",
    "TelemetryProcessor",
    "__version__",
]
