"""How the command line reads ``--dataset-path``: a folder or a prefix."""

from __future__ import annotations

import os

DATASET_HELP = (
    "where the CSV dataset lives: a folder (an existing one, or a path ending in /) holds"
    " performance_samples.csv and application_logs.csv; anything else is a file-name prefix"
    " (out/run1_ gives out/run1_performance_samples.csv)"
)


def dataset_prefix(value: str) -> str:
    """The prefix `OrchestratorCollector` and `read_dataset` take.

    ``dataset`` naming an existing folder means ``dataset/``, not the prefix
    of ``datasetperformance_samples.csv``.
    """
    if value and not value.endswith(os.sep) and os.path.isdir(value):
        return value + os.sep
    return value
