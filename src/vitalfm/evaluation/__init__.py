"""Evaluation: metrics on observed target points, per-patient scores, patient bootstrap.

- :mod:`~vitalfm.evaluation.metrics`: the metric definitions and the study's tables.
- :mod:`~vitalfm.evaluation.scoring`: rule ``score`` (forecasts -> per-patient sums).
- :mod:`~vitalfm.evaluation.bootstrap`: resampling patients as count weights.
"""

from vitalfm.config import minmax_ranges
from vitalfm.evaluation.metrics import METRICS, study_metrics, write_metrics
from vitalfm.evaluation.scoring import read_forecasts, read_scores, score_forecasts, score_run

__all__ = [
    "METRICS",
    "minmax_ranges",
    "read_forecasts",
    "read_scores",
    "score_forecasts",
    "score_run",
    "study_metrics",
    "write_metrics",
]
