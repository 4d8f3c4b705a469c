"""The model steps called from a whole config, outside Snakemake (tests, benchmarks).

The workflow validates the config once and hands each job the settings
:mod:`vitalfm.job_settings` builds; these functions do the same for one replicate named by
model, setting and seed (default: the run's first), so that a benchmark or a test runs exactly
what a workflow job would.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.steps import models
from vitalfm.study import Run, find_replicate, find_run


def replicate(
    cfg: Mapping[str, Any], model: str, setting: str, seed: int | None = None
) -> tuple[Run, int]:
    """The run and the seed of one replicate (``seed`` None: the run's first)."""
    if seed is None:
        run = find_run(cfg, model, setting)
        return run, run.seeds[0]
    return find_replicate(cfg, model, setting, seed), int(seed)


def pretrain(
    cfg: Mapping[str, Any], standin: str, out_dir: str | Path, checkpoint_dir: str | Path
) -> None:
    """Rule pretrain's step for stand-in ``standin`` of ``cfg``."""
    cfg = validate_config(cfg)
    models.pretrain(
        job_settings.pretrain(cfg, standin), job_settings.operations(cfg), out_dir, checkpoint_dir
    )


def finetune(
    cfg: Mapping[str, Any],
    model: str,
    setting: str,
    train_windows: str | Path,
    validation_windows: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    standin_dir: str | None = None,
    stop_after_steps: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Rule finetune's step for replicate ``model/setting/seed-<seed>`` of ``cfg``."""
    cfg = validate_config(cfg)
    run, seed = replicate(cfg, model, setting, seed)
    return models.finetune(
        job_settings.finetune(cfg, run, seed),
        job_settings.operations(cfg),
        train_windows,
        validation_windows,
        out_dir,
        checkpoint_dir,
        standin_dir=standin_dir,
        stop_after_steps=stop_after_steps,
    )


def forecast(
    cfg: Mapping[str, Any],
    model: str,
    setting: str,
    windows_path: str | Path,
    out_parquet: str | Path,
    out_json: str | Path,
    run_dir: str | Path | None = None,
    standin_dir: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Rule forecast's step for replicate ``model/setting/seed-<seed>`` of ``cfg``, on one
    split's windows (the rule's job forecasts every scored split in one call)."""
    cfg = validate_config(cfg)
    run, seed = replicate(cfg, model, setting, seed)
    (meta,) = models.forecast(
        job_settings.forecast(cfg, run, seed),
        job_settings.operations(cfg),
        [windows_path],
        [out_parquet],
        [out_json],
        run_dir=run_dir,
        standin_dir=standin_dir,
    )
    return meta
