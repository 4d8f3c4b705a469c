"""The calibration error and per-level coverage (vitalfm.evaluation.metric_registry, through
scoring, the run summary's bootstrap and the calibration table) against hand-computed cases,
simulated forecasts of known calibration and a direct numpy computation from a forecast
table; and the calibration figure."""

from __future__ import annotations

from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from evaluation_testing import make_forecasts, make_run, make_windows, scored, study_run

from vitalfm.evaluation import metrics, summary
from vitalfm.evaluation.metric_registry import (
    CALIBRATION_ERROR,
    CALIBRATION_LEVELS,
    level_coverages,
)
from vitalfm.evaluation.quantiles import CRPS_LEVELS, FORECAST_LEVELS, quantile_column
from vitalfm.evaluation.run_summary import CALIBRATION_COLUMNS

NAME = CALIBRATION_ERROR.name
Z = {level: NormalDist().inv_cdf(level) for level in FORECAST_LEVELS}


def sums_of(y: np.ndarray, quantiles: dict[float, np.ndarray]) -> dict[str, np.ndarray]:
    """The registry's sums of points ``y`` with ``quantiles`` (the median is q_0.5)."""
    terms = metrics.point_terms(y, quantiles[0.5], quantiles, np.ones_like(y))
    return {name: values.sum() for name, values in terms.items()} | {"n_points": len(y)}


def gaussian(y: np.ndarray, sd: float) -> dict[float, np.ndarray]:
    """Every forecast level of N(0, sd^2) at each point."""
    return {level: np.full_like(y, sd * z) for level, z in Z.items()}


# --- hand-computed cases ---------------------------------------------------------------------


def test_exact_small_case_with_ties_and_missing_levels() -> None:
    y = np.array([1.0, 2.0, 3.0])
    quantiles = {level: np.array([1.0, 1.5, 5.0]) for level in CRPS_LEVELS}  # y = q ties: below
    quantiles[0.025] = np.array([0.0, np.nan, 3.0])  # 1 of the 2 points that have it
    quantiles[0.975] = np.full(3, np.nan)  # no point has it: left out of the mean
    # 0.05 and 0.95 absent: left out; each 0.1-0.9 level covers 2 of 3 points
    sums = sums_of(y, quantiles)
    expected = (sum(abs(2 / 3 - a) for a in CRPS_LEVELS) + abs(1 / 2 - 0.025)) / 10
    assert float(metrics.metric_value(NAME, sums)) == pytest.approx(expected)
    coverage = level_coverages(sums)
    assert coverage[0.025] == pytest.approx(0.5) and coverage[0.1] == pytest.approx(2 / 3)
    assert np.isnan(coverage[0.975]) and np.isnan(coverage[0.05])


def test_no_level_at_all_gives_nan_not_zero() -> None:
    sums = {name: np.zeros(2) for name in CALIBRATION_ERROR.sums} | {"n_points": np.zeros(2)}
    assert np.isnan(metrics.metric_value(NAME, sums)).all()


def test_the_value_is_vectorised_over_resamples() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    one = sums_of(y, gaussian(y, 1.0))
    two = sums_of(y[:20], gaussian(y[:20], 0.5))
    stacked = {name: np.array([one[name], two[name]]) for name in one}
    got = metrics.metric_value(NAME, stacked)
    assert got == pytest.approx(
        [float(metrics.metric_value(NAME, one)), float(metrics.metric_value(NAME, two))]
    )


# --- forecasts of known calibration ----------------------------------------------------------


def test_a_calibrated_gaussian_forecast_has_an_error_near_zero() -> None:
    n = 20_000
    y = np.random.default_rng(1).normal(size=n)
    sums = sums_of(y, gaussian(y, 1.0))
    # each level's coverage has sd sqrt(a (1 - a) / n) <= 0.5 / sqrt(n); 4 of them bound the
    # mean of the absolute deviations with room to spare
    assert float(metrics.metric_value(NAME, sums)) < 4 * 0.5 / np.sqrt(n)
    for level, share in level_coverages(sums).items():
        assert abs(share - level) < 4 * np.sqrt(level * (1 - level) / n), level


def test_an_overconfident_forecast_has_an_s_shaped_curve_and_a_large_error() -> None:
    n = 20_000
    y = np.random.default_rng(2).normal(size=n)
    sums = sums_of(y, gaussian(y, 0.5))  # intervals half as wide as they should be
    coverage = level_coverages(sums)
    deviation = np.array([coverage[a] - a for a in CALIBRATION_LEVELS])
    levels = np.array(CALIBRATION_LEVELS)
    # above the level below the median, below it above: the curve coverage(a) is S-shaped
    assert (deviation[levels < 0.5] > 0.02).all() and (deviation[levels > 0.5] < -0.02).all()
    assert abs(coverage[0.5] - 0.5) < 4 * 0.5 / np.sqrt(n)
    expected = np.mean([abs(NormalDist().cdf(0.5 * Z[a]) - a) for a in CALIBRATION_LEVELS])
    got = float(metrics.metric_value(NAME, sums))
    assert got == pytest.approx(expected, abs=4 * 0.5 / np.sqrt(n))
    assert got > 0.1
    # an underconfident forecast is off the other way, a biased one on one side throughout
    wide = level_coverages(sums_of(y, gaussian(y, 2.0)))
    assert wide[0.1] < 0.1 and wide[0.9] > 0.9
    high = level_coverages(sums_of(y, {a: q + 1.0 for a, q in gaussian(y, 1.0).items()}))
    assert all(high[a] > a for a in CALIBRATION_LEVELS)


# --- the whole path: scoring, seeds, bootstrap, the calibration table ---------------------------


def numpy_calibration(forecasts: pd.DataFrame) -> tuple[float, dict[float, float]]:
    """The calibration error and per-level coverage of every observed point, straight from a
    forecast table."""
    seen = forecasts[forecasts["observed"]]
    y = seen["y_true"].to_numpy(np.float64)
    coverage = {}
    for level in FORECAST_LEVELS:
        q = seen[quantile_column(level)].to_numpy(np.float64)
        has = ~np.isnan(q)
        if has.any():
            coverage[level] = float(np.mean(y[has] <= q[has]))
    return float(np.mean([abs(c - a) for a, c in coverage.items()])), coverage


@pytest.mark.parametrize("drop_outer", [False, True])
def test_the_registry_path_matches_numpy_on_a_forecast_table(drop_outer: bool) -> None:
    windows = make_windows()
    forecasts = make_forecasts(windows, drop_95=drop_outer)
    seeds = [forecasts, make_forecasts(windows, seed=5, drop_95=drop_outer)]
    run = study_run("m", "zero_shot", "zero_shot", seeds=(0, 1))
    tables = summary.study_tables(
        [run],
        {(split, run.run_id, s): scored(seeds[s], windows) for split in ("test",) for s in (0, 1)},
        resamples=200,
        seed=0,
        splits=("test",),
    )
    expected = [numpy_calibration(frame) for frame in seeds]
    row = tables.metrics[
        (tables.metrics["metric"] == NAME)
        & (tables.metrics["scale"] == "original")
        & (tables.metrics["vital"] == "all")
        & (tables.metrics["step"] == 0)
    ].iloc[0]
    assert row["value"] == pytest.approx(np.mean([e for e, _ in expected]))  # mean over seeds
    assert row["ci_low"] < row["value"] < row["ci_high"]
    minmax = tables.metrics[
        (tables.metrics["metric"] == NAME)
        & (tables.metrics["scale"] == "minmax")
        & (tables.metrics["vital"] == "all")
        & (tables.metrics["step"] == 0)
    ]
    assert minmax["value"].iloc[0] == pytest.approx(row["value"])  # no unit
    table = tables.calibration
    assert list(table.columns) == list(CALIBRATION_COLUMNS)
    pooled = table[table["vital"] == "all"].set_index("level")
    levels = [a for a in FORECAST_LEVELS if not drop_outer or a in CRPS_LEVELS]
    assert list(pooled.index) == levels  # a level no forecast has is left out
    for level in levels:
        mean = np.mean([coverage[level] for _, coverage in expected])
        assert pooled.loc[level, "coverage"] == pytest.approx(mean)
        assert pooled.loc[level, "ci_low"] <= mean <= pooled.loc[level, "ci_high"]
        assert pooled.loc[level, "ci_high"] - pooled.loc[level, "ci_low"] > 0
        assert pooled.loc[level, "n_points"] == forecasts["observed"].sum()
    assert set(table["vital"]) == {"all", *windows.vital_names}
    assert (table["n_seeds"] == 2).all()


def test_paired_differences_cover_the_calibration_error() -> None:
    windows = make_windows()
    zero = make_run("m", "zero_shot", "zero_shot")
    lora = make_run("m", "lora-r2", "lora", rank=2)
    good = make_forecasts(windows)
    narrow = good.copy()
    for level in FORECAST_LEVELS:  # shrink every interval toward the median: overconfident
        column = quantile_column(level)
        narrow[column] = good["median"] + 0.2 * (good[column] - good["median"])
    scores = {zero.run_id: scored(good, windows), lora.run_id: scored(narrow, windows)}
    keyed = {(s, r, 0): scores[r] for s in ("validation", "test") for r in scores}
    tables = summary.study_tables([zero, lora], keyed, resamples=200, seed=0)
    paired = tables.paired
    row = paired[
        (paired["metric"] == NAME)
        & (paired["split"] == "test")
        & (paired["scale"] == "minmax")
        & (paired["vital"] == "all")
    ].iloc[0]
    assert row["run"] == lora.run_id and row["reference"] == "zero_shot"
    assert row["difference"] > 0 and row["ci_low"] > 0  # clearly worse calibrated
    assert row["fraction_better"] == 0


# --- the figure ----------------------------------------------------------------------------------


def test_the_figure_draws_a_curve_per_run_and_vital() -> None:
    from vitalfm.reporting.calibration_figure import calibration_figure

    runs = pd.DataFrame(
        {
            "run": ["a/zero_shot", "a/lora-r2", "p/zero_shot"],
            "model": ["a", "a", "p"],
            "family": ["chronos", "chronos", "persistence"],
            "setting": ["zero_shot", "lora-r2", "zero_shot"],
            "method": ["zero_shot", "lora", "zero_shot"],
            "kind": ["zero_shot", "lora", "zero_shot"],
            "baseline": [False, False, True],
            "oracle": [False, False, False],
            "chosen_by": [0.2, 0.1, 0.3],
        }
    )
    rows = [
        {"run": r, "split": "test", "vital": v, "level": a, "coverage": a, "ci_low": a - 0.01}
        | {"ci_high": a + 0.01}
        for r in runs["run"]
        for v in ("all", "heart_rate")
        for a in FORECAST_LEVELS
    ]
    calibration = pd.DataFrame(rows)
    no_metrics = pd.DataFrame(columns=["run", "metric", "scale", "vital", "step", "split", "value"])
    fig = calibration_figure(calibration, no_metrics, runs, ["all", "heart_rate"])
    axes = np.array(fig.axes).reshape(-1)
    assert len([ax for ax in axes if ax.lines]) == 4  # (model a, baselines) x (all, heart_rate)
    first = axes[0]
    curves = [line for line in first.lines if len(line.get_xdata()) == len(FORECAST_LEVELS)]
    # zero-shot, lora-r2 and the best baseline (the persistence run) in model a's row
    assert len(curves) == 3 and np.allclose(curves[0].get_ydata(), 0)
    plt.close(fig)
    empty = calibration_figure(calibration.iloc[:0], no_metrics, runs, ["all"])
    assert "no calibration table" in empty.axes[0].texts[0].get_text()
    plt.close(empty)
