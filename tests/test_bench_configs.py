"""The configs bench/ times stay valid as the schema moves (a stale one would fail only when a
benchmark is run, long after the change that broke it)."""

from __future__ import annotations

from pathlib import Path

from vitalfm.config import load_config
from vitalfm.study import study_runs

ROOT = Path(__file__).resolve().parents[1]


def test_the_issue15_workload_is_the_55_runs_it_was_filed_with() -> None:
    config = load_config(ROOT / "bench/configs/issue15_workload.yaml")
    runs = study_runs(config)
    assert len(runs) == 55
    assert all(tuple(run.seeds) == (0,) for run in runs)
    assert len(config["vitals"]["names"]) == 7 and config["synthetic"]["n_patients"] == 120
