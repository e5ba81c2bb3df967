"""The installed package: the stub matches the extension, the API is there."""

from __future__ import annotations

import subprocess
import sys

import edgeless_telemetry


def test_stub_matches_extension() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "edgeless_telemetry._core", "--ignore-missing-stub"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_names() -> None:
    for name in [
        "TelemetryProcessor", "TelemetryHandle", "TelemetryEvent", "TelemetryLogLevel",
        "FunctionExitStatus", "FunctionTime", "PerformanceTarget", "PrometheusTarget",
        "Metrics", "Samples", "FunctionLogEntry", "ChainResult",
    ]:
        assert hasattr(edgeless_telemetry, name), name


def test_typed_package_is_mypy_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "-p", "edgeless_telemetry"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
