"""Enums shared with the Rust core, which receives them as ints.

The numbering is fixed by ``rust/events.rs`` and ``rust/chain.rs``.
"""

from __future__ import annotations

from enum import IntEnum


class TelemetryLogLevel(IntEnum):
    """Log level of ``log`` calls (EDGELESS ``TelemetryLogLevel``); methods
    taking a level also accept its value (0..4) or its name."""

    ERROR = 0
    WARN = 1
    INFO = 2
    DEBUG = 3
    TRACE = 4


class FunctionExitStatus(IntEnum):
    """How a function instance ended (``function_exit``; EDGELESS
    ``FunctionExitStatus``): ``OK``, ``INTERNAL_ERROR`` (the runtime failed),
    ``CODE_ERROR`` (the function's own code failed)."""

    OK = 0
    INTERNAL_ERROR = 1
    CODE_ERROR = 2


class FunctionTime(IntEnum):
    """Which duration a sample measures; also the EDGELESS metric name."""

    INSTANTIATE = 0
    INIT = 1
    EXECUTION = 2
    STOP = 3
    TRANSFER = 4

    @property
    def metric_name(self) -> str:
        """Name used in Redis keys and CSV rows, e.g. ``function_execution_time``."""
        return _METRIC_NAMES[self]


_METRIC_NAMES = {
    FunctionTime.INSTANTIATE: "function_instantiate_time",
    FunctionTime.INIT: "function_init_time",
    FunctionTime.EXECUTION: "function_execution_time",
    FunctionTime.STOP: "function_stop_time",
    FunctionTime.TRANSFER: "function_transfer_time",
}


class ChainResult(IntEnum):
    """EDGELESS ``TelemetryProcessingResult``: what a target did with an event."""

    PASSED = 0
    PROCESSED = 1
    FINAL = 2
