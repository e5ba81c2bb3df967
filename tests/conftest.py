"""Shared fixtures. Feature-specific fixtures live in their own modules and
are loaded through ``pytest_plugins``."""

from __future__ import annotations

import uuid

import pytest

from edgeless_telemetry import PerformanceTarget, TelemetryHandle, TelemetryProcessor

pytest_plugins = ["redis_fixture"]


@pytest.fixture
def perf() -> PerformanceTarget:
    return PerformanceTarget()


@pytest.fixture
def function_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def handle(perf: PerformanceTarget, function_id: str) -> TelemetryHandle:
    node = TelemetryProcessor([perf], log=False).get_handle({"NODE_ID": "node-1"})
    return node.fork({"FUNCTION_ID": function_id, "FUNCTION_TYPE": "python"})
