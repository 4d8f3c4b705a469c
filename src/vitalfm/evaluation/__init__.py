"""Evaluation: metrics on observed target points, per-patient scores, the bootstrap.

- :mod:`~vitalfm.evaluation.metrics`: the metric definitions.
- :mod:`~vitalfm.evaluation.scoring`: rule ``score`` (forecasts -> per-patient sums).
- :mod:`~vitalfm.evaluation.aggregate`: rule ``metrics`` (every run on validation and test,
  intervals over patients and seeds, paired differences, the oracle gap).
- :mod:`~vitalfm.evaluation.bootstrap`: resampling patients and seeds as count weights.
"""

from vitalfm.config import minmax_ranges
from vitalfm.evaluation.aggregate import study_metrics, write_metrics
from vitalfm.evaluation.metrics import METRICS
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
