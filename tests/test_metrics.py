"""The registry's arithmetic (vitalfm.evaluation.metrics) against independent plain-Python
computations: per-point terms, MASE's scale, comparisons, the min-max ranges."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation_testing import LEVELS, naive_scale, reference_metrics

from vitalfm.config import minmax_ranges, validate_config
from vitalfm.errors import ConfigError
from vitalfm.evaluation import metrics
from vitalfm.evaluation.metric_registry import METRICS


def test_point_terms_against_loops_on_fixed_arrays():
    y = np.array([10.0, 0.0, 7.5, 12.0, 3.0])
    median = np.array([9.0, 1.0, 8.0, 15.0, 3.0])
    q = {a: median + (a - 0.5) * np.array([4.0, 2.0, 1.0, 6.0, 0.5]) for a in LEVELS}
    q[0.975][4] = np.nan  # no 95% interval at this point
    scale = np.array([2.0, np.nan, 0.5, 1.0, 4.0])
    terms = metrics.point_terms(y, median, q, scale)
    sums = {k: v.sum() for k, v in terms.items()} | {"n_points": len(y)}
    points = [
        {
            "y": y[i],
            "median": median[i],
            "q": {a: q[a][i] for a in LEVELS},
            "scale": None if np.isnan(scale[i]) else scale[i],
            "series": i,
            "step": 1,
        }
        for i in range(len(y))
    ]
    expected = reference_metrics(points)
    for metric in METRICS:
        if metric != "dtw":
            assert metrics.metric_value(metric, sums) == pytest.approx(expected[metric]), metric
    assert sums["n_ape"] == 4 and sums["n_ase"] == 4 and sums["n_cov95"] == 4


def test_mase_scale_uses_successive_observed_readings_and_rejects_flat_or_short():
    context = np.array(
        [
            [1.0, 3.0, np.nan, 2.0, 6.0],  # readings 1, 3, 2, 6 -> (2 + 1 + 4) / 3
            [5.0, 5.0, 5.0, 5.0, 5.0],  # flat -> NaN
            [1.0, np.nan, np.nan, 4.0, np.nan],  # one pair -> NaN
            [2.0, 9.0, 4.0, 8.0, 4.0],  # 9 is filled (not observed): 2, 4, 8, 4
        ]
    )
    observed = np.isfinite(context)
    observed[3, 1] = False
    got = metrics.mase_scale(context, observed)
    for i in range(4):
        want = naive_scale(list(context[i]), list(observed[i]))
        assert (np.isnan(got[i]) and want is None) or got[i] == pytest.approx(want)
    assert got[0] == pytest.approx(7 / 3) and got[3] == pytest.approx(10 / 3)


def test_coverage_is_better_nearer_its_nominal_level():
    assert metrics.is_better("coverage_80", np.array(0.78), np.array(0.9))
    assert not metrics.is_better("coverage_80", np.array(0.6), np.array(0.9))
    assert metrics.is_better("mae", np.array(1.0), np.array(2.0))


def test_minmax_ranges_from_config_and_bad_ranges():
    cfg = validate_config({})
    ranges = minmax_ranges(cfg)
    assert ranges["heart_rate"] == (0, 300) and ranges["mbp"] == (0, 190)
    assert ranges["resp_rate"] == (0, 100) and ranges["temperature"] == (25, 45)
    cfg = validate_config({"evaluation": {"minmax_ranges": {"heart_rate": [0, 250]}}})
    with pytest.raises(ConfigError, match="no range for vital sbp"):
        minmax_ranges(cfg)
    assert minmax_ranges(cfg, ["heart_rate"]) == {"heart_rate": (0, 250)}
    cfg = validate_config({"evaluation": {"minmax_ranges": {"heart_rate": [300, 0]}}})
    with pytest.raises(ConfigError, match="high <= low"):
        minmax_ranges(cfg, ["heart_rate"])
