"""What each ``stats()`` returns, key by key: one ``TypedDict`` per class.

At runtime every ``stats()`` returns a plain, fresh ``dict`` of ``int``;
these types only tell a type checker (and an editor) which keys there are
and what each counts, so ``stats()["dropped_invalid_typo"]`` is an error
before it runs. Counters are cumulative since the object was made (a drain
or a flush does not reset them); the keys documented as gauges say what is
there now. ``tests/test_typed_surface.py`` checks every key a ``stats()``
returns is declared here, so a new counter cannot go undocumented.

Keys that exist only in some configurations are declared in a
``total=False`` class (a type checker then wants ``.get(key, 0)`` or an
``in`` test): the collector's ``redis_*`` keys exist only with a
``redis_url``.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "CollectorCoreStats",
    "ControlPlaneTracerStats",
    "NodeReporterStats",
    "OrchestratorCollectorStats",
    "PerformanceTargetStats",
    "PrometheusTargetStats",
    "TelemetryProcessorStats",
]


class TelemetryProcessorStats(TypedDict):
    """``TelemetryProcessor.stats()``: events the hot path dropped instead of
    raising, by reason (the first of each kind is also logged once)."""

    dropped_invalid_type: int
    """Events dropped for a wrong type: a duration that is not a number, an
    ``event_type`` that is not a ``str``, ``event_tags`` that are not a dict
    of ``str``."""
    dropped_invalid_value: int
    """Events dropped for a bad value: a NaN, infinite or negative duration,
    or an enum value out of range (log level, exit status)."""
    target_errors: int
    """Events a Python target raised on (or answered with something that is
    not a ``ChainResult``); the chain went on."""
    dropped_reentrant: int
    """Events recorded from inside a target more than 32 levels deep, not
    passed to the Python (or ``logging``) targets at that depth."""
    dropped_at_exit: int
    """Events recorded on a thread other than the one finalizing once the
    interpreter exits (a daemon thread), not passed to the Python (or
    ``logging``) targets: CPython would end that thread inside them."""
    lossy_strings: int
    """Strings holding lone surrogates, stored escaped (``backslashreplace``):
    kept, but altered."""


class PerformanceTargetStats(TypedDict):
    """``PerformanceTarget.stats()``: what was recorded, overwritten and
    refused (cumulative), and what waits to be drained (gauges)."""

    samples_recorded: int
    """Samples stored."""
    samples_dropped: int
    """Oldest samples overwritten because their ring (``capacity``) was full."""
    log_entries_recorded: int
    """Log entries stored."""
    log_entries_dropped: int
    """Oldest log entries overwritten past ``log_capacity`` or ``log_bytes``."""
    messages_truncated: int
    """Log messages cut at ``max_message_bytes``."""
    targets_truncated: int
    """Log targets cut at 256 bytes (a target becomes part of a Redis key)."""
    events_without_function_id: int
    """Events not stored because their ``FUNCTION_ID`` is missing or not a
    UUID (as in EDGELESS)."""
    functions_refused: int
    """Events not stored because their function found the table full
    (``max_functions`` functions tracked); its handle gets a slot at the
    first event after a drain has freed one."""
    pending_samples: int
    """Gauge: samples waiting for the next drain."""
    pending_log_entries: int
    """Gauge: log entries waiting for the next drain."""


class PrometheusTargetStats(TypedDict):
    """``PrometheusTarget.stats()``: series and refused label sets per
    family, scrapes served and its HTTP server's counts."""

    function_count_series: int
    """Gauge: series of the ``function_count`` family."""
    function_count_refused: int
    """``function_count`` label sets refused (``max_series`` reached, or a
    label value over 256 bytes)."""
    execution_times_series: int
    """Gauge: series of the ``execution_times`` family."""
    execution_times_refused: int
    """``execution_times`` label sets refused (``max_series`` reached, or a
    label value over 256 bytes)."""
    transfer_times_series: int
    """Gauge: series of the ``transfer_times`` family."""
    transfer_times_refused: int
    """``transfer_times`` label sets refused (``max_series`` reached, or a
    label value over 256 bytes)."""
    scrapes: int
    """``GET /metrics`` requests answered by the target's server."""
    scrapes_openmetrics: int
    """Scrapes that asked for OpenMetrics (``Accept`` header)."""
    scrapes_gzip: int
    """Scrapes that accepted gzip (``Accept-Encoding`` header)."""
    scrapes_protobuf: int
    """Scrapes served in the Prometheus protobuf format (``native=True``
    targets only: the format that carries native histogram buckets)."""
    http_connections: int
    """Connections accepted by the server."""
    http_requests: int
    """Requests read by the server (any path)."""
    http_timeouts: int
    """Connections cut because a request was not complete within 5 s of
    accept, or a response was not taken within 30 s."""
    http_503_busy: int
    """Requests refused with 503 because every connection was being
    answered."""
    http_401: int
    """Requests refused for want of valid basic auth credentials (with a
    ``web_config`` that has ``basic_auth_users``)."""
    http_tls_failures: int
    """TLS handshakes that failed (no or an untrusted client certificate, a
    protocol the config refuses, a client speaking plain HTTP)."""
    web_config_reloads: int
    """Reloads of the ``web_config`` files that took effect: by
    ``reload_web_config()``, or by the server itself when the files changed
    (looked at no more than once a second, on connections and requests).
    0 without a ``web_config``."""
    web_config_reload_errors: int
    """Reloads that failed (a broken or half-written file, a key that does
    not match its certificate): the running configuration stays."""
    http_evictions: int
    """Connections with an incomplete request closed to admit a newer one."""


class ControlPlaneTracerStats(TypedDict):
    """``ControlPlaneTracer.stats()``: rows accepted, written, held and
    refused. ``rows_queued == rows_written + rows_pending + rows_lost``."""

    rows_queued: int
    """Rows accepted into the buffer."""
    rows_written: int
    """Rows wholly written to the output."""
    rows_pending: int
    """Gauge: rows accepted and not yet written (buffered, or held while the
    output refuses them)."""
    bytes_written: int
    """Bytes written to the output."""
    pending_bytes: int
    """Gauge: bytes buffered and held (at most ``max_pending_bytes``)."""
    rows_dropped: int
    """Rows refused because the buffer was full (a slow or stuck output)."""
    rows_after_close: int
    """Rows refused because the tracer was closed."""
    write_errors: int
    """Failed write attempts (disk full, file size limit, ...)."""
    rows_lost: int
    """Held rows the output still refused at ``close()``."""
    messages_truncated: int
    """Log messages cut at ``max_message_bytes``."""
    lossy_strings: int
    """Names or messages holding lone surrogates, written escaped."""
    rows_after_fork: int
    """Rows refused in a forked child through a tracer it inherited."""


class NodeReporterStats(TypedDict):
    """``NodeReporter.stats()`` (and ``ReporterCore.stats()``): what was
    delivered, refused, dropped and what is pending. Reads counters only:
    never waits for a send in progress."""

    batches_sent: int
    """Bodies the collector answered 200 (stored, or stored before)."""
    samples_sent: int
    """Samples in those bodies."""
    log_entries_sent: int
    """Log entries in those bodies."""
    send_failures: int
    """Sends that got no HTTP answer (refused, timed out, reset, not HTTP),
    a 5xx, 401, 403, 408 or 429; the body stays pending."""
    batches_rejected: int
    """Bodies refused for good with another 4xx (400, 411, 413, 415):
    dropped; their samples and log entries count as dropped."""
    batches_unconfirmed: int
    """Answers 202: taken, but not yet in Redis; the body stays pending and
    goes again."""
    batches_dropped: int
    """Oldest pending bodies dropped past ``max_pending_bytes``."""
    samples_dropped: int
    """Samples in bodies dropped or rejected."""
    log_entries_dropped: int
    """Log entries in bodies dropped or rejected."""
    inherited_samples_discarded: int
    """Samples a forked child's target inherited and discarded (the parent
    sends them)."""
    pending_batches: int
    """Gauge: bodies waiting to be sent."""
    pending_bytes: int
    """Gauge: their size in bytes (at most ``max_pending_bytes``)."""
    pending_samples: int
    """Gauge: samples in them."""
    inherited_log_entries_discarded: int
    """Log entries a forked child's target inherited and discarded."""
    connections_opened: int
    """HTTP connections opened to the collector (one is kept alive)."""


class _CollectorCoreAlways(TypedDict):
    """The keys ``CollectorCore.stats()`` always has."""

    batches_received: int
    """Bodies given to the core."""
    batches_stored: int
    """Bodies stored (CSV written, Redis queued or acknowledged)."""
    batches_duplicate: int
    """Bodies stored before (same node, nonce and sequence): not stored again."""
    batches_unsequenced: int
    """Bodies without a ``batch_sequence``, stored once per arrival."""
    log_keys_renamed: int
    """Log entries whose target is named like a metric, written to
    ``performance:<function_id>:log:<target>`` instead."""
    batches_malformed: int
    """Bodies refused with 400 (not a valid ``UpdateNodeRequest``): nothing
    written."""
    batches_refused: int
    """Bodies refused with 503 (Redis queue full, collector closing); the
    node sends them again."""
    batches_forbidden: int
    """Bodies refused with 403: a per-node token sent another node's batch."""
    batches_queued: int
    """Bodies answered 202: taken, waiting in the Redis queue."""
    samples_stored: int
    """Samples in stored bodies."""
    log_entries_stored: int
    """Log entries in stored bodies."""
    dataset_errors: int
    """Failed writes of the CSV dataset (answered 507 or 500, nothing of the
    batch kept)."""
    refused_too_many_entries: int
    """Bodies refused with 413 for holding more than ``max_entries_per_body``
    samples and log entries."""
    refused_too_large_decoded: int
    """Bodies refused with 413 whose decoded size alone is over
    ``max_decoded_bytes``."""
    busy_decoded_budget: int
    """Bodies refused with 503 because ``max_decoded_bytes`` of decoding was
    in flight."""
    decoded_budget_bytes_in_use: int
    """Gauge: bytes of the decoding budget reserved now."""
    decoded_budget_bytes: int
    """The decoding budget, ``max_decoded_bytes``."""


class CollectorCoreStats(_CollectorCoreAlways, total=False):
    """``CollectorCore.stats()``: batches, samples, refusals and the decoding
    budget, always; the ``redis_*`` keys only with a ``redis_url`` (so a
    type checker wants ``.get(key, 0)`` or an ``in`` test for them)."""

    redis_entries_written: int
    """Samples and log entries Redis acknowledged."""
    redis_members_added: int
    """Sorted-set members Redis added."""
    redis_members_existing: int
    """Members Redis already held (a resent batch, or two samples printing
    the same member)."""
    redis_error_replies: int
    """Error replies from Redis, all kinds."""
    redis_connects: int
    """Connections made to Redis."""
    redis_connection_failures: int
    """Connections to Redis that failed or were lost."""
    redis_entries_abandoned: int
    """Entries still queued for Redis when the collector stopped (their
    nodes hold them)."""
    redis_cluster_moved: int
    """Redis Cluster ``MOVED`` redirections followed."""
    redis_cluster_asked: int
    """Redis Cluster ``ASK`` redirections followed."""
    redis_cluster_map_reads: int
    """Redis Cluster slot maps read (``CLUSTER SLOTS``)."""
    redis_entries_rejected: int
    """Entries Redis refused for good (``WRONGTYPE``, ``ERR``): dropped."""
    redis_faults: int
    """Stretches during which Redis refused writes or could not be reached."""
    redis_failing_since: int
    """Unix seconds since which Redis refuses writes, 0 while it takes them."""
    redis_error_replies_oom: int
    """``OOM`` error replies."""
    redis_error_replies_misconf: int
    """``MISCONF`` error replies."""
    redis_error_replies_readonly: int
    """``READONLY`` error replies."""
    redis_error_replies_loading: int
    """``LOADING`` error replies."""
    redis_error_replies_busy: int
    """``BUSY`` error replies."""
    redis_error_replies_tryagain: int
    """``TRYAGAIN`` error replies."""
    redis_error_replies_wrongtype: int
    """``WRONGTYPE`` error replies."""
    redis_error_replies_other: int
    """Error replies of any other kind."""
    redis_queue_bytes: int
    """Gauge: bytes of commands queued for Redis (at most
    ``max_redis_queue_bytes``)."""
    redis_queue_batches: int
    """Gauge: batches queued for Redis."""
    redis_connected: int
    """Gauge: 1 while connected to Redis, else 0."""


class OrchestratorCollectorStats(CollectorCoreStats):
    """``OrchestratorCollector.stats()`` (and ``CollectorServer.stats()``,
    also served on ``GET /stats``): the core's keys and the HTTP server's."""

    http_401: int
    """Requests refused with 401: token missing or wrong."""
    http_403: int
    """Requests refused with 403: the token is another node's."""
    http_404: int
    """Requests for another path."""
    http_405: int
    """Requests with another method."""
    http_411: int
    """Requests without a length."""
    http_413: int
    """Bodies over ``max_body_bytes``, refused unread."""
    http_415: int
    """Bodies of another content type."""
    http_connections: int
    """Connections accepted."""
    http_requests: int
    """Requests read."""
    http_timeouts: int
    """Connections cut because a request was not complete within
    ``read_timeout_s`` (or a response not taken)."""
    http_evictions: int
    """Connections with an incomplete request closed to admit a newer one."""
    http_503_busy: int
    """Requests refused with 503: every connection busy, or
    ``max_inflight_bytes`` of bodies in flight."""
    http_401_basic_auth: int
    """Requests refused for want of valid basic auth credentials."""
    http_tls_failures: int
    """TLS handshakes that failed (see ``PrometheusTargetStats``)."""
    web_config_reloads: int
    """Reloads of the ``web_config`` files (see ``PrometheusTargetStats``)."""
    web_config_reload_errors: int
    """Reloads that failed; the running configuration stays."""
    http_inflight_bytes: int
    """Gauge: bytes of bodies being read (what has arrived so far, not the
    declared length) or stored now."""
