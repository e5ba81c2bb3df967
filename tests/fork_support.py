"""Forking a threaded test process and waiting, bounded, for the child."""
from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Callable


def fork_child(child: Callable[[], int]) -> int:
    """Forks; the child runs `child` and exits with its code (1 if it
    raises). Returns the child's pid in the parent."""
    with warnings.catch_warnings():
        # 3.12+ warns that forking a threaded process may deadlock: that is
        # what the callers check does not happen.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def wait_or_kill(pid: int, deadline_s: float) -> int | None:
    """The child's exit code, or None if it had to be killed."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None
