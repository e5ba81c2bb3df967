"""Low-overhead telemetry for EDGELESS nodes and control plane.

The event path, targets and tracer live in the Rust extension ``_core``;
this package adds the enums, the drained-metrics types, the typed
``stats()`` dicts (`edgeless_telemetry.stats`) and the CLI.
"""

from __future__ import annotations

from ._core import (
    ControlPlaneTracer,
    PrometheusTarget,
    Span,
    SpanScope,
    TelemetryEvent,
    TelemetryHandle,
    TelemetryProcessor,
    Timer,
    __version__,
)
from .collector import OrchestratorCollector
from .enums import ChainResult, FunctionExitStatus, FunctionTime, TelemetryLogLevel
from .performance import FunctionLogEntry, Metrics, PerformanceTarget, Samples
from .reporter import NodeReporter
from .stats import (
    CollectorCoreStats,
    ControlPlaneTracerStats,
    NodeReporterStats,
    OrchestratorCollectorStats,
    PerformanceTargetStats,
    PrometheusTargetStats,
    TelemetryProcessorStats,
)

__all__ = [
    "ChainResult",
    "CollectorCoreStats",
    "ControlPlaneTracer",
    "ControlPlaneTracerStats",
    "FunctionExitStatus",
    "FunctionLogEntry",
    "FunctionTime",
    "Metrics",
    "NodeReporter",
    "NodeReporterStats",
    "OrchestratorCollector",
    "OrchestratorCollectorStats",
    "PerformanceTarget",
    "PerformanceTargetStats",
    "PrometheusTarget",
    "PrometheusTargetStats",
    "Samples",
    "Span",
    "SpanScope",
    "TelemetryEvent",
    "TelemetryHandle",
    "TelemetryLogLevel",
    "TelemetryProcessor",
    "TelemetryProcessorStats",
    "Timer",
    "__version__",
]
