"""The study's aggregation: seeds and patients in one interval, selection on validation, the
share of the persistence-to-oracle gap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vitalfm.evaluation import aggregate, bootstrap
from vitalfm.study import Run
from vitalfm.testing import score_rows

SPLITS = ("validation", "test")


def scores(errors: dict[int, float]) -> pd.DataFrame:
    """A score table with one whole-horizon point per patient of absolute error ``errors[p]``."""
    return score_rows({subject: [error] for subject, error in errors.items()})


def run(model: str, setting: str, kind: str, seeds=(0,), family: str = "chronos", **source) -> Run:
    return Run(
        model,
        family,
        source or {"standin": "chronos-t5"},
        setting,
        {"kind": kind, "method": setting},
        {},
        tuple(seeds),
    )


def mae(summary: aggregate.RunSummary) -> tuple[float, float, float]:
    cell = summary.cells.index[
        (summary.cells["scale"] == "original") & (summary.cells["step"] == 0)
    ][0]
    return (
        float(summary.values["mae"][cell]),
        float(summary.low["mae"][cell]),
        float(summary.high["mae"][cell]),
    )


def summarise(tables: list[pd.DataFrame], resamples: int, seed: int) -> aggregate.RunSummary:
    patients = np.unique(np.concatenate([t["subject_id"].to_numpy() for t in tables]))
    weights = bootstrap.patient_weights(len(patients), resamples, seed)
    draws = bootstrap.seed_weights(list(range(len(tables))), resamples, seed)
    return aggregate.summarise_run(
        tables, tuple(range(len(tables))), patients, weights, draws if len(tables) > 1 else None
    )


def test_the_interval_carries_training_variance_not_only_patient_variance() -> None:
    # Every patient has the same error within a seed; seeds differ. Resampling patients alone
    # would give an interval of width 0: the seed spread must show.
    offsets = [0.0, 1.0, 2.5]
    tables = [scores({p: 10.0 + b for p in range(15)}) for b in offsets]
    value, low, high = mae(summarise(tables, 500, 0))
    assert value == pytest.approx(10.0 + np.mean(offsets))
    assert high - low > 1.0
    single = mae(summarise(tables[:1], 500, 0))
    assert single[1] == single[2] == 10.0  # one seed: patients only


def test_paired_differences_pair_seeds_as_well_as_patients() -> None:
    # Two settings that share each seed's offset (the same initialisation luck) and differ by
    # exactly 1 everywhere: paired by seed, the difference has no spread at all.
    rng = np.random.default_rng(0)
    patient = rng.normal(0, 2, 20)
    offsets = [0.0, 3.0, -2.0]
    base = run("m", "zero_shot", "zero_shot", seeds=(0, 1, 2))
    better = run("m", "lora-r2", "lora", seeds=(0, 1, 2))
    keyed = {}
    for split in SPLITS:
        for s, b in enumerate(offsets):
            keyed[(split, base.run_id, s)] = scores({p: 20 + patient[p] + b for p in range(20)})
            keyed[(split, better.run_id, s)] = scores({p: 19 + patient[p] + b for p in range(20)})
    tables = aggregate.study_tables([base, better], keyed, 400, 1)
    row = tables.paired[
        (tables.paired["split"] == "test")
        & (tables.paired["metric"] == "mae")
        & (tables.paired["scale"] == "original")
    ].iloc[0]
    assert row["difference"] == pytest.approx(-1.0)
    assert row["ci_low"] == pytest.approx(-1.0) and row["ci_high"] == pytest.approx(-1.0)
    # whereas each run on its own carries the seed spread
    own = tables.metrics[
        (tables.metrics["split"] == "test")
        & (tables.metrics["metric"] == "mae")
        & (tables.metrics["scale"] == "original")
        & (tables.metrics["run"] == better.run_id)
    ].iloc[0]
    assert own["ci_high"] - own["ci_low"] > 2.0 and own["n_seeds"] == 3


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
    for study in range(studies):
        a = rng.normal(0, sd_patient, n_patients)
        b = rng.normal(0, sd_seed, n_seeds)
        e = rng.normal(0, sd_residual, (n_seeds, n_patients))
        tables = [
            scores({p: mu + a[p] + b[s] + e[s, p] for p in range(n_patients)})
            for s in range(n_seeds)
        ]
        summary = summarise(tables, 300, study)
        whole = summary.whole[("original", "all")]
        variances.append(summary.resamples["mae"][:, whole].var())
        _, low, high = mae(summary)
        covered += low <= mu <= high
    ratio = np.mean(variances) / truth
    assert 0.7 < ratio < 1.4, ratio
    assert covered / studies > 0.8, covered / studies


def test_the_best_baseline_is_chosen_on_validation_and_reported_on_test() -> None:
    a = run("nhits", "scratch", "scratch", family="nhits", scratch=True)
    b = run("nbeats", "scratch", "scratch", family="nbeats", scratch=True)
    model = run("m", "zero_shot", "zero_shot")
    errors = {
        # on validation b is better; on test a would be
        ("validation", a.run_id): 5.0,
        ("validation", b.run_id): 3.0,
        ("test", a.run_id): 2.0,
        ("test", b.run_id): 4.0,
        ("validation", model.run_id): 4.0,
        ("test", model.run_id): 4.0,
    }
    keyed = {
        (split, r, 0): scores({p: value + 0.01 * p for p in range(10)})
        for (split, r), value in errors.items()
    }
    tables = aggregate.study_tables([a, b, model], keyed, 100, 0)
    against = tables.paired[tables.paired["reference"] == "best_baseline"]
    assert set(against["reference_run"]) == {b.run_id}
    assert set(against["chosen_on"]) == {"validation"}
    assert set(against["split"]) == {"validation", "test"}


def test_share_of_the_persistence_to_oracle_gap() -> None:
    persistence = run("persistence", "zero_shot", "zero_shot", family="persistence", scratch=True)
    oracle = Run("oracle", "oracle", {"synthetic": True}, "oracle", {"kind": "oracle"})
    model = run("m", "lora-r2", "lora")
    level = {persistence.run_id: 10.0, oracle.run_id: 6.0, model.run_id: 9.0}
    keyed = {
        (split, r, 0): scores({p: value + 0.1 * (p % 3) for p in range(12)})
        for split in SPLITS
        for r, value in level.items()
    }
    tables = aggregate.study_tables([persistence, oracle, model], keyed, 200, 0)
    gap = tables.gap[
        (tables.gap["run"] == model.run_id)
        & (tables.gap["metric"] == "mae")
        & (tables.gap["scale"] == "original")
        & (tables.gap["split"] == "test")
    ].iloc[0]
    assert gap["share_closed"] == pytest.approx(0.25)  # (10 - 9) / (10 - 6)
    assert gap["ci_low"] <= 0.25 <= gap["ci_high"]
    assert oracle.run_id not in set(tables.gap["run"])
    # the oracle is never a baseline, and nothing is paired against it
    assert oracle.run_id not in set(tables.paired["reference_run"])
