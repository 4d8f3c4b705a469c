"""The evaluation steps (vitalfm.steps.evaluation) called with their rules' settings: score a
replicate's forecasts, summarise every replicate's scores, and refuse settings that lack what
they compute from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.steps import SettingsError, evaluation, models
from vitalfm.study import SPLITS_SCORED, find_replicate, study_runs
from vitalfm.testing import toy_window_files

OUTPUTS = ("metrics", "paired", "replicates", "gap", "calibration")


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return validate_config(
        {
            "vitals": {"names": ["heart_rate", "mbp"]},
            "models": {
                "persistence": {
                    "family": "persistence",
                    "source": {"scratch": True},
                    "methods": ["zero_shot"],
                }
            },
            "methods": {"zero_shot": {"kind": "zero_shot"}},
            "forecast": {"num_samples": 20},
            "evaluation": {"oracle": False, "bootstrap": {"resamples": 20}},
            "device": {"preference": "cpu"},
        }
    )


@pytest.fixture(scope="module")
def scored(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Persistence's forecasts of the validation and test windows, and their scores."""
    work = tmp_path_factory.mktemp("evaluation")
    files = toy_window_files(work)
    run = find_replicate(cfg, "persistence", "zero_shot", 0)
    keys, paths = [], []
    for split in SPLITS_SCORED:
        forecasts = work / f"{split}.parquet"
        models.forecast(
            job_settings.forecast(cfg, run, 0),
            job_settings.operations(cfg),
            [files[split]],
            [forecasts],
            [forecasts.with_suffix(".json")],
        )
        out = work / "scores" / f"{split}.parquet"
        evaluation.score(
            job_settings.score(cfg),
            f"persistence/zero_shot/seed-0 ({split})",
            forecasts,
            files[split],
            out,
        )
        keys.append((split, run.run_id, 0))
        paths.append(out)
    return {"work": work, "files": files, "keys": keys, "paths": paths}


def test_scores_hold_every_vital_on_both_scales(scored: dict[str, Any]) -> None:
    scores = pd.read_parquet(scored["paths"][1])
    assert {"heart_rate", "mbp"} <= set(scores["vital"].astype(str))
    assert set(scores["scale"]) == {"original", "minmax"}


def test_metrics_summarise_the_runs_of_the_settings(
    cfg: dict[str, Any], scored: dict[str, Any]
) -> None:
    outputs = {}
    for name in OUTPUTS:
        outputs[name] = scored["work"] / "metrics" / f"{name}.parquet"
        outputs[f"{name}_csv"] = scored["work"] / "metrics" / f"{name}.csv"
    evaluation.metrics(job_settings.metrics(cfg), scored["keys"], scored["paths"], outputs)
    metrics = pd.read_parquet(outputs["metrics"])
    assert set(metrics["run"]) == {run.run_id for run in study_runs(cfg)}
    assert set(metrics["split"]) == set(SPLITS_SCORED)
    calibration = pd.read_csv(outputs["calibration_csv"])
    assert set(calibration["run"]) == set(metrics["run"])
    assert calibration["coverage"].between(0, 1).all() and (calibration["n_points"] > 0).all()


def test_scoring_names_a_vital_without_a_range(
    cfg: dict[str, Any], scored: dict[str, Any], tmp_path: Path
) -> None:
    settings = {"minmax_ranges": {"heart_rate": [0, 300], "mbp": None}}
    with pytest.raises(ConfigError, match="minmax_ranges has no range for vital mbp"):
        evaluation.score(
            settings,
            "persistence/zero_shot/seed-0 (test)",
            scored["work"] / "test.parquet",
            scored["files"]["test"],
            tmp_path / "s.parquet",
        )


def test_each_step_refuses_settings_of_another_rule(
    cfg: dict[str, Any], scored: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="step score lack minmax_ranges"):
        evaluation.score(
            job_settings.split(cfg),
            "persistence/zero_shot/seed-0 (test)",
            scored["work"] / "test.parquet",
            scored["files"]["test"],
            tmp_path / "s.parquet",
        )
    with pytest.raises(SettingsError, match="step metrics lack database, models, methods"):
        evaluation.metrics(job_settings.score(cfg), scored["keys"], scored["paths"], {})
    assert not list(tmp_path.iterdir())
