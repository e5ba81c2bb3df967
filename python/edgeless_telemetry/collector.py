"""OrchestratorCollector: receives node batches over HTTP, stores them.

The HTTP server is the standard library's threading server; each request's
body goes to the Rust `CollectorCore`, which checks, de-duplicates and
stores it without the GIL (Redis via a queue and a writer thread, CSV
files directly). Answers:

- 200: stored (or already stored: a resent batch),
- 400: malformed or truncated body, nothing written,
- 411 / 413 / 415: no length, body over ``max_body_bytes``, wrong type,
- 503: not taken now (Redis queue full, closing); the node retries,
- 500: writing the dataset failed.

Interpreter exit: a started collector is stopped at exit (``atexit``). Its
handler threads are daemon threads, and one still storing a batch (in Rust,
without the GIL) when the interpreter finalizes would be ended as it takes
the GIL back: that aborts the process, possibly mid-row. So `stop` first
answers new batches 503 from Python, then waits (bounded) until no handler
is inside the core, then closes it.
"""

from __future__ import annotations

import atexit
import json
import logging
import socket
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import _core

log = logging.getLogger("edgeless_telemetry")

CONTENT_TYPE = "application/x-protobuf"


class OrchestratorCollector:
    """Receives `NodeReporter` batches and writes Redis and/or CSV.

    ``listen_url`` like ``http://127.0.0.1:7100`` (port 0 picks a free one,
    see `url`). ``redis_url`` like ``redis://127.0.0.1:6379/0``: samples go
    to the EDGELESS keys ``performance:<function_id>:<metric>``.
    ``dataset_path`` is a prefix: ``<prefix>performance_samples.csv`` and
    ``<prefix>application_logs.csv``.
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
        max_body_bytes: int = 64 << 20,
        max_redis_queue_bytes: int = 256 << 20,
    ) -> None:
        parts = urlsplit(listen_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"listen_url must be http://host:port, got {listen_url!r}")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self.core = _core.CollectorCore(
            redis_url=redis_url,
            dataset_path=dataset_path,
            append=append,
            additional_header=additional_header,
            additional_fields=additional_fields,
            max_redis_queue_bytes=max_redis_queue_bytes,
        )
        self.max_body_bytes = max_body_bytes
        self._http_refused = {"413": 0, "411": 0, "415": 0, "404": 0}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # no batch in the core
        self._in_core = 0
        self._stopping = False
        self._connections: set[socket.socket] = set()
        handler = type("_Handler", (_Handler,), {"collector": self})
        port = parts.port if parts.port is not None else 80
        self._server = ThreadingHTTPServer((parts.hostname, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        _COLLECTORS.add(self)

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
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops serving, then gives Redis up to ``timeout_s`` to take what
        is queued (the rest is counted in ``redis_entries_abandoned``)."""
        with self._lock:
            self._stopping = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        # Kept-alive connections would otherwise go on reaching a stopped
        # collector (503 forever) instead of a new one on the same port.
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_core and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
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

    def _count(self, code: int) -> None:
        with self._lock:
            self._http_refused[str(code)] = self._http_refused.get(str(code), 0) + 1

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


class _Handler(BaseHTTPRequestHandler):
    collector: OrchestratorCollector
    protocol_version = "HTTP/1.1"
    server_version = "edgeless-telemetry-collector"

    def setup(self) -> None:
        super().setup()
        with self.collector._lock:
            self.collector._connections.add(self.connection)

    def finish(self) -> None:
        with self.collector._lock:
            self.collector._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        c = self.collector
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
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            status, reason = 400, "body shorter than Content-Length"
        else:
            with c._lock:
                stopping = c._stopping
                c._in_core += not stopping
            if stopping:
                status, reason = 503, "collector is stopping"
            else:
                try:
                    status, reason = c.core.ingest(body)
                finally:
                    with c._lock:
                        c._in_core -= 1
                        c._idle.notify_all()
        self._reply(status, reason)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/stats":
            self._reply(200, json.dumps(self.collector.stats()), "application/json")
        elif self.path.rstrip("/") in ("", "/health"):
            self._reply(200, "ok")
        else:
            self._reply(404, "not found")

    def _refuse(self, code: int, reason: str, *, close: bool = False, drain: bool = False) -> None:
        self.collector._count(code)
        if drain:
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= self.collector.max_body_bytes:
                self.rfile.read(length)
            else:
                close = True
        if close:
            self.close_connection = True
        self._reply(code, reason)

    def _reply(self, code: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("collector: " + format, *args)
