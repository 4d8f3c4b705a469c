"""The study's metrics, one :class:`Metric` record each: the only place a metric is declared.

Every metric is a function of sums over observed target points (or, for a series metric such as
DTW, over series): most are ``factor * numerator / denominator``; the calibration error is the
mean over quantile levels of |sum(below level) / sum(has level) - level| (a record's
:attr:`Metric.value`). Because of that, per-patient sums are sufficient statistics: a cell
(scale, vital, step) of any run, and any patient bootstrap resample of it, follows from a
weighted sum of them (:mod:`vitalfm.evaluation.scoring`). A record says which sums it adds to
the score tables and how each point (or series) contributes to them, how the tables label it,
which count the tables report beside it, and whether it is an error (lower is better) or a
coverage (best at its nominal level).

Scoring, the metrics rule and the report iterate over :data:`REGISTRY`, so a new metric is one
``REGISTRY.register(Metric(...))`` below plus its test (``tests/test_metric_registry.py``), and
a test fails if a metric is named anywhere else in ``src/``. Per-point terms come from
``gluonts.ev.stats``, DTW from ``dtaidistance``. Records are registered in the order the
metrics table lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from gluonts.ev import stats

from vitalfm.evaluation.quantiles import (
    CENTRAL_INTERVALS,
    CRPS_LEVELS,
    FORECAST_LEVELS,
    quantile_column,
)

#: Sums every score table has whatever the metrics: scored points and distinct windows.
BASE_SUMS = ("n_points", "n_windows")


@dataclass(frozen=True)
class PointForecast:
    """One scale's scored points: truth, median, quantiles by level, each point's MASE scale.

    Arrays are float64 of one length; ``scale`` is the MASE scale of the point's series (NaN:
    the series has none, see :func:`vitalfm.evaluation.metrics.mase_scale`).
    """

    y: np.ndarray
    median: np.ndarray
    quantiles: Mapping[float, np.ndarray]
    scale: np.ndarray

    @cached_property
    def data(self) -> dict[str, np.ndarray]:
        """The points in the form ``gluonts.ev.stats`` reads (quantiles keyed by str(level))."""
        data = {"label": self.y, "median": self.median}
        for level, values in self.quantiles.items():
            data[str(level)] = values
        return data


#: Per-point terms of a metric's sums, one array for each name in :attr:`Metric.sums`.
PointTerms = Callable[[PointForecast], tuple[np.ndarray, ...]]
#: A metric's value from the score tables' sums (arrays of one shape, e.g. [B, S, C]).
SumsValue = Callable[[Mapping[str, np.ndarray]], np.ndarray]
#: Per-series value: (truth, forecast, observed) [S, H] -> [S], NaN for a series without points.
SeriesValue = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One metric: its sums, how points feed them, and how the tables show and rank it."""

    #: The metrics table's ``metric`` value.
    name: str
    #: The tables' column header.
    label: str
    #: What it is, in words (for readers of the registry).
    definition: str
    #: The sums that make it: ``factor * sum(numerator) / sum(denominator)``. Each is one of
    #: :data:`BASE_SUMS`, one of this record's :attr:`sums` or a sum an earlier record declares.
    #: None (both) for a metric that is no single ratio: :attr:`value` says how it follows.
    numerator: str | None = None
    denominator: str | None = None
    #: The sums this record adds to the score tables, in column order.
    sums: tuple[str, ...] = ()
    #: How each point contributes to :attr:`sums` (a point metric) ...
    terms: PointTerms | None = None
    #: ... or the value of each (window, vital) series over the whole horizon (a series metric:
    #: sums (value, number of series), whole horizon only). The min-max scale divides the value
    #: by the vital's range, so it must scale linearly with the values, as DTW does.
    series: SeriesValue | None = None
    factor: float = 1.0
    #: The count the tables report as the metric's ``n_points`` (an integer sum).
    point_count: str = "n_points"
    #: Why points drop out of :attr:`point_count` (the score rule logs how many did).
    left_out: str | None = None
    #: A coverage's nominal level and the central interval it is scored on; None: an error,
    #: lower is better.
    nominal: float | None = None
    interval: tuple[float, float] | None = None
    #: The metric every "best" (setting, rank, baseline) is chosen on, on validation.
    selects: bool = False
    #: A point metric that is no single ratio of sums (the calibration error): its value from
    #: the sums, in place of ``factor * numerator / denominator``. It must be a function of
    #: sums only, so that the patient and seed bootstrap resample it like any other.
    value: SumsValue | None = None

    @property
    def lower_is_better(self) -> bool:
        """An error metric; a coverage is instead best nearest its :attr:`nominal` level."""
        return self.nominal is None

    @property
    def whole_horizon_only(self) -> bool:
        """A series metric: no per-step values."""
        return self.series is not None

    def badness(self, values: np.ndarray) -> np.ndarray:
        """What to minimise: the values, or a coverage's distance from its nominal level."""
        if self.nominal is None:
            return values
        return np.abs(values - self.nominal)


class MetricRegistry:
    """Metrics by name, in registration order; :meth:`register` refuses a record that clashes
    with one already there or whose sums do not add up."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> Metric:
        """Add ``metric`` (returned, so a module can keep it as a constant)."""
        problem = self._problem(metric)
        if problem is not None:
            raise ValueError(f"metric {metric.name!r} cannot be registered: {problem}")
        self._metrics[metric.name] = metric
        return metric

    def _problem(self, metric: Metric) -> str | None:
        if metric.name in self._metrics:
            return "a metric of that name is registered already"
        taken = {m.label: m.name for m in self}
        if metric.label in taken:
            return f"its label {metric.label!r} is metric {taken[metric.label]!r}'s"
        if (metric.terms is None) == (metric.series is None):
            return "it needs exactly one of terms (per point) and series (per series)"
        if not metric.sums or len(set(metric.sums)) != len(metric.sums):
            return "it must declare its sums, each once"
        known = self.sums()
        clash = [name for name in metric.sums if name in known]
        if clash:
            return f"sum(s) {', '.join(clash)} are declared already"
        usable = {*known, *metric.sums}
        ratio = metric.numerator is not None or metric.denominator is not None
        if metric.value is not None:
            if ratio or metric.series is not None or metric.factor != 1.0:
                return (
                    "a metric with a value function is a point metric without numerator, "
                    "denominator or factor"
                )
        elif metric.numerator is None or metric.denominator is None:
            return "it needs a numerator and a denominator, or a value function"
        roles = ("numerator", "denominator", "point_count") if ratio else ("point_count",)
        for role in roles:
            if getattr(metric, role) not in usable:
                return f"its {role} {getattr(metric, role)!r} is no declared sum"
        if metric.series is not None and metric.sums != (metric.numerator, metric.denominator):
            return "a series metric's sums are its (numerator, denominator): values, series"
        if (metric.nominal is None) != (metric.interval is None):
            return "a coverage needs both its nominal level and its interval"
        if metric.nominal is not None and CENTRAL_INTERVALS.get(metric.nominal) != metric.interval:
            return (
                f"its interval {metric.interval} is not vitalfm.evaluation.quantiles."
                f"CENTRAL_INTERVALS[{metric.nominal}]"
            )
        if metric.selects:
            if not metric.lower_is_better:
                return "the metric that selects must be an error (lower is better)"
            chosen = [m.name for m in self if m.selects]
            if chosen:
                return f"metric {chosen[0]!r} selects already"
        if not (math.isfinite(metric.factor) and metric.factor > 0):
            return f"its factor {metric.factor} is not a positive number"
        return None

    def __iter__(self) -> Iterator[Metric]:
        return iter(tuple(self._metrics.values()))

    def __len__(self) -> int:
        return len(self._metrics)

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def get(self, name: str) -> Metric:
        """The record of ``name``; a KeyError lists the registered names."""
        try:
            return self._metrics[name]
        except KeyError:
            raise KeyError(f"no metric {name!r}; registered: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._metrics)

    def sums(self) -> tuple[str, ...]:
        """Every sum a score table holds, in column order (:data:`STATISTICS`)."""
        return (*BASE_SUMS, *self.point_sums(), *self.series_sums())

    def point_sums(self) -> tuple[str, ...]:
        """Sums each point adds its term to."""
        return tuple(name for m in self if m.terms is not None for name in m.sums)

    def series_sums(self) -> tuple[str, ...]:
        """Sums of series values and series counts (whole-horizon rows only)."""
        return tuple(name for m in self if m.series is not None for name in m.sums)

    def count_sums(self) -> tuple[str, ...]:
        """The sums that are counts (integers in the score tables)."""
        counts = [m.point_count for m in self] + [m.denominator for m in self if m.series]
        return tuple(dict.fromkeys([*BASE_SUMS, *counts]))

    def error_metrics(self) -> tuple[Metric, ...]:
        """The metrics where lower is better (the persistence-to-oracle gap is taken of these)."""
        return tuple(m for m in self if m.lower_is_better)

    def selection(self) -> Metric:
        """The metric every "best" is chosen on."""
        chosen = [m for m in self if m.selects]
        if len(chosen) != 1:
            raise LookupError("exactly one registered metric must have selects=True")
        return chosen[0]


# --- per-point terms and per-series values --------------------------------------------------


def _squared_error(points: PointForecast) -> tuple[np.ndarray, ...]:
    return (stats.squared_error(points.data, "median"),)


def _absolute_error(points: PointForecast) -> tuple[np.ndarray, ...]:
    return (stats.absolute_error(points.data, "median"),)


def _absolute_percentage_error(points: PointForecast) -> tuple[np.ndarray, ...]:
    """|y - m| / |y|, and which points count (y != 0)."""
    nonzero = points.y != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(nonzero, stats.absolute_percentage_error(points.data, "median"), 0.0)
    return terms, nonzero.astype(np.float64)


def _quantile_loss(points: PointForecast) -> tuple[np.ndarray, ...]:
    """gluonts' quantile_loss is 2 * pinball; CRPS ~ its mean over the levels."""
    losses = [stats.quantile_loss(points.data, level) for level in CRPS_LEVELS]
    return (np.mean(losses, axis=0),)


def _absolute_label(points: PointForecast) -> tuple[np.ndarray, ...]:
    return (stats.absolute_label(points.data),)


def _absolute_scaled_error(points: PointForecast) -> tuple[np.ndarray, ...]:
    """|y - m| / s, and which points count (a finite scale s)."""
    usable = np.isfinite(points.scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        data = {**points.data, "seasonal_error": np.where(usable, points.scale, 1.0)}
        terms = np.where(usable, stats.absolute_scaled_error(data, "median"), 0.0)
    return terms, usable.astype(np.float64)


def interval_coverage(interval: tuple[float, float]) -> PointTerms:
    """Terms of the coverage of a central interval: whether low <= y <= high, and which points
    have both bounds (a missing or NaN bound leaves the point out)."""
    low_level, high_level = interval

    def terms(points: PointForecast) -> tuple[np.ndarray, ...]:
        nan = np.full_like(points.y, np.nan)
        low = points.data.get(str(low_level), nan)
        high = points.data.get(str(high_level), nan)
        # gluonts' coverage is one-sided (y <= q); the interval needs both bounds.
        has = np.isfinite(low) & np.isfinite(high)
        return (has & (low <= points.y) & (points.y <= high)).astype(np.float64), has.astype(
            np.float64
        )

    return terms


#: The levels the calibration error is taken over: every default forecast level (a forecast
#: without some of them, NaN or absent, is scored on the levels it has; a level a config adds
#: beyond these is not scored).
CALIBRATION_LEVELS = FORECAST_LEVELS


def below_sum(level: float) -> str:
    """The score tables' sum of points with y <= q_level (``below_q0.1``)."""
    return f"below_{quantile_column(level)}"


def level_count(level: float) -> str:
    """The sum counting the points that have a finite q_level: ``n_points`` for the levels
    every forecast must hold (:data:`CRPS_LEVELS`), ``n_q0.025`` etc. for the others."""
    return "n_points" if level in CRPS_LEVELS else f"n_{quantile_column(level)}"


#: The calibration error's sums: each level's count below, then the counts of the levels a
#: forecast may lack.
CALIBRATION_SUMS = (
    *(below_sum(level) for level in CALIBRATION_LEVELS),
    *(level_count(level) for level in CALIBRATION_LEVELS if level not in CRPS_LEVELS),
)


def _below_levels(points: PointForecast) -> tuple[np.ndarray, ...]:
    """Per level: whether y <= q_level (a tie counts as below, as gluonts' coverage does);
    then, for the levels a forecast may lack, whether q_level is finite. A missing or NaN
    quantile is neither below nor counted."""
    below, has = [], []
    for level in CALIBRATION_LEVELS:
        values = points.quantiles.get(level)
        if values is None:
            values = np.full_like(points.y, np.nan)
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            below.append((finite & (points.y <= values)).astype(np.float64))
        if level not in CRPS_LEVELS:
            has.append(finite.astype(np.float64))
    return (*below, *has)


def level_coverages(sums: Mapping[str, np.ndarray]) -> dict[float, np.ndarray]:
    """Observed coverage of each calibration level: the share of points with y <= q_level
    among those that have q_level (NaN where none has it), from sums of any shape."""
    out = {}
    for level in CALIBRATION_LEVELS:
        below = np.asarray(sums[below_sum(level)], dtype=np.float64)
        count = np.asarray(sums[level_count(level)], dtype=np.float64)
        share = np.full(np.broadcast_shapes(below.shape, count.shape), np.nan)
        np.divide(below, count, out=share, where=count > 0)
        out[level] = share
    return out


def calibration_error(sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean over the levels present (count > 0) of |coverage(level) - level|; NaN if none."""
    deviations = [np.abs(share - level) for level, share in level_coverages(sums).items()]
    stacked = np.stack(deviations)
    present = np.isfinite(stacked)
    count = present.sum(axis=0)
    total = np.where(present, stacked, 0.0).sum(axis=0)
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


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


# --- the records (y = truth, m = median forecast, q_a = the forecast's a-quantile) -------------

REGISTRY = MetricRegistry()

MSE = REGISTRY.register(
    Metric(
        name="mse",
        label="MSE",
        definition="mean of (y - m)^2",
        numerator="se",
        denominator="n_points",
        sums=("se",),
        terms=_squared_error,
    )
)
MAE = REGISTRY.register(
    Metric(
        name="mae",
        label="MAE",
        definition="mean of |y - m|",
        numerator="ae",
        denominator="n_points",
        sums=("ae",),
        terms=_absolute_error,
        selects=True,
    )
)
MAPE = REGISTRY.register(
    Metric(
        name="mape",
        label="MAPE",
        definition="100 * mean |y - m| / |y| over points with y != 0 (the others are counted)",
        numerator="ape",
        denominator="n_ape",
        sums=("ape", "n_ape"),
        terms=_absolute_percentage_error,
        factor=100.0,
        point_count="n_ape",
        left_out="with y = 0",
    )
)
DTW = REGISTRY.register(
    Metric(
        name="dtw",
        label="DTW",
        definition=(
            "mean over series (window, vital) of the DTW distance between m and y on the "
            "observed horizon steps (sqrt of the least summed squared difference along a "
            "warping path); whole horizon only"
        ),
        numerator="dtw",
        denominator="n_dtw",
        sums=("dtw", "n_dtw"),
        series=dtw_distances,
    )
)
CRPS = REGISTRY.register(
    Metric(
        name="crps",
        label="CRPS",
        definition=(
            "mean over points of mean_a 2 * pinball_a(y, q_a) over the levels 0.1 ... 0.9 "
            "(the quantile approximation of the CRPS)"
        ),
        numerator="crps",
        denominator="n_points",
        sums=("crps",),
        terms=_quantile_loss,
    )
)
WQL = REGISTRY.register(
    Metric(
        name="wql",
        label="WQL",
        definition="CRPS's sum divided by sum |y| (gluonts' mean_weighted_sum_quantile_loss)",
        numerator="crps",
        denominator="abs_y",
        sums=("abs_y",),
        terms=_absolute_label,
    )
)
MASE = REGISTRY.register(
    Metric(
        name="mase",
        label="MASE",
        definition=(
            "mean |y - m| / s, s = mean |x_t - x_prev| over pairs of successive observed "
            "readings in the window's context (filled bins skipped); series with s = 0 or "
            "fewer than 2 pairs are left out and counted"
        ),
        numerator="ase",
        denominator="n_ase",
        sums=("ase", "n_ase"),
        terms=_absolute_scaled_error,
        point_count="n_ase",
        left_out="of series with a flat or too short context",
    )
)
COVERAGE_80 = REGISTRY.register(
    Metric(
        name="coverage_80",
        label="Cov. 80%",
        definition="share of points with q_0.1 <= y <= q_0.9",
        numerator="cov80",
        denominator="n_cov80",
        sums=("cov80", "n_cov80"),
        terms=interval_coverage(CENTRAL_INTERVALS[0.8]),
        point_count="n_cov80",
        left_out="without 0.1/0.9 quantiles",
        nominal=0.8,
        interval=CENTRAL_INTERVALS[0.8],
    )
)
COVERAGE_95 = REGISTRY.register(
    Metric(
        name="coverage_95",
        label="Cov. 95%",
        definition="share of points with q_0.025 <= y <= q_0.975; NaN for a model without them",
        numerator="cov95",
        denominator="n_cov95",
        sums=("cov95", "n_cov95"),
        terms=interval_coverage(CENTRAL_INTERVALS[0.95]),
        point_count="n_cov95",
        left_out="without 0.025/0.975 quantiles",
        nominal=0.95,
        interval=CENTRAL_INTERVALS[0.95],
    )
)

CALIBRATION_ERROR = REGISTRY.register(
    Metric(
        name="calibration_error",
        label="Cal. err.",
        definition=(
            "mean over the quantile levels a of |share of points with y <= q_a - a|, over "
            "0.025, 0.05, 0.1, ..., 0.9, 0.95, 0.975; a level the forecast lacks (NaN or "
            "absent, e.g. a 0.1-0.9 model's outer levels) is left out of the mean, and each "
            "level's share counts only the points that have it"
        ),
        sums=CALIBRATION_SUMS,
        terms=_below_levels,
        value=calibration_error,
    )
)

# --- what the rest of the package reads -----------------------------------------------------

#: Every metric's name, in the metrics table's order.
METRICS = REGISTRY.names()
#: A score table's sums, in column order; of them, the per-point sums, and the counts.
STATISTICS = REGISTRY.sums()
POINT_SUMS = REGISTRY.point_sums()
SERIES_SUMS = REGISTRY.series_sums()
COUNT_SUMS = REGISTRY.count_sums()
#: The metric every "best" is chosen on (on validation).
SELECTION_METRIC = REGISTRY.selection()
