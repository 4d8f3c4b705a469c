"""The study's metrics, each a ratio of two sums over observed target points (or series).

Per-point terms come from ``gluonts.ev.stats`` and DTW from ``dtaidistance``. Because every
metric is ``factor * numerator / denominator`` with both sums taken over points, per-patient
sums are sufficient statistics: a cell (scale, vital, step) of any run, and any patient
bootstrap resample of it, is a weighted sum of them (see :mod:`vitalfm.evaluation.scoring`).

Definitions (y = truth, m = median forecast, q_a = the forecast's a-quantile):

- mse, mae: mean of (y - m)^2 and |y - m|.
- mape: 100 * mean |y - m| / |y| over points with y != 0 (the others are left out and counted).
- crps: mean over points of the quantile approximation mean_a 2 * pinball_a(y, q_a) over the
  levels 0.1 ... 0.9; wql: the same sum divided by sum |y| (gluonts'
  ``mean_weighted_sum_quantile_loss``).
- mase: mean |y - m| / s, s = mean |x_t - x_prev| over pairs of successive observed readings
  in the window's context (filled bins skipped); series with s = 0 or fewer than 2 pairs are
  left out and counted.
- coverage_80, coverage_95: share of points with q_0.1 <= y <= q_0.9 (q_0.025, q_0.975); NaN
  for a model without those quantiles.
- dtw: mean over series (window, vital) of the DTW distance between m and y on the observed
  horizon steps (dtaidistance: sqrt of the least summed squared difference along a warping
  path); whole horizon only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from gluonts.ev import stats

log = logging.getLogger(__name__)

METRICS = ("mse", "mae", "mape", "dtw", "crps", "wql", "mase", "coverage_80", "coverage_95")
#: Error metrics: lower is better. Coverage is better the closer it is to its nominal level.
ERROR_METRICS = ("mse", "mae", "mape", "dtw", "crps", "wql", "mase")
NOMINAL_COVERAGE = {"coverage_80": 0.8, "coverage_95": 0.95}
INTERVALS = {"coverage_80": (0.1, 0.9), "coverage_95": (0.025, 0.975)}
#: The levels every model forecasts; CRPS and wQL average the pinball loss over them.
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCALES = ("original", "minmax")

#: metric -> (numerator sum, denominator sum, factor)
RATIOS: dict[str, tuple[str, str, float]] = {
    "mse": ("se", "n_points", 1.0),
    "mae": ("ae", "n_points", 1.0),
    "mape": ("ape", "n_ape", 100.0),
    "dtw": ("dtw", "n_dtw", 1.0),
    "crps": ("crps", "n_points", 1.0),
    "wql": ("crps", "abs_y", 1.0),
    "mase": ("ase", "n_ase", 1.0),
    "coverage_80": ("cov80", "n_cov80", 1.0),
    "coverage_95": ("cov95", "n_cov95", 1.0),
}
#: The points a metric was computed on (what the tables report as n_points).
POINT_COUNTS = {
    "mape": "n_ape",
    "mase": "n_ase",
    "coverage_80": "n_cov80",
    "coverage_95": "n_cov95",
}
#: Per-point sums (each point adds its term); n_points, n_windows and the DTW sums are added
#: by the scoring.
POINT_TERMS = (
    "se",
    "ae",
    "ape",
    "n_ape",
    "crps",
    "abs_y",
    "ase",
    "n_ase",
    "cov80",
    "n_cov80",
    "cov95",
    "n_cov95",
)
STATISTICS = ("n_points", "n_windows", *POINT_TERMS, "dtw", "n_dtw")


def quantile_column(level: float) -> str:
    """The forecast table's column for a quantile level (as the forecast rule names it)."""
    return f"q{level:g}"


def to_minmax(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """(x - low) / (high - low), not clipped."""
    return (values - low) / (high - low)


def mase_scale(context: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[S] mean |x_t - x_prev| over successive observed context readings; NaN if unusable.

    ``context`` [S, C] values, ``observed`` [S, C] real readings (filled bins are skipped, so
    x_prev is the reading before x_t however many bins back). NaN where the series has fewer
    than 2 such pairs or the mean is 0 (MASE is undefined there).
    """
    positions = np.where(observed, np.arange(context.shape[1]), -1)
    previous = np.maximum.accumulate(positions, axis=1)[:, :-1]  # last reading before t
    pairs = observed[:, 1:] & (previous >= 0)
    earlier = np.take_along_axis(context, np.maximum(previous, 0), axis=1)
    diffs = np.where(pairs, np.abs(context[:, 1:] - earlier), 0.0)
    count = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = diffs.sum(axis=1) / count
    return np.where((count >= 2) & (scale > 0), scale, np.nan)


def point_terms(
    y: np.ndarray,
    median: np.ndarray,
    quantiles: Mapping[float, np.ndarray],
    scale: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each point's contribution to the sums in :data:`POINT_TERMS` (float64 arrays).

    ``quantiles`` maps levels to forecasts (it must hold :data:`CRPS_LEVELS`; a missing or
    NaN interval bound leaves the point out of that coverage); ``scale`` is the MASE scale
    of each point's series (NaN: left out of MASE).
    """
    y = np.asarray(y, dtype=np.float64)
    data: dict[str, np.ndarray] = {"label": y, "median": np.asarray(median, dtype=np.float64)}
    for level, values in quantiles.items():
        data[str(level)] = np.asarray(values, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    terms: dict[str, np.ndarray] = {
        "se": stats.squared_error(data, "median"),
        "ae": stats.absolute_error(data, "median"),
        "abs_y": stats.absolute_label(data),
    }
    nonzero = y != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms["ape"] = np.where(nonzero, stats.absolute_percentage_error(data, "median"), 0.0)
        usable = np.isfinite(scale)
        data["seasonal_error"] = np.where(usable, scale, 1.0)
        terms["ase"] = np.where(usable, stats.absolute_scaled_error(data, "median"), 0.0)
    terms["n_ape"] = nonzero.astype(np.float64)
    terms["n_ase"] = usable.astype(np.float64)
    # gluonts' quantile_loss is 2 * pinball; CRPS ~ its mean over the levels.
    terms["crps"] = np.mean([stats.quantile_loss(data, level) for level in CRPS_LEVELS], axis=0)
    for metric, short in (("coverage_80", "cov80"), ("coverage_95", "cov95")):
        low_level, high_level = INTERVALS[metric]
        nan = np.full_like(y, np.nan)
        low = data.get(str(low_level), nan)
        high = data.get(str(high_level), nan)
        # gluonts' coverage is one-sided (y <= q); the interval needs both bounds.
        has = np.isfinite(low) & np.isfinite(high)
        terms[short] = (has & (low <= y) & (y <= high)).astype(np.float64)
        terms[f"n_{short}"] = has.astype(np.float64)
    return terms


def dtw_distances(truth: np.ndarray, forecast: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[S] DTW distance per row between forecast and truth on the row's observed steps.

    Rows with no observed step give NaN. Uses dtaidistance's C implementation.
    """
    from dtaidistance import dtw

    # Exact DTW: dtaidistance 2.5.1's pruning returns inf or too large a distance for some
    # short series (e.g. length 2), so it stays off. The settings are converted once and the
    # C routine called directly: distance_fast re-parses them per call (6x slower here).
    settings = dtw.DTWSettings(use_pruning=False)
    try:
        from dtaidistance import dtw_cc

        kwargs = settings.c_kwargs()
        distance = lambda a, b: dtw_cc.distance(a, b, **kwargs)  # noqa: E731
    except ImportError:  # a build without the C extension: the library's Python code
        distance = lambda a, b: dtw.distance(a, b, use_c=False, use_pruning=False)  # noqa: E731
    out = np.full(truth.shape[0], np.nan)
    truth = np.asarray(truth, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    for i in np.flatnonzero(observed.any(axis=1)):
        keep = observed[i]
        out[i] = distance(
            np.ascontiguousarray(forecast[i, keep]), np.ascontiguousarray(truth[i, keep])
        )
    return out


def ratio(numerator: np.ndarray, denominator: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """factor * numerator / denominator, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    if factor != 1.0:
        out *= factor
    return out


def metric_value(metric: str, sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """A metric from sums of :data:`STATISTICS` (arrays of any shape, e.g. [B, cells])."""
    numerator, denominator, factor = RATIOS[metric]
    return ratio(sums[numerator], sums[denominator], factor)


def is_better(metric: str, value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whether ``value`` beats ``reference``: lower error, or coverage nearer its nominal."""
    if metric in NOMINAL_COVERAGE:
        nominal = NOMINAL_COVERAGE[metric]
        return np.abs(value - nominal) < np.abs(reference - nominal)
    return value < reference
