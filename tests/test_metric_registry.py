"""The metric registry (vitalfm.evaluation.metric_registry) and the quantile levels
(vitalfm.evaluation.quantiles): every record on a hand-computed example, registration that
refuses clashes, and no metric, metric sum or quantile column declared anywhere else."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
from evaluation_testing import dtw_dp

from vitalfm.evaluation import metric_registry, metrics
from vitalfm.evaluation.metric_registry import (
    BASE_SUMS,
    DTW,
    MAE,
    METRICS,
    REGISTRY,
    STATISTICS,
    Metric,
    MetricRegistry,
    dtw_distances,
)
from vitalfm.evaluation.quantiles import (
    CENTRAL_INTERVALS,
    CRPS_LEVELS,
    FORECAST_LEVELS,
    OPTIONAL_LEVELS,
    quantile_column,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "vitalfm"

# --- every record on a hand-computed example ---------------------------------------------------

# Four points. Every CRPS level forecasts the median, so each point's CRPS term is the mean over
# the levels a of 2 * pinball_a = |y - m| (the mean of a and of 1 - a is 1/2); the 80% interval
# is [m, m]; the 95% interval is m -/+ 0.5, without an upper bound at the third point.
Y = np.array([2.0, 0.0, 4.0, 3.0])
MEDIAN = np.array([1.0, 1.0, 6.0, 3.0])  # |y - m| = 1, 1, 2, 0
QUANTILES = {level: MEDIAN.copy() for level in CRPS_LEVELS}
QUANTILES[0.025] = MEDIAN - 0.5
QUANTILES[0.975] = np.array([1.5, 1.5, np.nan, 3.5])
SCALE = np.array([1.0, np.nan, 2.0, 0.5])  # the second point's series has no MASE scale
# Two series for DTW: the first aligns step by step (sqrt(1 + 1 + 4 + 0)); the second warps
# onto the truth at no cost (forecast 0, 1, 1 against truth 0, 0, 1).
TRUTH = np.array([[2.0, 0.0, 4.0, 3.0], [0.0, 0.0, 1.0, np.nan]])
FORECAST = np.array([[1.0, 1.0, 6.0, 3.0], [0.0, 1.0, 1.0, np.nan]])
OBSERVED = np.isfinite(TRUTH)
EXPECTED = {
    "mse": (1 + 1 + 4 + 0) / 4,
    "mae": (1 + 1 + 2 + 0) / 4,
    "mape": 100 * (1 / 2 + 2 / 4 + 0 / 3) / 3,  # y = 0 left out
    "dtw": (math.sqrt(6) + 0) / 2,
    "crps": (1 + 1 + 2 + 0) / 4,
    "wql": (1 + 1 + 2 + 0) / (2 + 0 + 4 + 3),
    "mase": (1 / 1 + 2 / 2 + 0 / 0.5) / 3,  # no scale: left out
    "coverage_80": 1 / 4,  # only y = m lies in [m, m]
    "coverage_95": 1 / 3,  # 2 outside [0.5, 1.5], 0 outside [0.5, 1.5], 3 inside [2.5, 3.5]
    # y <= m at 3 of 4 points (0.75 at each 0.1-0.9 level), y <= q_0.025 at 2 of 4, y <= q_0.975
    # at 2 of the 3 points that have it; 0.05 and 0.95 are absent: 11 levels in the mean.
    "calibration_error": (
        sum(abs(0.75 - a) for a in CRPS_LEVELS) + abs(2 / 4 - 0.025) + abs(2 / 3 - 0.975)
    )
    / 11,
}
#: The count each metric reports as n_points on the example.
EXPECTED_POINTS = {"mape": 3, "mase": 3, "coverage_95": 3}


def example_sums() -> dict[str, float]:
    terms = metrics.point_terms(Y, MEDIAN, QUANTILES, SCALE)
    sums = {name: float(values.sum()) for name, values in terms.items()}
    sums["n_points"] = len(Y)
    for metric in REGISTRY:
        if metric.series is not None:
            values = metric.series(TRUTH, FORECAST, OBSERVED)
            sums[metric.numerator] = float(np.nansum(values))
            sums[metric.denominator] = float(np.isfinite(values).sum())
    return sums


def test_every_registered_metric_has_a_hand_computed_example() -> None:
    assert set(EXPECTED) == set(METRICS), "add the new metric's hand-computed value to EXPECTED"


@pytest.mark.parametrize("name", METRICS)
def test_each_metric_on_the_hand_computed_example(name: str) -> None:
    sums = example_sums()
    assert float(metrics.metric_value(name, sums)) == pytest.approx(EXPECTED[name])
    record = REGISTRY.get(name)
    if record.terms is not None:
        assert sums[record.point_count] == EXPECTED_POINTS.get(name, len(Y))


def test_the_score_tables_columns_follow_the_registry() -> None:
    assert METRICS == (
        "mse",
        "mae",
        "mape",
        "dtw",
        "crps",
        "wql",
        "mase",
        "coverage_80",
        "coverage_95",
        "calibration_error",
    )
    point = ("se", "ae", "ape", "n_ape", "crps", "abs_y", "ase", "n_ase")
    point += ("cov80", "n_cov80", "cov95", "n_cov95")
    point += tuple(f"below_q{a:g}" for a in FORECAST_LEVELS)
    point += ("n_q0.025", "n_q0.05", "n_q0.95", "n_q0.975")
    assert (*BASE_SUMS, *point, "dtw", "n_dtw") == STATISTICS
    counts = ("n_ape", "n_ase", "n_cov80", "n_cov95", "n_dtw")
    assert (*BASE_SUMS, *counts) == metric_registry.COUNT_SUMS
    errors = [m.name for m in REGISTRY.error_metrics()]
    assert errors == [*METRICS[:7], "calibration_error"]
    assert metric_registry.SELECTION_METRIC is MAE and DTW.whole_horizon_only


def test_coverage_records_use_the_scored_intervals() -> None:
    coverages = [m for m in REGISTRY if m.nominal is not None]
    assert {m.nominal: m.interval for m in coverages} == CENTRAL_INTERVALS
    assert all(not m.lower_is_better for m in coverages)
    record = REGISTRY.get("coverage_80")
    assert record.badness(np.array([0.78, 0.9])) == pytest.approx([0.02, 0.1])


def test_dtw_matches_dynamic_programming_including_masks() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(80, 10, (40, 12))
    forecast = truth + rng.normal(0, 5, truth.shape)
    observed = rng.random(truth.shape) < 0.5
    observed[0] = False
    observed[0, 4] = True  # one point
    observed[1] = False
    observed[1, [2, 9]] = True  # two points (dtaidistance's pruning gets these wrong)
    observed[2] = False  # none -> NaN
    got = dtw_distances(truth, forecast, observed)
    assert np.isnan(got[2])
    for i in [0, 1, *range(3, 40)]:
        keep = observed[i]
        assert got[i] == pytest.approx(dtw_dp(list(forecast[i, keep]), list(truth[i, keep])))


# --- registration ------------------------------------------------------------------------------


def ones(points: metric_registry.PointForecast) -> tuple[np.ndarray, ...]:
    return (np.ones_like(points.y),)


def record(**fields: object) -> Metric:
    base = Metric(
        name="new",
        label="New",
        definition="a test metric",
        numerator="new_sum",
        denominator="n_points",
        sums=("new_sum",),
        terms=ones,
    )
    return dataclasses.replace(base, **fields)


def registry_with(*records: Metric) -> MetricRegistry:
    registry = MetricRegistry()
    for existing in records:
        registry.register(existing)
    return registry


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "mae", "label": "Other"}, "a metric of that name is registered already"),
        ({"label": "MAE"}, "its label 'MAE' is metric 'mae''s"),
        ({"series": dtw_distances}, "it needs exactly one of terms"),
        ({"terms": None}, "it needs exactly one of terms"),
        ({"sums": ("ae",), "numerator": "ae"}, "sum(s) ae are declared already"),
        ({"sums": ()}, "it must declare its sums, each once"),
        ({"numerator": "nowhere"}, "its numerator 'nowhere' is no declared sum"),
        ({"point_count": "n_new"}, "its point_count 'n_new' is no declared sum"),
        ({"nominal": 0.8}, "a coverage needs both its nominal level and its interval"),
        (
            {"nominal": 0.5, "interval": (0.25, 0.75)},
            "its interval (0.25, 0.75) is not vitalfm.evaluation.quantiles",
        ),
        ({"selects": True}, "metric 'mae' selects already"),
        ({"factor": 0.0}, "its factor 0.0 is not a positive number"),
        ({"numerator": None}, "it needs a numerator and a denominator, or a value function"),
        (
            {"value": metric_registry.calibration_error},
            "a metric with a value function is a point metric without numerator",
        ),
        (
            {
                "value": metric_registry.calibration_error,
                "numerator": None,
                "denominator": None,
                "factor": 2.0,
            },
            "a metric with a value function is a point metric without numerator",
        ),
    ],
)
def test_register_refuses_clashes_and_sums_that_do_not_add_up(changes, problem) -> None:
    registry = registry_with(MAE)
    with pytest.raises(ValueError, match=re.escape(f"cannot be registered: {problem}")):
        registry.register(record(**changes))
    assert registry.names() == ("mae",)


def test_a_new_metric_is_one_record() -> None:
    registry = registry_with(*REGISTRY)
    added = registry.register(record(numerator="crps", denominator="new_sum"))
    assert registry.get("new") is added and registry.names()[-1] == "new"
    assert registry.point_sums()[-1] == "new_sum" and "new_sum" in registry.sums()
    with pytest.raises(KeyError, match="no metric 'absent'; registered: mse, mae"):
        registry.get("absent")


# --- the quantile levels ------------------------------------------------------------------------


def test_quantile_levels_have_one_definition() -> None:
    from vitalfm.config import load_schema
    from vitalfm.config_rules import OPTIONAL_QUANTILE_LEVELS, REQUIRED_QUANTILE_LEVELS
    from vitalfm.engine.forecast import DEFAULT_LEVELS
    from vitalfm.models.baselines.inputs import QUANTILE_LEVELS

    assert REQUIRED_QUANTILE_LEVELS is CRPS_LEVELS and OPTIONAL_QUANTILE_LEVELS is OPTIONAL_LEVELS
    assert DEFAULT_LEVELS is FORECAST_LEVELS and QUANTILE_LEVELS is FORECAST_LEVELS
    levels = load_schema()["properties"]["forecast"]["properties"]["quantile_levels"]
    assert tuple(levels["default"]) == FORECAST_LEVELS  # YAML cannot import it
    assert OPTIONAL_LEVELS == (0.025, 0.975)
    assert set(CRPS_LEVELS) | set(OPTIONAL_LEVELS) <= set(FORECAST_LEVELS)
    assert [quantile_column(level) for level in (0.025, 0.1, 0.5)] == ["q0.025", "q0.1", "q0.5"]


# --- nothing declared outside its registry -------------------------------------------------------

#: Literals that may name a metric outside the registry, per file (relative to src/vitalfm):
#: none today (the trainer spells its early-stopping metrics through the registry's records).
ALLOWED: dict[str, set[str]] = {}


def declared_names() -> set[str]:
    """Metric names and the sums of the score tables (less the sums every table has)."""
    return set(METRICS) | (set(STATISTICS) - set(BASE_SUMS))


def stray_declarations(tree: ast.AST, names: set[str], allowed: set[str]) -> list[str]:
    """Each string literal in ``names`` (a metric, alone or in a tuple, set or dict) and each
    f-string that builds a quantile column, in source order."""
    found = []
    for node in ast.walk(tree):
        literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if literal and node.value in names and node.value not in allowed:
            found.append((node.lineno, node.col_offset, repr(node.value)))
        if isinstance(node, ast.JoinedStr):  # f"q{level:g}": a quantile column's name
            parts = node.values
            if (
                parts
                and isinstance(parts[0], ast.Constant)
                and parts[0].value == "q"
                and any(isinstance(p, ast.FormattedValue) for p in parts)
            ):
                found.append((node.lineno, node.col_offset, "a quantile column (quantile_column)"))
    return [f"line {line}: {what}" for line, _, what in sorted(found)]


def test_no_metric_is_declared_outside_the_registry() -> None:
    names = declared_names()
    own = {SRC / "evaluation" / "metric_registry.py", SRC / "evaluation" / "quantiles.py"}
    strays = {}
    for path in sorted(SRC.rglob("*.py")):
        if path in own:
            continue
        relative = path.relative_to(SRC).as_posix()
        found = stray_declarations(ast.parse(path.read_text()), names, ALLOWED.get(relative, set()))
        if found:
            strays[relative] = found
    assert not strays, (
        "metrics, their sums and quantile columns are declared only in "
        "vitalfm/evaluation/metric_registry.py and quantiles.py; use the records "
        f"(REGISTRY, MAE.name, metric.label, quantile_column) instead: {strays}"
    )


def test_the_check_finds_a_tuple_of_metric_names() -> None:
    tree = ast.parse('X = ("mae", "crps")\nY = {"coverage_95": 0.95}\nZ = f"q{level:g}"\n')
    assert stray_declarations(tree, declared_names(), set()) == [
        "line 1: 'mae'",
        "line 1: 'crps'",
        "line 2: 'coverage_95'",
        "line 3: a quantile column (quantile_column)",
    ]
