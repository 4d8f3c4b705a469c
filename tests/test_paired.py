"""Paired comparisons (vitalfm.evaluation.paired): differences on the same resampled patients
and seeds, the best baseline chosen on validation, the share of the persistence-to-oracle gap."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation_testing import SPLITS, make_run, one_point_scores, study, study_run

from vitalfm.evaluation import paired as paired_module
from vitalfm.evaluation import summary
from vitalfm.study import Run
from vitalfm.testing import score_rows


def cell(table, metric: str = "mae"):
    return table[(table["metric"] == metric) & (table["scale"] == "original")].iloc[0]


def test_paired_differences_pair_seeds_as_well_as_patients() -> None:
    # Two settings that share each seed's offset (the same initialisation luck) and differ by
    # exactly 1 everywhere: paired by seed, the difference has no spread at all.
    rng = np.random.default_rng(0)
    patient = rng.normal(0, 2, 20)
    offsets = [0.0, 3.0, -2.0]
    base = study_run("m", "zero_shot", "zero_shot", seeds=(0, 1, 2))
    better = study_run("m", "lora-r2", "lora", seeds=(0, 1, 2))
    keyed = {}
    for split in SPLITS:
        for s, b in enumerate(offsets):
            keyed[(split, base.run_id, s)] = one_point_scores(
                {p: 20 + patient[p] + b for p in range(20)}
            )
            keyed[(split, better.run_id, s)] = one_point_scores(
                {p: 19 + patient[p] + b for p in range(20)}
            )
    tables = summary.study_tables([base, better], keyed, 400, 1)
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


def test_paired_differences_use_the_same_resampled_patients():
    rng = np.random.default_rng(3)
    base = {s: list(rng.normal(0, 1 + s % 4, 6)) for s in range(12)}
    zero = make_run("m", "zero_shot", "zero_shot")
    lora = make_run("m", "lora-r2", "lora", rank=2)
    persistence = make_run("persistence", "zero_shot", "zero_shot", baseline=True)
    worse = {s: [2 * e for e in errs] for s, errs in base.items()}
    scores = {
        zero.run_id: score_rows(base),
        lora.run_id: score_rows({s: [e / 2 for e in errs] for s, errs in base.items()}),
        persistence.run_id: score_rows(worse),
    }
    table, paired = study([zero, lora, persistence], scores, 300, 0)
    assert table.set_index("run")["baseline"].to_dict() == {
        zero.run_id: False,
        lora.run_id: False,
        persistence.run_id: True,
    }
    row = paired[
        (paired["run"] == lora.run_id)
        & (paired["reference"] == "zero_shot")
        & (paired["metric"] == "mae")
        & (paired["scale"] == "original")
    ].iloc[0]
    zero_row = cell(table[table["run"] == zero.run_id])
    assert row["reference_run"] == zero.run_id
    assert row["difference"] == pytest.approx(row["value"] - row["reference_value"])
    assert row["difference"] < 0
    assert row["fraction_better"] == 1.0
    # lora = zero_shot / 2 per patient, so on the same patients the difference is exactly
    # -1/2 of zero_shot's resample: its CI is -1/2 of zero_shot's CI
    assert row["ci_low"] == pytest.approx(-zero_row["ci_high"] / 2)
    assert row["ci_high"] == pytest.approx(-zero_row["ci_low"] / 2)
    against = paired[(paired["reference"] == "best_baseline") & (paired["metric"] == "mae")]
    assert set(against["run"]) == {zero.run_id, lora.run_id}
    assert (against["reference_run"] == persistence.run_id).all()
    assert (against["difference"] < 0).all() and (against["ci_high"] < 0).all()
    # no zero_shot run for the persistence model's other runs and none against itself
    assert persistence.run_id not in set(paired["run"])
    assert set(paired.columns) == set(paired_module.PAIRED_COLUMNS)


def test_the_best_baseline_is_chosen_on_validation_and_reported_on_test() -> None:
    a = study_run("nhits", "scratch", "scratch", family="nhits", scratch=True)
    b = study_run("nbeats", "scratch", "scratch", family="nbeats", scratch=True)
    model = study_run("m", "zero_shot", "zero_shot")
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
        (split, r, 0): one_point_scores({p: value + 0.01 * p for p in range(10)})
        for (split, r), value in errors.items()
    }
    tables = summary.study_tables([a, b, model], keyed, 100, 0)
    against = tables.paired[tables.paired["reference"] == "best_baseline"]
    assert set(against["reference_run"]) == {b.run_id}
    assert set(against["chosen_on"]) == {"validation"}
    assert set(against["split"]) == {"validation", "test"}


def test_share_of_the_persistence_to_oracle_gap() -> None:
    persistence = study_run(
        "persistence", "zero_shot", "zero_shot", family="persistence", scratch=True
    )
    oracle = Run("oracle", "oracle", {"synthetic": True}, "oracle", {"kind": "oracle"})
    model = study_run("m", "lora-r2", "lora")
    level = {persistence.run_id: 10.0, oracle.run_id: 6.0, model.run_id: 9.0}
    keyed = {
        (split, r, 0): one_point_scores({p: value + 0.1 * (p % 3) for p in range(12)})
        for split in SPLITS
        for r, value in level.items()
    }
    tables = summary.study_tables([persistence, oracle, model], keyed, 200, 0)
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
