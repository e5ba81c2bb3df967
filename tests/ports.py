"""Loopback ports for tests that must know a port before a server binds it,
or bind it again after closing it.

A port from ``bind(("127.0.0.1", 0))`` is in the kernel's ephemeral range:
once the test closes it, any outgoing connection (a reporter, a Redis client,
another test's thread) may be given that same port as its local end, and the
next ``bind`` fails with EADDRINUSE. CI hit exactly that. Ports handed out
here lie below the ephemeral range, where only an explicit ``bind`` can take
them, and each is handed out once per test process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
_given: set[int] = set()


def _candidates() -> range:
    try:
        first_ephemeral = int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    return range(_LOWEST, max(first_ephemeral, _LOWEST + 1000))


def listening_socket(backlog: int = 8) -> socket.socket:
    """A socket bound to a fresh port outside the ephemeral range and
    listening; the caller closes it (and may bind the port again later)."""
    candidates = _candidates()
    for _ in range(200):
        port = random.choice(candidates)
        if port in _given:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        _given.add(port)
        s.listen(backlog)
        return s
    raise RuntimeError(f"no free loopback port in {candidates}")


def free_port() -> int:
    """A port nothing listens on now and no outgoing connection can take."""
    with listening_socket() as s:
        port: int = s.getsockname()[1]
        return port
