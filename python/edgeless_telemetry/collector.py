"""OrchestratorCollector: receives node batches over HTTP, stores them.

The HTTP server is Rust (`_core.CollectorServer`, hyper on the extension's
runtime), and so is storing (`_core.CollectorCore`: checks, de-duplicates
and stores without the GIL, Redis via a queue and a writer thread, CSV files
directly); this module is the typed wrapper. Answers:

- 200: stored (or already stored: a resent batch),
- 202: taken, waiting in the Redis queue (Redis down or slow),
- 400: malformed or truncated body, nothing written,
- 401: token missing or wrong; 403: the token is another node's,
- 404 / 405: another path / method,
- 411 / 413 / 415: no length, body over ``max_body_bytes``, wrong type,
- 503: not taken now (Redis queue full, closing, every connection busy, or
  ``max_inflight_bytes`` of bodies in flight); the node retries,
- 500: writing the dataset failed.

Limits against hostile or broken clients: every request (head and body,
from accept or from the previous response) must arrive within
``read_timeout_s``, or its connection is cut; at most ``max_connections``
are open, and when they are, the oldest connection that has not yet
delivered a request is closed to admit a new one (503 only when all are
being served); refusals and requests that need no body are answered
without reading the body and close the connection.

Interpreter exit: a started collector is stopped at exit (``atexit``):
batches being stored finish first (closing the core waits for them), later
ones get 503 and stay with their node, so the dataset holds whole rows.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import weakref
from collections.abc import Mapping
from urllib.parse import urlsplit

from . import _core
from ._args import require
from .stats import OrchestratorCollectorStats

log = logging.getLogger("edgeless_telemetry")

CONTENT_TYPE = "application/x-protobuf"


class OrchestratorCollector:
    """Receives `NodeReporter` batches and writes Redis and/or CSV.

    ``listen_url`` like ``http://127.0.0.1:7100`` (port 0 picks a free one,
    see `url`); bound at construction (``OSError`` if the port is taken),
    served from `start`. ``redis_url`` like ``redis://127.0.0.1:6379/0``:
    samples go to the EDGELESS keys ``performance:<function_id>:<metric>``.
    ``dataset_path`` is a prefix: ``<prefix>performance_samples.csv`` and
    ``<prefix>application_logs.csv``.

    ``token``: a bearer token every node must send (``Authorization:
    Bearer <token>``); ``node_tokens``: ``{node_id: token}``, a batch sent
    with one of these must be for that node. Without either, anyone who
    can reach ``listen_url`` may write, hence its default on 127.0.0.1.

    ``max_entries_per_body``: samples plus log entries one body may hold
    (more: 413, nothing written); ``max_decoded_bytes``: what all bodies
    being decoded and stored may take together (past it: 503, the node
    resends). ``layout="edgeless"`` writes EDGELESS's leading empty CSV
    column when ``additional_header``/``additional_fields`` are empty.

    ``web_config``: an exporter-toolkit web configuration file (YAML:
    ``tls_server_config`` for TLS and client certificates,
    ``basic_auth_users``); ``listen_url`` may then be ``https://`` and
    ``url`` is. Bad or missing files raise ValueError/OSError naming them;
    ``reload_web_config()`` reads them again (certificate rotation). Basic
    auth and tokens both use ``Authorization``: one or the other.
    """

    def __init__(
        self,
        listen_url: str = "http://127.0.0.1:7100",
        *,
        redis_url: str | None = None,
        dataset_path: str | None = None,
        append: bool = False,
        additional_header: str = "",
        additional_fields: str = "",
        max_body_bytes: int = 16 << 20,
        max_inflight_bytes: int = 64 << 20,
        max_redis_queue_bytes: int = 256 << 20,
        token: str | None = None,
        node_tokens: Mapping[str, str] | None = None,
        read_timeout_s: float = 10.0,
        max_connections: int = 256,
        redis_ack_timeout_s: float = 2.0,
        max_entries_per_body: int = 1 << 20,
        max_decoded_bytes: int = 256 << 20,
        layout: str = "plain",
        web_config: str | os.PathLike[str] | None = None,
    ) -> None:
        # The other arguments are checked, by name, by the server and the
        # core themselves (rust/args.rs).
        me = "OrchestratorCollector"
        require(me, "listen_url", listen_url, str, "a str (http://host:port)")
        if node_tokens is not None:
            require(me, "node_tokens", node_tokens, Mapping, "a mapping of node ids to tokens")
        parts = urlsplit(listen_url)
        schemes = ("http", "https") if web_config is not None else ("http",)
        if parts.scheme not in schemes or parts.hostname is None:
            raise ValueError(
                f"listen_url must be http://host:port (https:// with a web_config), got {listen_url!r}")
        if node_tokens is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in node_tokens.items()):
            raise ValueError("node_tokens must map node ids (str) to tokens (str)")
        port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
        # The server first: it binds the port and checks tokens and the web
        # config before the core opens the dataset, which without `append`
        # empties it (a second collector started by mistake on the same
        # port and files must not empty the running one's).
        self._server = _core.CollectorServer(
            parts.hostname, port,
            token=token,
            node_tokens=dict(node_tokens) if node_tokens is not None else None,
            max_body_bytes=max_body_bytes,
            max_inflight_bytes=max_inflight_bytes,
            read_timeout_s=read_timeout_s,
            max_connections=max_connections,
            web_config=web_config,
        )
        try:
            self.core = _core.CollectorCore(
                redis_url=redis_url,
                dataset_path=dataset_path,
                append=append,
                additional_header=additional_header,
                additional_fields=additional_fields,
                max_redis_queue_bytes=max_redis_queue_bytes,
                redis_ack_timeout_s=redis_ack_timeout_s,
                max_entries_per_body=max_entries_per_body,
                max_decoded_bytes=max_decoded_bytes,
                layout=layout,
            )
        except BaseException:
            self._server.stop()  # frees the port now
            raise
        self._server.attach(self.core)
        self._started = False
        _COLLECTORS.add(self)
        if not self._server.token_required and not _is_loopback(parts.hostname):
            log.warning(
                "OrchestratorCollector listens on %s without a token: anyone who can reach it"
                " can write into Redis and the dataset", parts.hostname,
            )

    @property
    def url(self) -> str:
        """The URL nodes should send to (with the real port)."""
        return self._server.url

    def reload_web_config(self) -> None:
        """Reads the web config files again; new connections use them.

        On error (ValueError/OSError) the running configuration stays.
        """
        self._server.reload_web_config()

    def start(self) -> OrchestratorCollector:
        """Starts serving (Rust threads, no Python thread) and returns the
        collector; ``RuntimeError`` if started before."""
        self._server.start()
        self._started = True
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops serving (the port is free on return; batches being stored
        finish first), then gives Redis up to ``timeout_s`` to take what is
        queued (the rest is counted in ``redis_entries_abandoned``; their
        nodes hold them). Waits with the GIL released."""
        self._server.stop()
        self._started = False
        self.core.close(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits (GIL released) until Redis holds everything accepted so far;
        False if ``timeout_s`` passed first, True at once without Redis."""
        return bool(self.core.flush(timeout_s))

    def stats(self) -> OrchestratorCollectorStats:
        """The core's counts (batches, samples, Redis) and the HTTP ones:
        ``http_<status>`` refusals, ``http_503_busy``, ``http_timeouts``,
        ``http_evictions``, ``http_connections`` (accepted), ``http_requests``,
        ``http_inflight_bytes``; every key is documented in
        `OrchestratorCollectorStats` (the ``redis_*`` ones only with a
        ``redis_url``). A fresh dict; reads atomics, never waits."""
        return self._server.stats()

    @property
    def redis_last_error(self) -> str:
        """What Redis (or the connection to it) last answered in error, in
        full; empty if nothing went wrong yet. ``stats()["redis_failing_since"]``
        says whether it still does (Unix seconds, 0 while Redis takes writes)."""
        return str(self.core.redis_last_error())

    def __enter__(self) -> OrchestratorCollector:
        """Starts the collector (`start()`) and returns it, for ``with ... as c:``."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """`stop()` with its default ``timeout_s``; the exception propagates."""
        self.stop()


_COLLECTORS: weakref.WeakSet[OrchestratorCollector] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for collector in list(_COLLECTORS):
        if collector._started:
            try:
                collector.stop()
            except Exception:  # exiting anyway: never raise from atexit
                log.exception("OrchestratorCollector: stop at exit failed")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
