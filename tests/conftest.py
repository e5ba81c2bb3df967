"""Shared fixtures. Feature-specific fixtures live in their own modules and
are loaded through ``pytest_plugins``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from edgeless_telemetry import OrchestratorCollector, PerformanceTarget, TelemetryHandle, TelemetryProcessor

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


@pytest.fixture
def collectors() -> Iterator[Any]:
    """Makes started collectors on a free loopback port; stops them after."""
    made: list[OrchestratorCollector] = []

    def make(**kw: Any) -> OrchestratorCollector:
        c = OrchestratorCollector("http://127.0.0.1:0", **kw).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop(0.5)
