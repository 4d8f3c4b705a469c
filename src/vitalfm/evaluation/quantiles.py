"""The quantile levels a forecast table holds, the intervals scored on them, their column names.

The one definition of each, shared by the forecast rule (:mod:`vitalfm.engine.forecast`), the
models that output fixed levels, the config check (:mod:`vitalfm.config_rules`) and the metrics
(:mod:`vitalfm.evaluation.metric_registry`). Plain Python: the config check imports it while
the Snakefile is parsed, which must stay free of numpy and pandas.
"""

from __future__ import annotations

#: The levels every forecast must hold: CRPS and wQL average the pinball loss over them, and
#: they include the 80% interval's bounds.
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Central prediction intervals scored for coverage: nominal coverage -> (low, high) level.
CENTRAL_INTERVALS: dict[float, tuple[float, float]] = {0.8: (0.1, 0.9), 0.95: (0.025, 0.975)}
#: Levels that only add a metric (an interval's coverage): a forecast without them gets NaN
#: for that metric rather than an error.
OPTIONAL_LEVELS = tuple(
    level for bounds in CENTRAL_INTERVALS.values() for level in bounds if level not in CRPS_LEVELS
)
#: The levels forecasts carry unless the config says otherwise (``forecast.quantile_levels``;
#: the schema's default, which a test keeps equal to this).
FORECAST_LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)


def quantile_column(level: float) -> str:
    """The forecast table's column for a quantile level (``q0.1``, ``q0.025``)."""
    return f"q{level:g}"
