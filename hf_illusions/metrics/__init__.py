"""Faithfulness metrics (JSD, argmax agreement, accuracy) as plain numpy functions.

``jsd_rows`` (the unvalidated formula) also takes torch tensors; the evaluation loop uses it.

Import from here rather than through ``evaluate``: the ``evaluate`` module in ``faithfulness/``
wraps these same functions, but importing ``evaluate`` costs seconds.
"""

from pathlib import Path

from hf_illusions.metrics.functional import (
    accuracy,
    agreement,
    entropy_rows,
    faithfulness,
    jsd,
    jsd_per_row,
    jsd_rows,
    normalize_rows,
)

FAITHFULNESS_METRIC_DIR = str(Path(__file__).resolve().parent / "faithfulness")
"""Folder of the ``evaluate`` module: ``evaluate.load(FAITHFULNESS_METRIC_DIR)`` works from any cwd."""

__all__ = [
    "FAITHFULNESS_METRIC_DIR",
    "accuracy",
    "agreement",
    "entropy_rows",
    "faithfulness",
    "jsd",
    "jsd_per_row",
    "jsd_rows",
    "normalize_rows",
]
