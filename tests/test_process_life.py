"""Process life: a forked child keeps working targets."""

from __future__ import annotations

import os
import uuid

import pytest

from edgeless_telemetry import FunctionTime, PerformanceTarget, TelemetryProcessor


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_performance_target_works_in_forked_child() -> None:
    perf = PerformanceTarget()
    fid = str(uuid.uuid4())
    h = TelemetryProcessor([perf], log=False).get_handle({"FUNCTION_ID": fid})
    h.invocation_completed(0.1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: inherits the parent's pending sample, records its own
        try:
            h.invocation_completed(0.2)
            values = perf.get_metrics().function_times[FunctionTime.EXECUTION][fid].values.tolist()
            os.write(write, repr(values).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_saw = os.read(read, 1000).decode()
    os.waitpid(pid, 0)
    assert child_saw == "[0.1, 0.2]"
    # The parent's buffer is its own.
    assert perf.get_metrics().function_times[FunctionTime.EXECUTION][fid].values.tolist() == [0.1]
