"""Expose a PrometheusTarget's families through ``prometheus_client``.

For applications that already serve their own metrics with
``prometheus_client`` (its registry, ``start_http_server``, WSGI/ASGI apps)::

    from prometheus_client import REGISTRY
    from edgeless_telemetry.prometheus_bridge import PrometheusCollector

    target = PrometheusTarget("")            # no server of its own
    REGISTRY.register(PrometheusCollector(target))

Each collection renders the target in Rust and reads it back with
``prometheus_client``'s own parser, so the bridge adds no second copy of
the metric logic. ``prometheus_client`` is only needed when this module is
imported.

Native histograms (``PrometheusTarget(native=True)``) do not pass through
the bridge: ``prometheus_client`` has no native histograms, and the text
formats it reads and serves cannot carry them, so only the classic buckets
arrive. Serve native buckets from the target's own server (protobuf) instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ._core import PrometheusTarget


class PrometheusCollector(Collector):
    """A ``prometheus_client`` collector reading one PrometheusTarget."""

    def __init__(self, target: PrometheusTarget) -> None:
        if not isinstance(target, PrometheusTarget):
            raise TypeError(f"PrometheusCollector needs a PrometheusTarget, got {type(target).__name__}")
        self._target = target

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self._target.render().decode("utf-8"))
