"""OrchestratorCollector: receives node batches over HTTP, stores them.

The HTTP server is the standard library's threading server; each request's
body goes to the Rust `CollectorCore`, which checks, de-duplicates and
stores it without the GIL (Redis via a queue and a writer thread, CSV
files directly). Answers:

- 200: stored (or already stored: a resent batch),
- 202: taken, waiting in the Redis queue (Redis down or slow),
- 400: malformed or truncated body, nothing written,
- 401: token missing or wrong; 403: the token is another node's,
- 411 / 413 / 415: no length, body over ``max_body_bytes``, wrong type,
- 503: not taken now (Redis queue full, closing, too many connections);
  the node retries,
- 500: writing the dataset failed.

Limits against hostile or broken clients: every request (from waiting for
its first byte to the end of its body) must arrive within
``read_timeout_s``, or a watchdog shuts its socket (a client trickling one
byte a second holds nothing for long); at most ``max_connections``
connections are served at once, further ones get 503 and are closed.

Interpreter exit: a started collector is stopped at exit (``atexit``):
batches being stored finish first (closing the core waits for them), later
ones get 503 and stay with their node, so the dataset holds whole rows.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import logging
import math
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import _core
from .auth import Tokens

log = logging.getLogger("edgeless_telemetry")

CONTENT_TYPE = "application/x-protobuf"


class OrchestratorCollector:
    """Receives `NodeReporter` batches and writes Redis and/or CSV.

    ``listen_url`` like ``http://127.0.0.1:7100`` (port 0 picks a free one,
    see `url`). ``redis_url`` like ``redis://127.0.0.1:6379/0``: samples go
    to the EDGELESS keys ``performance:<function_id>:<metric>``.
    ``dataset_path`` is a prefix: ``<prefix>performance_samples.csv`` and
    ``<prefix>application_logs.csv``.

    ``token``: a bearer token every node must send (``Authorization:
    Bearer <token>``); ``node_tokens``: ``{node_id: token}``, a batch sent
    with one of these must be for that node. Without either, anyone who
    can reach ``listen_url`` may write, hence its default on 127.0.0.1.
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
    ) -> None:
        parts = urlsplit(listen_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"listen_url must be http://host:port, got {listen_url!r}")
        if max_body_bytes < 1 or max_connections < 1 or max_inflight_bytes < max_body_bytes:
            raise ValueError(
                "max_body_bytes and max_connections must be at least 1,"
                " max_inflight_bytes at least max_body_bytes"
            )
        if not (isinstance(read_timeout_s, (int, float)) and math.isfinite(read_timeout_s)
                and read_timeout_s > 0):
            raise ValueError(f"read_timeout_s must be a positive number, got {read_timeout_s!r}")
        self.tokens = Tokens(token, node_tokens)
        self.core = _core.CollectorCore(
            redis_url=redis_url,
            dataset_path=dataset_path,
            append=append,
            additional_header=additional_header,
            additional_fields=additional_fields,
            max_redis_queue_bytes=max_redis_queue_bytes,
            redis_ack_timeout_s=redis_ack_timeout_s,
        )
        self.max_body_bytes = max_body_bytes
        # Bodies being read or stored, in bytes: bounds the memory all
        # connections together can hold, whatever max_connections is.
        # Decoding can take up to ~12x a body (an empty Sample is 2 bytes
        # on the wire), so this budget is what bounds the collector's peak.
        self.max_inflight_bytes = max_inflight_bytes
        self._inflight_bytes = 0
        self.read_timeout_s = float(read_timeout_s)
        self._http_refused = {
            "401": 0, "403": 0, "404": 0, "411": 0, "413": 0, "415": 0,
            "503_busy": 0, "timeouts": 0,
        }
        self._lock = threading.Lock()
        # Open connections -> monotonic deadline of the request being read
        # (None while one is being stored).
        self._connections: dict[socket.socket, float | None] = {}
        self._stopping = threading.Event()
        handler = type("_Handler", (_Handler,), {"collector": self})
        port = parts.port if parts.port is not None else 80
        self._server = _Server((parts.hostname, port), handler, self, max_connections)
        self._thread: threading.Thread | None = None
        _COLLECTORS.add(self)
        self._watchdog: threading.Thread | None = None
        if not self.tokens.required and not _is_loopback(parts.hostname):
            log.warning(
                "OrchestratorCollector listens on %s without a token: anyone who can reach it"
                " can write into Redis and the dataset", parts.hostname,
            )

    @property
    def url(self) -> str:
        """The URL nodes should send to (with the real port)."""
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self) -> OrchestratorCollector:
        if self._thread is not None:
            raise RuntimeError("OrchestratorCollector already started")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="edgeless-collector-http",
            daemon=True,
        )
        self._thread.start()
        self._watchdog = threading.Thread(
            target=self._watch, name="edgeless-collector-watchdog", daemon=True
        )
        self._watchdog.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops serving, then gives Redis up to ``timeout_s`` to take what
        is queued (the rest is counted in ``redis_entries_abandoned``)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        self._server.server_close()
        # Kept-alive connections would otherwise go on reaching a stopped
        # collector (503 forever) instead of a new one on the same port.
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.core.close(timeout_s)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until Redis holds everything accepted so far."""
        return bool(self.core.flush(timeout_s))

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = dict(self.core.stats())
        with self._lock:
            for code, n in self._http_refused.items():
                out[f"http_{code}"] = n
        return out

    def _reserve(self, length: int) -> bool:
        with self._lock:
            if self._inflight_bytes + length > self.max_inflight_bytes:
                return False
            self._inflight_bytes += length
            return True

    def _release(self, length: int) -> None:
        with self._lock:
            self._inflight_bytes -= length

    def _count(self, what: int | str) -> None:
        with self._lock:
            self._http_refused[str(what)] = self._http_refused.get(str(what), 0) + 1

    def _set_deadline(self, conn: socket.socket, reading: bool) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections[conn] = (
                    time.monotonic() + self.read_timeout_s if reading else None
                )

    def _watch(self) -> None:
        """Shuts the sockets of requests that take longer than
        ``read_timeout_s`` to arrive; their threads then see the end of
        the stream and finish."""
        period = min(0.25, self.read_timeout_s / 4)
        while not self._stopping.wait(period):
            now = time.monotonic()
            with self._lock:
                late = [c for c, d in self._connections.items() if d is not None and d < now]
                for c in late:
                    self._connections[c] = None
                    self._http_refused["timeouts"] += 1
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> OrchestratorCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_COLLECTORS: weakref.WeakSet[OrchestratorCollector] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for collector in list(_COLLECTORS):
        if collector._thread is not None:
            try:
                collector.stop()
            except Exception:  # exiting anyway: never raise from atexit
                log.exception("OrchestratorCollector: stop at exit failed")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\n")


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 collector: OrchestratorCollector, max_connections: int) -> None:
        self.collector = collector
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.collector._count("503_busy")
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (or was cut by the watchdog) mid-reply.
        log.debug("collector: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    collector: OrchestratorCollector
    protocol_version = "HTTP/1.1"
    server_version = "edgeless-telemetry-collector"

    def setup(self) -> None:
        super().setup()
        with self.collector._lock:
            self.collector._connections[self.connection] = None

    def finish(self) -> None:
        with self.collector._lock:
            self.collector._connections.pop(self.connection, None)
        try:
            super().finish()
        except OSError:
            pass

    def handle_one_request(self) -> None:
        # The clock runs from waiting for the request line to the end of
        # the body; storing it is not counted.
        self.collector._set_deadline(self.connection, True)
        super().handle_one_request()

    def _authorized(self) -> tuple[bool, str | None]:
        allowed, node = self.collector.tokens.node_for(self.headers.get("Authorization"))
        if not allowed:
            # A small body is read so the client sees the 401 rather than
            # a reset connection; a large one is not worth reading.
            self._refuse(401, "bearer token missing or wrong", drain=True,
                         drain_limit=1 << 20,
                         headers={"WWW-Authenticate": 'Bearer realm="edgeless-telemetry"'})
        return allowed, node

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        c = self.collector
        allowed, node = self._authorized()
        if not allowed:
            return None
        if self.path.split("?")[0].rstrip("/") not in ("", "/performance"):
            return self._refuse(404, "POST to /performance", drain=True)
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            return self._refuse(411, "Content-Length required", close=True)
        length = int(length_text)
        if length > c.max_body_bytes:
            return self._refuse(413, f"body over {c.max_body_bytes} bytes", close=True)
        ctype = (self.headers.get("Content-Type") or CONTENT_TYPE).split(";")[0].strip()
        if ctype != CONTENT_TYPE:
            return self._refuse(415, f"Content-Type must be {CONTENT_TYPE}", drain=True)
        if not c._reserve(length):
            return self._refuse(503, "busy: too many bytes in flight, send again", close=True,
                                counter="503_busy")
        try:
            try:
                body = self.rfile.read(length)
            except OSError:
                body = b""
            c._set_deadline(self.connection, False)
            if len(body) < length:
                self.close_connection = True
                status, reason = 400, "body shorter than Content-Length"
            else:
                status, reason = c.core.ingest(body, node)
                if status == 403:
                    c._count(403)
        finally:
            c._release(length)
        self._reply(status, reason)

    def do_GET(self) -> None:  # noqa: N802
        self.collector._set_deadline(self.connection, False)
        if self.path.rstrip("/") == "/stats":
            if self._authorized()[0]:
                self._reply(200, json.dumps(self.collector.stats()), "application/json")
        elif self.path.rstrip("/") in ("", "/health"):
            self._reply(200, "ok")
        else:
            self._reply(404, "not found")

    def _refuse(self, code: int, reason: str, *, close: bool = False, drain: bool = False,
                drain_limit: int | None = None, headers: dict[str, str] | None = None,
                counter: int | str | None = None) -> None:
        self.collector._count(code if counter is None else counter)
        if drain:
            limit = self.collector.max_body_bytes if drain_limit is None else drain_limit
            length_text = (self.headers.get("Content-Length") or "0").strip()
            length = int(length_text) if length_text.isdigit() else -1
            if 0 < length <= limit:
                try:
                    self.rfile.read(length)
                except OSError:
                    close = True
            elif length != 0:
                close = True
        if close:
            self.close_connection = True
        self._reply(code, reason, headers=headers)

    def _reply(self, code: int, text: str, ctype: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        data = text.encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("collector: " + format, *args)
