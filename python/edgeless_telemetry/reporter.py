"""NodeReporter: the node's periodic drain-and-send to the orchestrator.

Each period the reporter drains its `PerformanceTarget` and encodes the
samples as EDGELESS ``UpdateNodeRequest`` protobuf bodies (in Rust, the
encoding without the GIL), then POSTs them to an `OrchestratorCollector`.
A body that cannot be delivered (refused, timeout, 5xx) stays pending and
goes again, oldest first, before newer ones; pending bodies are bounded by
``max_pending_bytes`` and past it the oldest are dropped and counted. Every
body carries the reporter's random nonce and a sequence number, so a body
sent twice (its reply was lost) is stored once. With a ``token`` every
request carries ``Authorization: Bearer <token>``; a 401 or 403 answer
(token missing, wrong, or another node's) keeps the body pending like a
5xx: the fault is the configuration, and the data should survive its fix.
A 202 (the collector took the body but Redis has not: it waits in the
collector's memory) also keeps it: it goes again until a 200 says Redis
holds it, so a collector dying meanwhile loses nothing.

Fork: a forked child inherits the reporter without its thread, with locks
that thread may have held, with the parent's kept-alive socket and with
the parent's unsent bodies and samples. So in the child (``os.fork``,
multiprocessing's fork start method) the reporter becomes a new node
instance: a new nonce, sequence numbers from 1, new locks, no connection,
nothing pending, the inherited samples of its target discarded (the parent
sends them; counted in ``inherited_samples_discarded``) and, if its thread
was running, a new thread. Every sample is then sent by exactly one process.

Interpreter exit: a started reporter is stopped at exit (``atexit``), which
drains and sends what was recorded, bounded by ``timeout_s``; a body cut
short by the exit is refused whole by the collector (400, nothing written).
"""

from __future__ import annotations

import atexit
import http.client
import logging
import math
import os
import secrets
import threading
import time
import unicodedata
import weakref
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import _core
from .auth import check_token
from .performance import PerformanceTarget

log = logging.getLogger("edgeless_telemetry")

CONTENT_TYPE = "application/x-protobuf"

_STATS = (
    "batches_sent",
    "samples_sent",
    "log_entries_sent",
    "send_failures",
    "batches_rejected",
    "batches_unconfirmed",
    "batches_dropped",
    "samples_dropped",
    "log_entries_dropped",
    "inherited_samples_discarded",
)

_REPORTERS: weakref.WeakSet[NodeReporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reporter in list(_REPORTERS):
        reporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _stop_all_at_exit() -> None:
    for reporter in list(_REPORTERS):
        if reporter._thread is not None and not reporter._stop.is_set():  # running
            try:
                reporter.stop()
            except Exception:  # exiting anyway: never raise from atexit
                log.exception("NodeReporter: stop at exit failed")


@dataclass
class _Body:
    sequence: int
    samples: int
    log_entries: int
    data: bytes


class NodeReporter:
    """Drains ``target`` every ``interval_s`` and ships it to ``orchestrator_url``.

    ``orchestrator_url`` is the collector's base URL, e.g.
    ``http://127.0.0.1:7100``; bodies are POSTed to its ``/performance``
    path. Call `start()` once; `stop()` sends what is left, bounded by
    ``timeout_s``. ``token``: the collector's bearer token (shared, or
    this node's own).
    """

    def __init__(
        self,
        target: PerformanceTarget,
        orchestrator_url: str,
        node_id: str,
        *,
        interval_s: float = 2.0,
        max_pending_bytes: int = 64 << 20,
        max_batch_bytes: int = 4 << 20,
        timeout_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        if not isinstance(target, _core.PerformanceTarget):
            raise TypeError(f"target must be a PerformanceTarget, not {type(target).__name__}")
        parts = urlsplit(orchestrator_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"orchestrator_url must be http://host:port, got {orchestrator_url!r}")
        if (
            not isinstance(node_id, str)
            or not 0 < len(node_id.encode("utf-8", "surrogatepass")) <= 256
            or any(unicodedata.category(c) == "Cc" for c in node_id)
        ):
            raise ValueError(
                f"node_id must be a str of 1..256 bytes without control characters, got {node_id!r}"
            )
        for name, value in (("interval_s", interval_s), ("timeout_s", timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if max_pending_bytes < 1 or max_batch_bytes < 1:
            raise ValueError("max_pending_bytes and max_batch_bytes must be at least 1")
        self._headers = {"Content-Type": CONTENT_TYPE}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {check_token(token)}"
        self._target = target
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = (parts.path.rstrip("/") or "") + "/performance"
        self.node_id = node_id
        self.nonce = secrets.randbits(64) or 1
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self._max_pending = max_pending_bytes
        self._max_batch = max_batch_bytes
        self._next_seq = 1
        self._pending: deque[_Body] = deque()
        self._pending_bytes = 0
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # pending + stats; the thread sends
        self._send_lock = threading.Lock()  # one sender at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats = dict.fromkeys(_STATS, 0)
        self.last_error = ""
        _REPORTERS.add(self)

    def start(self) -> NodeReporter:
        if self._thread is not None:
            raise RuntimeError("NodeReporter already started")
        self._thread = threading.Thread(
            target=self._run, name="edgeless-node-reporter", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Stops the thread, then drains and sends once more within
        ``timeout_s``; True if nothing is left pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + self.timeout_s
        self.flush(deadline=deadline)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        with self._lock:
            return not self._pending

    def flush(self, *, deadline: float | None = None) -> bool:
        """Drains now and sends everything pending; True if all went."""
        with self._send_lock:
            self._drain()
            return self._send_pending(deadline)

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._stats)
            out["pending_batches"] = len(self._pending)
            out["pending_bytes"] = self._pending_bytes
            out["pending_samples"] = sum(b.samples for b in self._pending)
            return out

    def __enter__(self) -> NodeReporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _after_fork_in_child(self) -> None:
        """See the module doc: the child's reporter is a new node instance."""
        was_running = self._thread is not None and not self._stop.is_set()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self._conn is not None and self._conn.sock is not None:
            # Close our copy of the parent's socket; never shut it down.
            try:
                self._conn.sock.close()
            except OSError:
                pass
        self._conn = None
        self.nonce = secrets.randbits(64) or 1
        self._next_seq = 1
        self._pending.clear()
        self._pending_bytes = 0
        self._stats = dict.fromkeys(_STATS, 0)
        self._stats["inherited_samples_discarded"] = self._target.get_metrics().sample_count()
        self.last_error = ""
        if was_running:
            self.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception:  # never let the thread die
                log.exception("NodeReporter: unexpected error")

    def _drain(self) -> None:
        deadline_s = int(time.time() + 3 * self.interval_s)
        batches = _core.drain_encode(
            self._target, self.node_id, self.nonce, self._next_seq, deadline_s, self._max_batch
        )
        with self._lock:
            for seq, samples, logs, data in batches:
                self._pending.append(_Body(seq, samples, logs, data))
                self._pending_bytes += len(data)
                self._next_seq = seq + 1
            while self._pending_bytes > self._max_pending and self._pending:
                old = self._pending.popleft()
                self._pending_bytes -= len(old.data)
                self._stats["batches_dropped"] += 1
                self._stats["samples_dropped"] += old.samples
                self._stats["log_entries_dropped"] += old.log_entries
                if self._stats["batches_dropped"] == 1:
                    log.warning(
                        "NodeReporter dropped its oldest unsent batch (over max_pending_bytes=%d);"
                        " further drops are only counted, see stats()",
                        self._max_pending,
                    )

    def _send_pending(self, deadline: float | None) -> bool:
        while True:
            with self._lock:
                if not self._pending:
                    return True
                body = self._pending[0]
            if deadline is not None and time.monotonic() >= deadline:
                return False
            status = self._post(body.data, deadline)
            with self._lock:
                if status == 202:
                    # Queued for Redis only: keep it, send it again later.
                    self._stats["batches_unconfirmed"] += 1
                    return False
                if status is not None and 200 <= status < 300:
                    self._stats["batches_sent"] += 1
                    self._stats["samples_sent"] += body.samples
                    self._stats["log_entries_sent"] += body.log_entries
                elif status is not None and 400 <= status < 500 and status not in (401, 403):
                    # Refused for good (malformed, too large): resending
                    # cannot help, so it counts as dropped.
                    self._stats["batches_rejected"] += 1
                    self._stats["samples_dropped"] += body.samples
                    self._stats["log_entries_dropped"] += body.log_entries
                else:
                    self._stats["send_failures"] += 1
                    return False
                if self._pending and self._pending[0] is body:
                    self._pending.popleft()
                    self._pending_bytes -= len(body.data)

    def _post(self, data: bytes, deadline: float | None) -> int | None:
        # A kept-alive connection may have been closed by the other side
        # meanwhile (collector restarted): then try once more on a new one.
        # Sending twice is safe, the collector stores a batch once.
        reused = self._conn is not None
        status = self._post_once(data, deadline)
        if status is None and reused:
            status = self._post_once(data, deadline)
        return status

    def _post_once(self, data: bytes, deadline: float | None) -> int | None:
        timeout = self.timeout_s
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            else:
                self._conn.timeout = timeout
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(timeout)
            self._conn.request("POST", self._path, body=data, headers=self._headers)
            resp = self._conn.getresponse()
            reason = resp.read().decode("utf-8", "replace")
            if resp.status >= 300 or resp.status == 202:
                self.last_error = f"HTTP {resp.status}: {reason}"
            if resp.will_close:
                self._conn.close()
                self._conn = None
            return resp.status
        except (OSError, http.client.HTTPException) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return None
