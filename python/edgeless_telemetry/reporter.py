"""NodeReporter: the node's periodic drain-and-send to the orchestrator.

Each period the reporter's thread makes one call into Rust
(`_core.ReporterCore.flush`), which drains the `PerformanceTarget`,
encodes the samples as EDGELESS ``UpdateNodeRequest`` protobuf bodies and
POSTs them to an `OrchestratorCollector` over a kept-alive HTTP/1.1
connection (hyper), all without the GIL but for the drain. A body that
cannot be delivered (refused, timeout, 5xx) stays pending and goes again,
oldest first, before newer ones; pending bodies are bounded by
``max_pending_bytes`` and past it the oldest are dropped and counted. Every
body carries the reporter's random nonce and a sequence number, so a body
sent twice (its reply was lost) is stored once. With a ``token`` every
request carries ``Authorization: Bearer <token>``; a 401 or 403 answer
(token missing, wrong, or another node's) keeps the body pending like a
5xx: the fault is the configuration, and the data should survive its fix.
So do a 408 or 429 (a proxy in front of the collector timing out or rate
limiting). A 202 (the collector took the body but Redis has not: it waits
in the collector's memory) also keeps it: it goes again until a 200 says
Redis holds it, so a collector dying meanwhile loses nothing.

Fork: a forked child inherits the reporter without its thread, with locks
that thread may have held, with the parent's kept-alive socket and with
the parent's unsent bodies and samples. So in the child (``os.fork``,
multiprocessing's fork start method) the reporter becomes a new node
instance: a new nonce, sequence numbers from 1, new locks, no connection,
nothing pending (the Rust core makes a fresh state for the child and
leaves the parent's untouched), the inherited samples of its target
discarded (the parent sends them; counted in
``inherited_samples_discarded``) and, if its thread was running, a new
thread. Every sample is then sent by exactly one process.

Interpreter exit: a started reporter is stopped at exit (``atexit``), which
drains and sends what was recorded, bounded by ``timeout_s``; a body cut
short by the exit is refused whole by the collector (400, nothing written).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import weakref

from . import _core
from ._args import require
from .auth import check_token
from .performance import PerformanceTarget
from .stats import NodeReporterStats

log = logging.getLogger("edgeless_telemetry")

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


class NodeReporter:
    """Drains ``target`` every ``interval_s`` and ships it to ``orchestrator_url``.

    ``orchestrator_url`` is the collector's base URL, e.g.
    ``http://127.0.0.1:7100``; bodies are POSTed to its ``/performance``
    path (a bad URL raises ValueError here). ``https://``: the collector's
    certificate is checked against ``ca_file`` (PEM), or the system's CA
    store without one; ``client_cert_file``/``client_key_file`` (PEM) for a
    collector that requires client certificates. A certificate problem
    fails the send like any other (retried each period, nothing lost) and
    ``last_error`` says what it is (``TLS: handshake with ... failed:
    invalid peer certificate: UnknownIssuer``).
    Call `start()` once; `stop()` sends what is left, bounded by
    ``timeout_s``, which also bounds each request (connect, send and
    answer). ``token``: the collector's bearer token (shared, or this
    node's own).
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
        ca_file: str | os.PathLike[str] | None = None,
        client_cert_file: str | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        me = "NodeReporter"
        require(me, "target", target, _core.PerformanceTarget, "a PerformanceTarget")
        for name, value in (("interval_s", interval_s), ("timeout_s", timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        # The thread waits interval_s at a time: past TIMEOUT_MAX (about 292
        # years) that wait raises in the thread, which then dies.
        if interval_s > threading.TIMEOUT_MAX:
            raise ValueError(
                f"interval_s must be at most threading.TIMEOUT_MAX ({threading.TIMEOUT_MAX:g} s), "
                f"got {interval_s!r}; call flush() yourself for sends on demand"
            )
        self._core = _core.ReporterCore(
            target,
            orchestrator_url,
            node_id,
            max_pending_bytes=max_pending_bytes,
            max_batch_bytes=max_batch_bytes,
            timeout_s=float(timeout_s),
            # The collector may forget a node silent for longer than this.
            refresh_s=math.ceil(3 * interval_s),
            token=None if token is None else check_token(token),
            ca_file=ca_file,
            client_cert_file=client_cert_file,
            client_key_file=client_key_file,
        )
        self._target = target
        self.node_id = node_id
        self.interval_s = float(interval_s)
        self.timeout_s = float(timeout_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _REPORTERS.add(self)

    @property
    def nonce(self) -> int:
        """This node instance's random nonce (a forked child draws its own)."""
        return self._core.nonce

    @property
    def last_error(self) -> str:
        """The last failed send, e.g. ``HTTP 503: ...`` or ``timed out: ...``
        ("" if none yet); kept after later successes, see `failing_since`."""
        return self._core.last_error

    @property
    def failing_since(self) -> float | None:
        """When the current run of failed sends began (``time.time()``
        seconds), None when the last send went through."""
        return self._core.failing_since

    def start(self) -> NodeReporter:
        """Starts the reporter's daemon thread, which drains and sends every
        ``interval_s`` (one call into Rust, the GIL held only for the
        drain), and returns the reporter. ``RuntimeError`` if started
        before (also when stopped since: make a new reporter); a reporter
        stopped before it ever started starts."""
        if self._thread is not None:
            raise RuntimeError("NodeReporter already started (start() works once per reporter)")
        # A stop() before any start() set it: the new thread would see it
        # at once and end, leaving a reporter that looks started and never
        # sends.
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="edgeless-node-reporter", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Stops the thread, then drains and sends once more within
        ``timeout_s`` (GIL released but for the drain) and closes the
        connection; True if nothing is left pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        done = self._core.flush(self.timeout_s)
        self._core.close()
        return done

    def flush(self, *, deadline: float | None = None) -> bool:
        """Drains now and sends everything pending, by ``deadline``
        (`time.monotonic()`) if given, each request within ``timeout_s``
        (GIL released but for the drain); True if all went. Never raises for
        a failed send: see `last_error` and ``stats()``; ``ValueError`` for
        a ``deadline`` that is not a number (NaN included)."""
        if deadline is None:
            return self._core.flush(None)
        if not (isinstance(deadline, (int, float)) and not math.isnan(deadline)):
            # Named here: the core would name its own budget_s instead.
            raise ValueError(f"deadline must be a time.monotonic() value, got {deadline!r}")
        return self._core.flush(deadline - time.monotonic())

    def stats(self) -> NodeReporterStats:
        """Counters and pending gauges, every key documented in
        `NodeReporterStats`; a fresh dict, never waits for a send in
        progress."""
        return self._core.stats()

    def __enter__(self) -> NodeReporter:
        """Starts the reporter (`start()`) and returns it, for ``with ... as r:``."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """`stop()`: one last drain and send within ``timeout_s``."""
        self.stop()

    def _after_fork_in_child(self) -> None:
        """See the module doc: the child's reporter is a new node instance."""
        was_running = self._thread is not None and not self._stop.is_set()
        self._stop = threading.Event()
        self._thread = None
        self._core.after_fork_in_child()
        if was_running:
            self.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._core.flush()
            except Exception:  # never let the thread die
                log.exception("NodeReporter: unexpected error")
