"""Metric arithmetic over the registry: per-point terms, ratios of sums, comparisons.

The metrics themselves are declared in :mod:`vitalfm.evaluation.metric_registry`; this module
applies every record at once: :func:`point_terms` gives each point's contribution to every
per-point sum, :func:`metric_value` a metric from sums of any shape (a cell, a bootstrap
resample), :func:`is_better` compares two values the metric's way. It also holds the scale
transforms scoring applies before the terms: min-max and MASE's scale of a context.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vitalfm.evaluation.metric_registry import REGISTRY, PointForecast

#: The scales every point is scored on: original units, and each vital's fixed min-max range.
SCALES = ("original", "minmax")


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
    """Each point's contribution to every per-point sum of the registry (float64 arrays).

    ``quantiles`` maps levels to forecasts (it must hold
    :data:`~vitalfm.evaluation.quantiles.CRPS_LEVELS`; a missing or
    NaN interval bound leaves the point out of that coverage); ``scale`` is the MASE scale
    of each point's series (NaN: left out of MASE).
    """
    points = PointForecast(
        y=np.asarray(y, dtype=np.float64),
        median=np.asarray(median, dtype=np.float64),
        quantiles={
            level: np.asarray(values, dtype=np.float64) for level, values in quantiles.items()
        },
        scale=np.asarray(scale, dtype=np.float64),
    )
    terms: dict[str, np.ndarray] = {}
    for metric in REGISTRY:
        if metric.terms is not None:
            terms.update(zip(metric.sums, metric.terms(points), strict=True))
    return terms


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
    """A metric from sums of a score table's statistics (arrays of any shape, e.g. [B, C])."""
    record = REGISTRY.get(metric)
    if record.value is not None:
        return record.value(sums)
    return ratio(sums[record.numerator], sums[record.denominator], record.factor)


def is_better(metric: str, value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whether ``value`` beats ``reference``: lower error, or coverage nearer its nominal."""
    record = REGISTRY.get(metric)
    return record.badness(value) < record.badness(reference)
