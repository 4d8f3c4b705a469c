"""One run's summary (vitalfm.evaluation.run_summary): seeds and patients in one interval, an
interval over patients (not windows), reproducible resamples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from evaluation_testing import make_run, one_point_scores, study

from vitalfm.evaluation import bootstrap, run_summary
from vitalfm.testing import score_rows


def mae(summary: run_summary.RunSummary) -> tuple[float, float, float]:
    cell = summary.cells.index[
        (summary.cells["scale"] == "original") & (summary.cells["step"] == 0)
    ][0]
    return (
        float(summary.values["mae"][cell]),
        float(summary.low["mae"][cell]),
        float(summary.high["mae"][cell]),
    )


def summarise(tables: list[pd.DataFrame], resamples: int, seed: int) -> run_summary.RunSummary:
    patients = np.unique(np.concatenate([t["subject_id"].to_numpy() for t in tables]))
    weights = bootstrap.patient_weights(len(patients), resamples, seed)
    draws = bootstrap.seed_weights(list(range(len(tables))), resamples, seed)
    return run_summary.summarise_run(
        tables, tuple(range(len(tables))), patients, weights, draws if len(tables) > 1 else None
    )


def cell(table: pd.DataFrame, metric: str = "mae") -> pd.Series:
    return table[(table["metric"] == metric) & (table["scale"] == "original")].iloc[0]


def test_the_interval_carries_training_variance_not_only_patient_variance() -> None:
    # Every patient has the same error within a seed; seeds differ. Resampling patients alone
    # would give an interval of width 0: the seed spread must show.
    offsets = [0.0, 1.0, 2.5]
    tables = [one_point_scores({p: 10.0 + b for p in range(15)}) for b in offsets]
    value, low, high = mae(summarise(tables, 500, 0))
    assert value == pytest.approx(10.0 + np.mean(offsets))
    assert high - low > 1.0
    single = mae(summarise(tables[:1], 500, 0))
    assert single[1] == single[2] == 10.0  # one seed: patients only


@pytest.mark.parametrize(
    ("sd_patient", "sd_seed", "sd_residual"), [(1.0, 0.6, 0.5), (0.3, 1.0, 0.3)]
)
def test_bootstrap_variance_against_a_simulation_with_known_variance(
    sd_patient: float, sd_seed: float, sd_residual: float
) -> None:
    """Crossed design y_ps = mu + a_p + b_s + e_ps: the variance of the seed-and-patient mean
    is var(a)/P + var(b)/S + var(e)/(P S). Over many simulated studies the two-way bootstrap's
    variance must be close to it (it is mildly conservative on the residual term and loses a
    factor (S - 1)/S on the seed term) and its 95% interval must cover mu about as often."""
    rng = np.random.default_rng(7)
    n_patients, n_seeds, mu, studies = 25, 8, 50.0, 150
    truth = sd_patient**2 / n_patients + sd_seed**2 / n_seeds
    truth += sd_residual**2 / (n_patients * n_seeds)
    variances, covered = [], 0
    for draw in range(studies):
        a = rng.normal(0, sd_patient, n_patients)
        b = rng.normal(0, sd_seed, n_seeds)
        e = rng.normal(0, sd_residual, (n_seeds, n_patients))
        tables = [
            one_point_scores({p: mu + a[p] + b[s] + e[s, p] for p in range(n_patients)})
            for s in range(n_seeds)
        ]
        summary = summarise(tables, 300, draw)
        whole = summary.whole[("original", "all")]
        variances.append(summary.resamples["mae"][:, whole].var())
        _, low, high = mae(summary)
        covered += low <= mu <= high
    ratio = np.mean(variances) / truth
    assert 0.7 < ratio < 1.4, ratio
    assert covered / studies > 0.8, covered / studies


def test_confidence_intervals_are_reproducible_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    errors = {s: list(rng.normal(s % 5, 2, rng.integers(3, 30))) for s in range(30)}
    run = make_run("m", "zero_shot", "zero_shot")
    scores = {run.run_id: score_rows(errors)}
    first = cell(study([run], scores, resamples=400, seed=1)[0])
    again = cell(study([run], scores, resamples=400, seed=1)[0])
    other = cell(study([run], scores, resamples=400, seed=2)[0])
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])
    assert first["ci_low"] < first["value"] < first["ci_high"]
    all_points = [abs(e) for errs in errors.values() for e in errs]
    assert first["value"] == pytest.approx(np.mean(all_points))


def test_bootstrap_resamples_patients_not_windows():
    run = make_run("m", "zero_shot", "zero_shot")
    # a single patient with many windows of varied errors: every resample draws that patient
    # (a window bootstrap would vary), so the interval has no width
    single = cell(study([run], {run.run_id: score_rows({1: [1, 3] * 50})}, 200, 0)[0])
    assert single["ci_low"] == single["ci_high"] == single["value"] == 2.0
    # one patient with many bad windows among patients with few good ones: whether that
    # patient is drawn dominates, so the patient CI is wide; a window bootstrap is narrow
    errors = {1: [10.0] * 60, **{s: [1.0, 2.0] for s in range(2, 8)}}
    wide = cell(study([run], {run.run_id: score_rows(errors)}, 1000, 0)[0])
    points = np.array([e for errs in errors.values() for e in errs])
    rng = np.random.default_rng(0)
    by_window = [rng.choice(points, len(points)).mean() for _ in range(1000)]
    window_low, window_high = np.percentile(by_window, [2.5, 97.5])
    assert wide["ci_high"] - wide["ci_low"] > 3 * (window_high - window_low)
    assert wide["ci_low"] < 2.0 and wide["ci_high"] > 9.0
