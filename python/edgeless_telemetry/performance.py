"""PerformanceTarget and what it drains: raw samples per function."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from . import _core
from .enums import FunctionTime


@dataclass(frozen=True)
class Samples:
    """Raw samples of one function and one `FunctionTime`, oldest first."""

    timestamps_ns: npt.NDArray[np.int64]
    """Wall-clock time of each sample, ns since the Unix epoch."""
    values: npt.NDArray[np.float64]
    """Durations in seconds."""

    def __len__(self) -> int:
        """The number of samples."""
        return len(self.values)


@dataclass(frozen=True)
class FunctionLogEntry:
    """One function log entry, as ``TelemetryHandle.log`` recorded it."""

    timestamp_ns: int
    """Wall-clock time of the entry, ns since the Unix epoch."""
    target: str
    """The log target (e.g. a logger name)."""
    message: str
    """The message, cut at the target's ``max_message_bytes``."""


@dataclass(frozen=True)
class Metrics:
    """Everything a `PerformanceTarget` held at one `get_metrics()` call.

    ``function_times`` has a (possibly empty) dict for every `FunctionTime`;
    function ids are canonical lowercase UUID strings.
    """

    function_times: dict[FunctionTime, dict[str, Samples]] = field(
        default_factory=lambda: {kind: {} for kind in FunctionTime}
    )
    """Per `FunctionTime`, the samples of each function id."""
    function_log_entries: dict[str, list[FunctionLogEntry]] = field(default_factory=dict)
    """Per function id, its log entries, oldest first."""

    @classmethod
    def _from_raw(cls, raw: tuple[list[list[tuple[str, bytearray, bytearray]]],
                                  list[tuple[str, list[tuple[int, str, str]]]]]) -> Metrics:
        times, logs = raw
        return cls(
            function_times={
                kind: {
                    fid: Samples(np.frombuffer(ts, dtype=np.int64), np.frombuffer(vs, dtype=np.float64))
                    for fid, ts, vs in times[kind]
                }
                for kind in FunctionTime
            },
            function_log_entries={
                fid: [FunctionLogEntry(*entry) for entry in entries] for fid, entries in logs
            },
        )

    def sample_count(self) -> int:
        """Samples of every kind and function together."""
        return sum(len(s) for per_kind in self.function_times.values() for s in per_kind.values())

    def is_empty(self) -> bool:
        """True when there is no sample and no log entry."""
        return self.sample_count() == 0 and not self.function_log_entries


class PerformanceTarget(_core.PerformanceTarget):
    """Bounded store of raw samples per function (EDGELESS PerformanceTarget).

    Each function gets one ring of ``capacity`` samples per `FunctionTime`;
    when a ring is full its oldest sample is overwritten and counted in
    ``stats()["samples_dropped"]``. Log entries are bounded per function by
    ``log_capacity`` entries and ``log_bytes`` bytes, messages are cut at
    ``max_message_bytes``; at most ``max_functions`` functions are tracked
    at once (events of further ones are refused and counted until a drain
    frees a slot). Events whose
    ``FUNCTION_ID`` is missing are not stored, as in EDGELESS, but counted.
    """

    def get_metrics(self) -> Metrics:
        """Drain everything recorded so far and reset (EDGELESS ``get_metrics``).

        Runs with the GIL held (writers need it too, so nothing is torn or
        lost): moves the buffers out and copies each column once into a
        buffer that numpy wraps without another copy, about 2.4-4 ns a
        sample (the README's bench table). Never raises; `stats()` counts
        what was overwritten before the drain.
        """
        return Metrics._from_raw(self._drain_raw())
