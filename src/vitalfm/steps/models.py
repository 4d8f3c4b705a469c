"""Steps of ``workflow/rules/models.smk``: pretrain a stand-in, fine-tune, forecast.

The orchestration of the model half: which run a job is (rebuilt from its settings), which
files it reads and writes, and what it records beside them (metadata, provenance, the loss
history). The training loop, the training data, forecasting and devices are the
:mod:`vitalfm.engine` library's. Checkpoints live outside the outputs
(``results/checkpoints/...``) so that a rerun resumes.

A run is fine-tuned and forecast once per seed (a replicate, see :mod:`vitalfm.study`): the
seed sets the initialisation of adapters and from-scratch models, the order of the training
batches, dropout, and (mixed with ``forecast.seed``) the forecast's sample paths.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitalfm.config import check_minmax_ranges
from vitalfm.data.vitals import vital_names_from_config
from vitalfm.data.windows import WindowSet
from vitalfm.engine.checkpoints import finish_checkpoints
from vitalfm.engine.devices import DeviceClaim, claim_device, describe_environment
from vitalfm.engine.forecast import (
    ForecastConfig,
    ForecastError,
    WindowForecasts,
    forecast_windows,
    oracle_predictor,
    replicate_seed,
)
from vitalfm.engine.train import Trainer
from vitalfm.engine.training_config import TrainingConfig, history_tsv
from vitalfm.engine.training_data import CorpusTrainingData, WindowTrainingData
from vitalfm.io import atomic_dir, write_json, write_parquet
from vitalfm.job_settings import Operations
from vitalfm.job_timing import phase
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import (
    adapt,
    load_adapted,
    merge_for_inference,
    parameter_counts,
    save_adapted,
)
from vitalfm.methods.saving import merge_adapter_folder, write_portable_base
from vitalfm.model_card import model_card
from vitalfm.models.base import Forecaster, ModelError, ModelSource
from vitalfm.models.registry import forecaster_class
from vitalfm.provenance import git_revision, software_versions
from vitalfm.steps import Settings, settings_for
from vitalfm.study import Run
from vitalfm.synthetic.corpus import CorpusConfig, corpus_summary, generate_corpus

log = logging.getLogger(__name__)

#: What the finetune and forecast settings hold of a replicate (vitalfm.job_settings._run).
REPLICATE_KEYS = ("run", "seed", "family", "source", "options", "method")


def replicate_of(settings: dict[str, Any]) -> tuple[Run, int]:
    """The run and seed of the replicate a job's settings describe."""
    model, setting = settings["run"].split("/", 1)
    seed = int(settings["seed"])
    run = Run(
        model=model,
        family=settings["family"],
        source=dict(settings["source"]),
        setting=setting,
        method=dict(settings["method"]),
        options=dict(settings["options"]),
        seeds=(seed,),
    )
    return run, seed


def _vitals(settings: dict[str, Any]) -> list[str]:
    """The settings' vital names in the canonical order files use."""
    return vital_names_from_config({"names": settings["vitals"]})


def _claim(operations: Operations) -> DeviceClaim:
    claim = claim_device(operations.device_preference, lock_dir=operations.device_lock_dir or None)
    log.info("device: %s", claim.reason)
    return claim


def _source(run: Run, standin_dir: str | None) -> ModelSource:
    source = ModelSource.from_config(run.source)
    if source.is_standin:
        if standin_dir is None:
            raise ModelError(f"run {run.run_id} needs its stand-in folder", "pass standin_dir")
        source = ModelSource(standin=source.standin, standin_dir=str(standin_dir))
    return source


def load_base(
    run: Run,
    standin_dir: str | None,
    device: torch.device,
    steps: tuple[int, int] | None = None,
    seed: int = 0,
) -> Forecaster:
    """The run's model before training: its pretrained weights, or for a baseline
    (``source: {scratch: true}``) a new model for ``steps`` = (context, horizon) window
    lengths from a random init seeded by ``seed``."""
    family = forecaster_class(run.family)
    source = _source(run, standin_dir)
    if source.is_scratch:
        if steps is None:
            raise ModelError(
                f"run {run.run_id} builds its model from scratch and needs the window lengths",
                "pass steps=(context_steps, horizon_steps)",
            )
        forecaster = family.from_scratch(run.options, steps[0], steps[1], seed)
    elif source.adapter:  # a peft adapter trained elsewhere, merged into its base
        forecaster = family.load(source.adapter_base(), device)
        forecaster.set_module(merge_adapter_folder(forecaster.module, Path(source.adapter)))
        forecaster.source = source
    else:
        forecaster = family.load(source, device)
    forecaster.configure(run.options)
    forecaster.module.to(device)
    return forecaster


def method_spec(run: Run) -> MethodSpec:
    """The adaptation spec of a run (its method entry minus the engine's own keys)."""
    return MethodSpec.from_config(run.setting, run.method)


# --- stand-ins ------------------------------------------------------------------------------


def pretrain(
    settings: Settings, operations: Operations, out_dir: str | Path, checkpoint_dir: str | Path
) -> None:
    """Rule pretrain: train a stand-in from random weights on the synthetic corpus and save it
    in the released format."""
    cfg = settings_for(
        settings,
        "pretrain",
        ["standin", "family", "pretrain", "horizon_steps", "frequency_minutes"],
    )
    name = cfg["standin"]
    family = forecaster_class(cfg["family"])
    if name not in family.standin_names():
        raise ModelError(
            f"family {cfg['family']} has no stand-in {name!r}",
            f"use one of {', '.join(family.standin_names()) or '(none)'}",
        )
    pre = cfg["pretrain"]
    horizon = cfg["horizon_steps"]
    with _claim(operations) as claim:
        started = time.perf_counter()
        with phase("data loading"):  # the synthetic corpus is generated, not read
            corpus = generate_corpus(CorpusConfig(**pre["corpus"]))
            data = CorpusTrainingData(
                corpus,
                pre["min_context_steps"],
                pre["max_context_steps"],
                horizon,
                pre["seed"],
                step_s=cfg["frequency_minutes"] * 60,
            )
        with phase("model loading"):
            forecaster = family.standin(name, horizon=horizon, seed=pre["seed"])
            forecaster.module.to(claim.device)
        for param in forecaster.module.parameters():
            param.requires_grad_(True)
        config = TrainingConfig(
            max_steps=pre["max_steps"],
            batch_size=pre["batch_size"],
            learning_rate=pre["learning_rate"],
            warmup_fraction=0.05,
            schedule="cosine",
            min_lr_ratio=0.1,
            eval_every=pre["eval_every"],
            patience=1_000_000,  # pretraining runs its budget; validation is only reported
            checkpoint_every=max(pre["eval_every"], 100),
            seed=pre["seed"],
        )
        trainer = Trainer(
            forecaster,
            data,
            config,
            claim.device,
            Path(checkpoint_dir),
            fingerprint={"standin": name, "pretrain": pre, "horizon": horizon},
        )
        with phase("compute"):
            result = trainer.fit()
        forecaster.module.to("cpu")
        trainable, total = parameter_counts(forecaster.module)
        with phase("writing"), atomic_dir(out_dir) as tmp:
            forecaster.save_pretrained(tmp)
            write_json(
                {
                    "standin": name,
                    "note": "a small model of the family's architecture, pretrained here on a "
                    "synthetic corpus that contains no vital signs; not a released checkpoint",
                    **forecaster.describe(),
                    "parameters": total,
                    "corpus": {**pre["corpus"], **corpus_summary(corpus)},
                    "data": data.describe(),
                    "training": result.to_dict(),
                    "device": claim.describe(),
                    "software": software_versions(),
                    "git_revision": git_revision(),
                    "wall_time_s": time.perf_counter() - started,
                },
                tmp / "standin.json",
            )
            (tmp / "history.tsv").write_text(history_tsv(result.history))
        assert trainable == total
    finish_checkpoints(checkpoint_dir, operations.keep_checkpoints)


# --- fine-tuning -----------------------------------------------------------------------------


def finetune(
    settings: Settings,
    operations: Operations,
    train_windows: str | Path,
    validation_windows: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    standin_dir: str | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Rule finetune: adapt one model with one method setting and one seed; write the adapter
    (or full model) + metadata. ``stop_after_steps`` simulates a crash (tests)."""
    cfg = settings_for(
        settings, "finetune", [*REPLICATE_KEYS, "training", "vitals", "minmax_ranges"]
    )
    run, seed = replicate_of(cfg)
    if not run.trains:
        raise ModelError(
            f"run {run.run_id} is zero-shot and has nothing to train", "forecast it directly"
        )
    spec = method_spec(run)
    # the settings' training section has the method's overrides applied already
    training = TrainingConfig.from_config(
        {**cfg["training"], "checkpoint_every": operations.checkpoint_every}, seed=seed
    )
    vitals = _vitals(cfg)
    ranges = {vital: r for vital, r in cfg["minmax_ranges"].items() if r is not None}
    with _claim(operations) as claim:
        started = time.perf_counter()
        with phase("data loading"):
            data = WindowTrainingData(
                WindowSet.load(train_windows),
                WindowSet.load(validation_windows),
                vitals,
                seed=training.seed,
                validation_max_series=cfg["training"]["validation_max_series"],
                # the validation forecast metric is scored as the study scores (min-max scale)
                ranges=check_minmax_ranges(ranges, vitals),
            )
        with phase("model loading"):
            forecaster = load_base(
                run,
                standin_dir,
                claim.device,
                steps=(data.context_steps, data.horizon_steps),
                seed=training.seed,
            )
            base_source = forecaster.source
            # Training holds float32 weights (bf16 autocast on GPU runs the matrix products):
            # a bf16 checkpoint kept in its own dtype would make AdamW's updates bf16.
            forecaster.module.float()
            _, base_total = parameter_counts(forecaster.module)
            torch.manual_seed(training.seed)
            forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
        trainable, total = parameter_counts(forecaster.module)
        log.info("%s: %d trainable of %d parameters", run.run_id, trainable, total)
        trainer = Trainer(
            forecaster,
            data,
            training,
            claim.device,
            Path(checkpoint_dir),
            fingerprint={
                "run": run.run_id,
                "method": run.method,
                "source": run.source,
                "data": data.describe(),
                "vitals": list(vitals),
            },
        )
        with phase("compute"):  # validation forecasts and checkpoints included
            result = trainer.fit(stop_after_steps=stop_after_steps)
        forecaster.module.to("cpu")
        meta = {
            "run": run.run_id,
            "model": run.model,
            "setting": run.setting,
            "seed": seed,
            **forecaster.describe(),
            "method": spec.to_dict(),
            "parameters": {"trainable": trainable, "total": total, "base_total": base_total},
            "training_config": training.__dict__,
            "data": data.describe(),
            "training": result.to_dict(),
            "device": claim.describe(),
            "environment": describe_environment(),
            "software": software_versions(),
            "git_revision": git_revision(),
            "wall_time_s": time.perf_counter() - started,
        }
        saves = spec.method.saves
        base_reference = None if base_source.is_scratch else base_source.portable_reference
        with phase("writing"), atomic_dir(out_dir) as tmp:
            if saves == "model":  # full and scratch: the whole model
                forecaster.save_pretrained(tmp / "model")
            else:
                save_adapted(forecaster.module, spec, tmp / "model")
            if saves == "adapter" and base_reference is not None:
                write_portable_base(tmp / "model", base_reference)
            (tmp / "model" / "README.md").write_text(model_card(meta, saves, base_reference))
            write_json(meta, tmp / "metadata.json")
            (tmp / "history.tsv").write_text(history_tsv(result.history))
    finish_checkpoints(checkpoint_dir, operations.keep_checkpoints)
    return meta


# --- forecasting -----------------------------------------------------------------------------


def load_for_forecast(
    run: Run,
    run_dir: str | Path | None,
    standin_dir: str | None,
    device: torch.device,
    steps: tuple[int, int] | None = None,
    seed: int = 0,
) -> Forecaster:
    """The model a run forecasts with: the base for zero-shot, the saved model for full and
    scratch, else base + merged adaptation. ``steps`` and ``seed`` build a zero-shot
    baseline (persistence), as in :func:`load_base`."""
    spec = method_spec(run)
    if not run.trains:
        return load_base(run, standin_dir, device, steps=steps, seed=seed)
    if run_dir is None:
        raise ModelError(
            f"run {run.run_id} needs its fine-tuned model folder", "run the finetune rule first"
        )
    model_dir = Path(run_dir) / "model"
    if spec.method.saves == "model":
        family = forecaster_class(run.family)
        original = _source(run, standin_dir)
        forecaster = family.load(ModelSource(path=str(model_dir)), device)
        forecaster.configure(run.options)
        forecaster.source = original
        return forecaster
    forecaster = load_base(run, standin_dir, device)
    merged = load_adapted(forecaster.module, spec, model_dir)
    forecaster.set_module(merge_for_inference(merged))
    return forecaster


def forecast(
    settings: Settings,
    operations: Operations,
    windows_paths: Sequence[str | Path],
    out_parquets: Sequence[str | Path],
    out_jsons: Sequence[str | Path],
    run_dir: str | Path | None = None,
    standin_dir: str | None = None,
    out_paths: Sequence[str | Path] | None = None,
) -> list[dict[str, Any]]:
    """Rule forecast: forecast every window of each split (``windows_paths``: one window file
    per split, the validation and the test split in the study) with one replicate of a run;
    one parquet table + metadata JSON per split, and the sample paths at the observed horizon
    points beside each table (``out_paths``; default :func:`sample_paths_file` of the table:
    :class:`~vitalfm.engine.forecast.WindowForecasts`, no rows for a quantile model).

    One job forecasts all the splits so that it imports the model's libraries and loads the
    model once: apart from the windows the forecasts are the same as one job per split would
    make (the same sampling seed for each split).
    """
    if out_paths is None:
        out_paths = [sample_paths_file(path) for path in out_parquets]
    if not len(windows_paths) == len(out_parquets) == len(out_jsons) == len(out_paths) > 0:
        raise ModelError(
            "the forecast step needs one parquet, one paths parquet and one JSON output per "
            "window file",
            "fix the forecast rule's input and output lists",
        )
    cfg = settings_for(settings, "forecast", [*REPLICATE_KEYS, "forecast", "vitals"])
    run, seed = replicate_of(cfg)
    fc = cfg["forecast"]
    config = ForecastConfig(
        num_samples=fc["num_samples"],
        batch_size=fc["batch_size"],
        quantile_levels=tuple(fc["quantile_levels"]),
        seed=replicate_seed(fc["seed"], seed),
    )
    vitals = _vitals(cfg)
    if run.is_oracle:
        synthetic = settings_for(cfg, "forecast", ["synthetic"])["synthetic"]
    with _claim(operations) as claim:
        with phase("data loading"):
            splits = [WindowSet.load(path) for path in windows_paths]
        first = splits[0]
        forecaster = None
        if not run.is_oracle:
            with phase("model loading"):
                forecaster = load_for_forecast(
                    run,
                    run_dir,
                    standin_dir,
                    claim.device,
                    steps=(first.context_steps, first.horizon_steps),
                    seed=seed,
                )
        # what every split's metadata shares: read, counted and asked of git once per job
        shared = {
            **_described(forecaster),
            "method": run.method,
            "parameters": _forecast_parameters(run, run_dir, forecaster),
        }
        provenance = {
            "device": claim.describe(),
            "software": software_versions(),
            "git_revision": git_revision(),
        }
        written = []
        for windows, out_parquet, out_path, out_json in zip(
            splits, out_parquets, out_paths, out_jsons, strict=True
        ):
            predictor = oracle_predictor(synthetic, windows) if run.is_oracle else None
            with phase("compute"):
                result = _forecast_split(run, forecaster, predictor, windows, vitals, config)
            table, facts = result.table, result.facts
            meta = {
                "run": run.run_id,
                "model": run.model,
                "setting": run.setting,
                "seed": seed,
                "split": windows.split,
                **shared,
                "forecast_config": {
                    **config.__dict__,
                    "quantile_levels": list(config.quantile_levels),
                },
                "forecast": facts,
                "median_finite_fraction": float(
                    np.isfinite(table.column("median").to_numpy(zero_copy_only=False)).mean()
                ),
                **provenance,
            }
            with phase("writing"):
                write_parquet(table, out_parquet)
                write_parquet(result.paths, out_path)
                write_json(meta, out_json)
            written.append(meta)
        return written


def _forecast_split(
    run: Run,
    forecaster: Forecaster | None,
    predictor: Any,
    windows: WindowSet,
    vitals: list[str],
    config: ForecastConfig,
) -> WindowForecasts:
    try:
        result = forecast_windows(forecaster, windows, vitals, config, predictor=predictor)
    except torch.OutOfMemoryError:
        raise ForecastError(
            f"the GPU ran out of memory forecasting batches of {config.batch_size} series",
            f"lower forecast.batch_size (e.g. to {max(1, config.batch_size // 2)})",
        ) from None
    if result.table.num_rows == 0:
        raise ModelError(
            f"run {run.run_id} produced no forecasts of the {windows.split} split",
            f"check that the {windows.split} split has windows with observed horizons",
        )
    return result


def sample_paths_file(forecast_parquet: str | Path) -> Path:
    """Where the forecast rule writes a forecast table's sample paths:
    ``results/forecasts/{split}/{model}/{setting}/seed-{seed}.paths.parquet`` beside
    ``seed-{seed}.parquet``."""
    path = Path(forecast_parquet)
    return path.with_name(path.name.removesuffix(".parquet") + ".paths.parquet")


def _forecast_parameters(
    run: Run, run_dir: str | Path | None, forecaster: Forecaster | None
) -> dict[str, Any]:
    if run.trains and run_dir is not None:
        return json.loads((Path(run_dir) / "metadata.json").read_text())["parameters"]
    total = parameter_counts(forecaster.module)[1] if forecaster is not None else 0
    return {"trainable": 0, "total": total, "base_total": total}


def _described(forecaster: Forecaster | None) -> dict[str, Any]:
    if forecaster is None:
        return {"family": "oracle", "source": "the synthetic generator's latent state"}
    return forecaster.describe()
