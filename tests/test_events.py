"""Clinical events from forecasts: truth, onset, context, the quantile and path estimators,
and the alarm metrics, checked by hand and against scikit-learn (an independent
implementation; tests only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.evaluation.event_metrics import (
    EVENT_COUNT_METRICS,
    group_metrics,
    resampled_auc_ap,
    roc_points,
    run_event_metrics,
    score_bins,
    weighted_auc_ap,
)
from vitalfm.evaluation.events import (
    Event,
    lead_minutes,
    observed_truth,
    parse_events,
    path_forecast,
    quantile_forecast,
    step_probabilities,
)

sklearn_metrics = pytest.importorskip(
    "sklearn.metrics", reason="scikit-learn is a test dependency (envs/ lock): install it"
)

HYPO = Event("hypotension", "mbp", 65.0, below=True, min_steps=1)
HYPO2 = Event("sustained", "mbp", 65.0, below=True, min_steps=2)
TACHY = Event("tachycardia", "heart_rate", 100.0, below=False, min_steps=1)
LEVELS = [0.1, 0.5, 0.9]
NAN = np.nan


# --- truth, onset, gaps ---------------------------------------------------------------------


def test_truth_onset_and_min_steps():
    values = np.array(
        [
            [70, 64, 70, 70],  # one low step
            [70, 64, 63, 70],  # two consecutive low steps from step 2
            [64, 70, 63, 62],  # a lone step 1, then a run of two from step 3
            [66, 65, 70, 80],  # 65 is not < 65
        ],
        dtype=float,
    )
    observed = np.ones_like(values, dtype=bool)
    occurs, onset = observed_truth(HYPO, values, observed)
    assert occurs.tolist() == [True, True, True, False]
    assert onset.tolist() == [2, 2, 1, 0]
    occurs, onset = observed_truth(HYPO2, values, observed)
    assert occurs.tolist() == [False, True, True, False]
    assert onset.tolist() == [0, 2, 3, 0]


def test_a_gap_breaks_a_run_and_unobserved_lows_do_not_count():
    values = np.array([[64, NAN, 63, 70], [70, 60, 60, 70]])
    observed = np.array([[True, False, True, True], [True, False, True, True]])
    occurs, onset = observed_truth(HYPO2, values, observed)
    assert occurs.tolist() == [False, False]  # step 2 unobserved breaks both runs
    occurs, onset = observed_truth(HYPO, values, observed)
    assert onset.tolist() == [1, 3]  # the unobserved 60 at step 2 is not a crossing


# --- the quantile estimator -----------------------------------------------------------------


def test_step_probability_interpolates_between_levels_and_puts_tails_at_the_ends():
    q = np.array([[[60.0, 70.0, 80.0]]])  # q0.1, q0.5, q0.9
    for c, want in [(59, 0.0), (60, 0.0), (60.0001, 0.1), (65, 0.3), (70, 0.5), (80, 0.9)]:
        event = Event("e", "mbp", c, below=True)
        assert step_probabilities(event, q, LEVELS)[0, 0] == pytest.approx(want, abs=1e-4)
    for c, want in [(59, 1.0), (60, 0.9), (75, 0.3), (80, 0.0), (90, 0.0)]:
        event = Event("e", "mbp", c, below=False)
        assert step_probabilities(event, q, LEVELS)[0, 0] == pytest.approx(want, abs=1e-4)


def test_point_forecast_gives_zero_or_one():
    q = np.array([[[64.0] * 3, [70.0] * 3], [[66.0] * 3, [66.0] * 3]])
    observed = np.ones((2, 2), dtype=bool)
    p, onset = quantile_forecast(HYPO, q, LEVELS, observed, 0.5)
    assert p.tolist() == [1.0, 0.0]
    assert onset.tolist() == [1, 0]


def test_comonotone_event_probability_is_max_over_runs_of_min_over_run():
    # per-step P(MAP < 65): 0.3, 0.7, 0.5, 0.9 (q0.1 = 60 -> linear to q0.5 = 70 etc.)
    steps = [0.3, 0.7, 0.5, 0.9]
    # quantiles that put c = 65 at level p of each step
    q = np.array([[_quantiles_with(65.0, p) for p in steps]])
    observed = np.ones((1, 4), dtype=bool)
    p1, on1 = quantile_forecast(HYPO, q, LEVELS, observed, 0.6)
    assert p1[0] == pytest.approx(0.9)
    assert on1[0] == 2  # P(onset <= 2) = max(0.3, 0.7) reaches 0.6 at step 2
    p2, on2 = quantile_forecast(HYPO2, q, LEVELS, observed, 0.6)
    # runs of two: min(0.3,0.7)=0.3, min(0.7,0.5)=0.5, min(0.5,0.9)=0.5
    assert p2[0] == pytest.approx(0.5)
    assert on2[0] == 0
    observed[0, 2] = False  # a gap: no run of two left but none across step 3
    p3, _ = quantile_forecast(HYPO2, q, LEVELS, observed, 0.6)
    assert p3[0] == pytest.approx(0.3)


def _quantiles_with(c: float, p: float) -> list[float]:
    """q0.1, q0.5, q0.9 whose interpolated CDF at c is p (0.1 < p < 0.9)."""
    if p <= 0.5:
        low = c - (p - 0.1) / 0.4 * 10
        return [low, low + 10, low + 20]
    low = c - 10 - (p - 0.5) / 0.4 * 10
    return [low, low + 10, low + 20]


def test_comonotone_matches_many_quantile_level_paths():
    """The closed form equals the fraction of comonotone paths (one level u drives every
    step) computed by brute force."""
    rng = np.random.default_rng(0)
    q = np.sort(rng.normal(66, 4, size=(5, 6, 3)), axis=-1)
    observed = rng.random((5, 6)) > 0.2
    u = (np.arange(20000) + 0.5) / 20000
    paths = np.empty((5, 6, u.size))
    for i in range(5):
        for t in range(6):
            # the interpolated quantile function with flat tails beyond the outer levels
            paths[i, t] = np.interp(u, LEVELS, q[i, t])
    high = Event("high", "mbp", 68.0, below=False, min_steps=2)
    for event in (HYPO, HYPO2, high):
        p_closed, on_closed = quantile_forecast(event, q, LEVELS, observed, 0.3)
        p_paths, on_paths = path_forecast(event, paths, observed, 0.3)
        np.testing.assert_allclose(p_closed, p_paths, atol=2e-3)
        assert (on_closed == on_paths).mean() >= 0.8  # equal away from exact ties at 0.3


def test_path_forecast_fraction_and_onset():
    # 4 paths over 3 steps: two paths low at step 2, one low at step 3, one never
    samples = np.array([[[70, 70, 70, 70], [60, 60, 70, 70], [70, 70, 60, 70]]], dtype=float)
    observed = np.ones((1, 3), dtype=bool)
    p, onset = path_forecast(HYPO, samples, observed, 0.5)
    assert p[0] == pytest.approx(0.75)
    assert onset[0] == 2  # P(onset <= 2) = 0.5
    p, onset = path_forecast(HYPO, samples, observed, 0.75)
    assert onset[0] == 3
    observed[0, 1] = False
    p, _ = path_forecast(HYPO, samples, observed, 0.5)
    assert p[0] == pytest.approx(0.25)


def test_lead_time_sign():
    onset = np.array([4, 2, 3, 0])
    forecast = np.array([2, 3, 0, 1])
    lead = lead_minutes(onset, forecast, 15)
    assert lead[:2].tolist() == [30.0, -15.0]  # alarm step 2 before event step 4: 30 min early
    assert np.isnan(lead[2:]).all()  # missed, or no event


# --- metrics against scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auroc_and_auprc_match_sklearn(ties):
    rng = np.random.default_rng(1 + ties)
    n = 300
    y = rng.random(n) < 0.3
    scores = rng.random(n) + 0.3 * y
    if ties:
        scores = np.round(scores * 4) / 4  # few distinct scores, many ties
        scores[:40] = 0.0
    weights = rng.integers(0, 4, size=(5, n)).astype(float)  # bootstrap draw counts
    auc, ap = weighted_auc_ap(y, scores, weights)
    for b in range(5):
        want_auc = sklearn_metrics.roc_auc_score(y, scores, sample_weight=weights[b])
        want_ap = sklearn_metrics.average_precision_score(y, scores, sample_weight=weights[b])
        assert auc[b] == pytest.approx(want_auc, rel=1e-12)
        assert ap[b] == pytest.approx(want_ap, rel=1e-12)
    (auc1,), (ap1,) = weighted_auc_ap(y, scores, np.ones((1, n)))
    assert auc1 == pytest.approx(sklearn_metrics.roc_auc_score(y, scores))
    assert ap1 == pytest.approx(sklearn_metrics.average_precision_score(y, scores))


def test_resampled_areas_weight_patients_and_rank_on_the_grid():
    """The bootstrap's per-patient areas equal the exact ones on scores rounded to the grid,
    each window weighted by its patient's draw count, and stay close to the unrounded ones."""
    rng = np.random.default_rng(5)
    n, patients = 400, 30
    patient = rng.integers(0, patients, n)
    y = rng.random(n) < 0.25
    scores = np.clip(rng.random(n) * 0.8 + 0.25 * y, 0, 1)
    scores[:50] = np.round(scores[:50], 1)  # ties across patients
    draws = rng.integers(0, 3, size=(6, patients)).astype(float)
    auc, ap = resampled_auc_ap(y, scores, patient, draws)
    rounded = score_bins(scores) * 1e-3
    want_auc, want_ap = weighted_auc_ap(y, rounded, draws[:, patient])
    np.testing.assert_allclose(auc, want_auc, rtol=1e-12)
    np.testing.assert_allclose(ap, want_ap, rtol=1e-12)
    for b in range(6):
        exact = sklearn_metrics.roc_auc_score(y, scores, sample_weight=draws[b, patient])
        assert abs(auc[b] - exact) < 2e-3


def test_roc_points_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + 0.2 * y, 1)
    fpr, tpr = roc_points(y, scores)
    want_fpr, want_tpr, _ = sklearn_metrics.roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, want_fpr)
    np.testing.assert_allclose(tpr, want_tpr)


def test_auroc_undefined_without_both_classes():
    auc, ap = weighted_auc_ap(np.array([True, True]), np.array([0.2, 0.3]), np.ones((1, 2)))
    assert np.isnan(auc[0]) and ap[0] == pytest.approx(1.0)


def test_brier_sensitivity_false_alarms_and_lead_time():
    frame = pd.DataFrame(
        {
            "truth": [True, True, False, False, True],
            "probability": [0.9, 0.4, 0.6, 0.1, 0.5],
            "lead_minutes": [30.0, np.nan, np.nan, np.nan, -15.0],
        }
    )
    w = np.array([[1.0, 1, 1, 1, 1], [2.0, 0, 1, 3, 1]])
    got = group_metrics(frame, np.arange(5), w, 0.5)  # each window its own patient
    y = frame["truth"].to_numpy(float)
    p = frame["probability"].to_numpy()
    for b in range(2):
        assert got["brier"][b] == pytest.approx(
            sklearn_metrics.brier_score_loss(y, p, sample_weight=w[b])
        )
        assert got["brier"][b] == pytest.approx(np.sum(w[b] * (p - y) ** 2) / w[b].sum())
    assert got["sensitivity"].tolist() == pytest.approx([2 / 3, 3 / 3])
    assert got["false_alarm_rate"].tolist() == pytest.approx([1 / 2, 1 / 4])
    assert got["prevalence"].tolist() == pytest.approx([3 / 5, 3 / 7])
    assert got["lead_minutes"].tolist() == pytest.approx([7.5, (60 - 15) / 3])


@pytest.mark.parametrize("positives", [2, 3])
def test_ranking_metrics_need_enough_windows_with_and_without_the_event(positives: int):
    """With fewer than min_windows positives, AUROC, AUPRC, sensitivity and lead time (value
    and resamples) are NaN; prevalence, Brier and false alarms are still reported."""
    rng = np.random.default_rng(positives)
    n = 12
    truth = np.zeros(n, bool)
    truth[:positives] = True
    table = pd.DataFrame(
        {
            "subject_id": np.arange(n) % 4,
            "event": "hypotension",
            "vital": "mbp",
            "truth": truth,
            "ongoing": False,
            "probability": np.where(truth, 0.8, rng.uniform(0, 0.6, n)),
            "lead_minutes": np.where(truth, 15.0, np.nan),
        }
    )
    patients = np.arange(4)
    weights = np.vstack([np.ones(4), np.array([2.0, 0, 1, 1])])
    cell = run_event_metrics([table], patients, weights, None, 0.5, min_windows=3)[
        ("hypotension", "new_onset")
    ]
    counted = positives >= 3
    for metric in EVENT_COUNT_METRICS:
        assert np.isfinite(cell["value"][metric]) == counted, metric
        assert np.isfinite(cell["boot"][metric]).any() == counted, metric
    for metric in ("prevalence", "brier", "false_alarm_rate"):
        assert np.isfinite(cell["value"][metric]), metric
    assert cell["value"]["prevalence"] == pytest.approx(positives / n)


# --- config ---------------------------------------------------------------------------------


def test_default_events_follow_the_configured_vitals():
    cfg = validate_config({"vitals": {"names": ["heart_rate", "mbp"]}})
    events = parse_events(cfg)
    assert {e.vital for e in events} == {"heart_rate", "mbp"}
    sustained = next(e for e in events if e.name == "sustained_hypotension")
    assert (sustained.threshold, sustained.below, sustained.min_steps) == (65.0, True, 2)
    assert cfg["evaluation"]["event_alarm_probability"] == 0.5


def test_an_event_on_a_vital_not_forecast_is_a_config_error():
    with pytest.raises(ConfigError, match=r"evaluation\.events\.fever is on vital temperature"):
        validate_config(
            {
                "vitals": {"names": ["heart_rate", "mbp"]},
                "evaluation": {"events": {"fever": {"vital": "temperature", "above": 38.3}}},
            }
        )


def test_an_event_needs_exactly_one_threshold():
    with pytest.raises(ConfigError, match="exactly one of `below` and `above`"):
        validate_config(
            {"evaluation": {"events": {"odd": {"vital": "mbp", "below": 60, "above": 90}}}}
        )


def test_changing_an_event_reruns_the_event_jobs_only():
    from vitalfm import job_settings

    base = validate_config({})
    moved = validate_config(
        {"evaluation": {"events": {"hypotension": {"vital": "mbp", "below": 60}}}}
    )
    assert job_settings.events(base) != job_settings.events(moved)
    assert job_settings.event_metrics(base) != job_settings.event_metrics(moved)
    assert job_settings.score(base) == job_settings.score(moved)
    assert job_settings.metrics(base) == job_settings.metrics(moved)
    alarm = validate_config({"evaluation": {"event_alarm_probability": 0.3}})
    assert job_settings.events(base) != job_settings.events(alarm)
