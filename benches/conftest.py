"""Fixtures for the benchmark suite (pytest-benchmark).

Benchmarks live in ``bench_*.py``; pytest only collects ``test_*.py`` by
default, so this conftest collects those files too (unless the ini options
already do). Helpers that scripts also use live in ``common.py``.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import common  # noqa: E402


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    patterns = parent.config.getini("python_files")
    if parent.session.isinitpath(file_path) or any(
        fnmatch.fnmatch(file_path.name, p) for p in patterns
    ):
        return None  # pytest collects it already (named on the command line, or ini)
    module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
    return module


@pytest.fixture
def node() -> Iterator[tuple[Any, Any, Any]]:
    """(PerformanceTarget, PrometheusTarget, TelemetryProcessor), both targets."""
    perf, prom, processor = common.ours()
    yield perf, prom, processor
    common.close(prom)


@pytest.fixture
def fn_handle(node: tuple[Any, Any, Any]) -> Any:
    """A forked function handle on the `node` processor."""
    return common.fork_function(node[2])


@pytest.fixture
def prom_client() -> tuple[Any, Any]:
    """(registry, Histogram) from prometheus_client, our label set and buckets."""
    return common.prom_client_histogram()


@pytest.fixture
def otel() -> Iterator[Any]:
    """An OpenTelemetry SDK histogram; the provider is shut down afterwards."""
    provider, hist = common.otel_histogram()
    yield hist
    provider.shutdown()
