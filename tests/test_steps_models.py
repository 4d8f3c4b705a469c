"""The model steps (vitalfm.steps.models) called directly with the settings the workflow hands
them: pretrain a stand-in, fine-tune a replicate, forecast with it, and refuse settings that
lack what a step computes from."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.engine.checkpoints import finish_checkpoints
from vitalfm.engine.forecast import ForecastError, paths_schema, replicate_seed
from vitalfm.engine.training_config import TrainingError
from vitalfm.errors import ConfigError
from vitalfm.models.base import ModelError
from vitalfm.steps import SettingsError, models
from vitalfm.study import find_replicate
from vitalfm.testing import toy_window_files

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    """A validated study of a Chronos-Bolt stand-in (zero-shot and LoRA) and persistence."""
    return validate_config(
        {
            "vitals": {"names": ["mbp", "heart_rate"]},  # not the files' order
            "models": {
                "bolt": {
                    "family": "chronos",
                    "source": {"standin": "chronos-bolt"},
                    "methods": ["zero_shot", "lora"],
                },
                "persistence": {
                    "family": "persistence",
                    "source": {"scratch": True},
                    "methods": ["zero_shot"],
                },
            },
            "methods": {"zero_shot": {"kind": "zero_shot"}, "lora": {"kind": "lora", "rank": 2}},
            "pretrain": {
                "corpus": {"n_series": 64, "length": 96},
                "max_steps": 2,
                "eval_every": 1,
                "batch_size": 8,
                "min_context_steps": 16,
                "max_context_steps": 24,
            },
            "training": {
                "max_steps": 2,
                "batch_size": 8,
                "eval_every": 1,
                "checkpoint_every": 1,
                "validation_max_series": 16,
                "validation_forecast_series": 8,
                "seeds": [0, 1],
            },
            "forecast": {"num_samples": 8, "batch_size": 32},
            "evaluation": {"oracle": False},
            "device": {"preference": "cpu"},
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return toy_window_files(tmp_path_factory.mktemp("windows"))


@pytest.fixture(scope="module")
def standin(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pretrained stand-in, its checkpoints kept (an operation, not a setting)."""
    work = tmp_path_factory.mktemp("pretrain")
    operations = replace(job_settings.operations(cfg), keep_checkpoints=True)
    settings = job_settings.pretrain(cfg, "chronos-bolt")
    models.pretrain(settings, operations, work / "chronos-bolt", work / "ck")
    assert list((work / "ck").glob("step-*"))  # kept, as the operations say
    return work / "chronos-bolt"


def replicate_settings(cfg: dict[str, Any], rule: str, model: str, setting: str, seed: int) -> str:
    run = find_replicate(cfg, model, setting, seed)
    return getattr(job_settings, rule)(cfg, run, seed)


def test_pretrain_writes_the_standin_its_settings_name(standin: Path) -> None:
    meta = json.loads((standin / "standin.json").read_text())
    assert meta["family"] == "chronos" and meta["standin"] is True  # the family's describe()
    assert meta["corpus"]["n_series"] == 64  # the settings' pretrain section
    assert meta["training"]["steps"] == 2
    assert (standin / "history.tsv").read_text().startswith("step\ttrain_loss")


def test_pretrain_settings_carry_the_family_and_refuse_an_unused_standin(
    cfg: dict[str, Any],
) -> None:
    assert json.loads(job_settings.pretrain(cfg, "chronos-bolt"))["family"] == "chronos"
    with pytest.raises(ConfigError, match="no model in this config uses stand-in 'moirai'"):
        job_settings.pretrain(cfg, "moirai")


def test_a_replicate_is_finetuned_and_forecast_from_its_settings(
    cfg: dict[str, Any], files: dict[str, Path], standin: Path, tmp_path: Path
) -> None:
    operations = job_settings.operations(cfg)
    settings = replicate_settings(cfg, "finetune", "bolt", "lora-r2", 1)
    meta = models.finetune(
        settings,
        operations,
        files["train"],
        files["validation"],
        tmp_path / "run",
        tmp_path / "ck",
        standin_dir=str(standin),
    )
    assert (meta["run"], meta["model"], meta["setting"], meta["seed"]) == (
        "bolt/lora-r2",
        "bolt",
        "lora-r2",
        1,
    )
    assert meta["training_config"]["seed"] == 1
    assert meta["training_config"]["checkpoint_every"] == operations.checkpoint_every
    assert meta["data"]["minmax_ranges"] == {"heart_rate": [0.0, 300.0], "mbp": [0.0, 190.0]}
    assert not (tmp_path / "ck").exists()  # a finished run clears its checkpoints

    # one job forecasts both scored splits with one model load, each split as its own job would
    outs = [tmp_path / "validation.parquet", tmp_path / "test.parquet"]
    forecasts = models.forecast(
        replicate_settings(cfg, "forecast", "bolt", "lora-r2", 1),
        operations,
        [files["validation"], files["test"]],
        outs,
        [path.with_suffix(".json") for path in outs],
        run_dir=tmp_path / "run",
        standin_dir=str(standin),
    )
    assert [meta["split"] for meta in forecasts] == ["validation", "test"]
    for path, written in zip(outs, forecasts, strict=True):
        assert json.loads(path.with_suffix(".json").read_text())["split"] == written["split"]
    forecast, out = forecasts[1], outs[1]
    assert forecast["seed"] == 1 and forecast["parameters"] == meta["parameters"]
    assert forecast["forecast_config"]["seed"] == replicate_seed(cfg["forecast"]["seed"], 1)
    assert forecast["forecast_config"]["num_samples"] == 8
    alone = tmp_path / "alone.parquet"
    models.forecast(
        replicate_settings(cfg, "forecast", "bolt", "lora-r2", 1),
        operations,
        [files["test"]],
        [alone],
        [alone.with_suffix(".json")],
        run_dir=tmp_path / "run",
        standin_dir=str(standin),
    )
    assert pq.read_table(alone).to_pandas().equals(pq.read_table(out).to_pandas())
    # the files' order of the vitals, whatever order the settings list them in
    assert list(dict.fromkeys(pq.read_table(out).column("vital").to_pylist())) == [
        "heart_rate",
        "mbp",
    ]


def test_a_zero_shot_baseline_forecasts_without_a_run_folder(
    cfg: dict[str, Any], files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "persistence.parquet"
    (meta,) = models.forecast(
        replicate_settings(cfg, "forecast", "persistence", "zero_shot", 0),
        job_settings.operations(cfg),
        [files["test"]],
        [out],
        [out.with_suffix(".json")],
    )
    assert meta["parameters"] == {"trainable": 0, "total": 0, "base_total": 0}
    assert json.loads(out.with_suffix(".json").read_text())["run"] == "persistence/zero_shot"
    # the sample paths beside the table: none for a quantile model, in the paths schema
    paths = pq.read_table(tmp_path / "persistence.paths.parquet")
    assert models.sample_paths_file(out) == tmp_path / "persistence.paths.parquet"
    assert paths.num_rows == 0 and paths.schema == paths_schema(
        meta["forecast_config"]["num_samples"]
    )


def test_an_untrained_run_has_nothing_to_finetune(
    cfg: dict[str, Any], files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="zero-shot and has nothing to train"):
        models.finetune(
            replicate_settings(cfg, "finetune", "persistence", "zero_shot", 0),
            job_settings.operations(cfg),
            files["train"],
            files["validation"],
            tmp_path / "run",
            tmp_path / "ck",
        )


def test_steps_refuse_settings_that_lack_what_they_compute_from(
    cfg: dict[str, Any], files: dict[str, Path], tmp_path: Path
) -> None:
    operations = job_settings.operations(cfg)
    forecast_settings = replicate_settings(cfg, "forecast", "bolt", "lora-r2", 0)
    with pytest.raises(SettingsError) as err:  # a forecast job's settings, not a fine-tune's
        models.finetune(
            forecast_settings,
            operations,
            files["train"],
            files["validation"],
            tmp_path / "r",
            tmp_path / "c",
        )
    assert "lack training, minmax_ranges" in err.value.problem
    assert "vitalfm.job_settings.finetune" in err.value.fix
    assert not (tmp_path / "r").exists()

    pretrain = json.loads(job_settings.pretrain(cfg, "chronos-bolt"))
    del pretrain["family"]
    with pytest.raises(SettingsError, match="step pretrain lack family"):
        models.pretrain(pretrain, operations, tmp_path / "s", tmp_path / "ck")

    oracle = {**json.loads(forecast_settings), "method": {"kind": "oracle", "method": "oracle"}}
    with pytest.raises(SettingsError, match="lack synthetic"):
        models.forecast(
            oracle, operations, [files["test"]], [tmp_path / "o.parquet"], [tmp_path / "o.json"]
        )
    assert not (tmp_path / "o.parquet").exists()


def test_a_forecast_out_of_memory_is_a_forecast_error(
    cfg: dict[str, Any], files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(models, "forecast_windows", out_of_memory)
    with pytest.raises(ForecastError) as err:
        models.forecast(
            replicate_settings(cfg, "forecast", "persistence", "zero_shot", 0),
            job_settings.operations(cfg),
            [files["test"]],
            [tmp_path / "f.parquet"],
            [tmp_path / "f.json"],
        )
    assert not isinstance(err.value, TrainingError) and isinstance(err.value, ModelError)
    assert "batches of 32 series" in err.value.problem
    assert "lower forecast.batch_size (e.g. to 16)" in err.value.fix


def test_finished_checkpoints_go_unless_kept(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "m" / "lora-r2" / "seed-0"
    for path in (folder / "step-0000002", tmp_path / "checkpoints/m/lora-r2/seed-0.set-aside-ab"):
        path.mkdir(parents=True)
    finish_checkpoints(folder, keep=True)
    assert folder.is_dir()
    finish_checkpoints(folder, keep=False)
    assert not (tmp_path / "checkpoints" / "m").exists()  # emptied parents go too
