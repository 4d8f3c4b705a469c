"""The model half of the workflow as plain functions: pretrain a stand-in, fine-tune, forecast.

Snakemake scripts call these with paths; every output is written under a temporary name and
renamed at the end, so a failed or killed job never leaves a complete-looking result.
Checkpoints live outside the outputs (``results/checkpoints/...``) so that a rerun resumes.

A run is fine-tuned and forecast once per seed (a replicate, see :mod:`vitalfm.study`): the
seed sets the initialisation of adapters and from-scratch models, the order of the training
batches, dropout, and (mixed with ``forecast.seed``) the forecast's sample paths.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitalfm.config import minmax_ranges, validate_config
from vitalfm.config_rules import horizon_steps
from vitalfm.data.vitals import vital_names_from_config
from vitalfm.data.windows import WindowSet
from vitalfm.engine.data import CorpusTrainingData, WindowTrainingData
from vitalfm.engine.devices import DeviceClaim, claim_device, describe_environment
from vitalfm.engine.forecast import (
    ForecastConfig,
    Predictor,
    forecast_windows,
    replicate_seed,
)
from vitalfm.engine.train import Trainer, TrainingConfig, TrainingError
from vitalfm.io import atomic_dir, write_json, write_parquet
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import (
    adapt,
    load_adapted,
    merge_for_inference,
    parameter_counts,
    save_adapted,
)
from vitalfm.models.base import Forecast, Forecaster, ModelError, ModelSource, forecaster_class
from vitalfm.provenance import git_revision, software_versions
from vitalfm.study import Run, find_replicate, find_run, standins
from vitalfm.synthetic.corpus import CorpusConfig, corpus_summary, generate_corpus

log = logging.getLogger(__name__)


HISTORY_FIELDS = ("step", "train_loss", "validation_loss", "learning_rate", "samples_per_s")


def _history_tsv(history: list[dict[str, Any]]) -> str:
    """The loss curve: the fixed columns, then whatever else the Trainer recorded (the
    validation forecast metrics, the selection metric, the best step so far)."""
    buffer = io.StringIO()
    extra = [k for row in history for k in row if k not in HISTORY_FIELDS]
    fields = [*HISTORY_FIELDS, *dict.fromkeys(extra)]
    writer = csv.DictWriter(buffer, fields, delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _claim(cfg: Mapping[str, Any]) -> DeviceClaim:
    device_cfg = cfg["device"]
    claim = claim_device(device_cfg["preference"], lock_dir=device_cfg["lock_dir"] or None)
    log.info("device: %s", claim.reason)
    return claim


def _source(run: Run, standin_dir: str | None) -> ModelSource:
    source = ModelSource.from_config(run.source)
    if source.is_standin:
        if standin_dir is None:
            raise ModelError(f"run {run.run_id} needs its stand-in folder", "pass standin_dir")
        source = ModelSource(standin=source.standin, standin_dir=str(standin_dir))
    return source


def _replicate(
    cfg: Mapping[str, Any], model: str, setting: str, seed: int | None
) -> tuple[Run, int]:
    """The run and the seed of one replicate (``seed`` None: the run's first)."""
    if seed is None:
        run = find_run(cfg, model, setting)
        return run, run.seeds[0]
    return find_replicate(cfg, model, setting, seed), int(seed)


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
    else:
        forecaster = family.load(source, device)
    forecaster.configure(run.options)
    forecaster.module.to(device)
    return forecaster


def method_spec(run: Run) -> MethodSpec:
    """The adaptation spec of a run (its method entry minus the engine's own keys)."""
    return MethodSpec.from_config(run.setting, run.method)


def _training_config(
    cfg: Mapping[str, Any], method: Mapping[str, Any], seed: int
) -> TrainingConfig:
    return TrainingConfig.from_config(
        cfg["training"],
        learning_rate=method.get("learning_rate"),
        max_steps=method.get("max_steps"),
        seed=seed,
    )


def _finish_checkpoints(cfg: Mapping[str, Any], checkpoint_dir: str | Path) -> None:
    """After a finished run: remove its checkpoints (and any set aside for an earlier
    configuration) unless ``training.keep_checkpoints``; a killed run keeps them to resume."""
    folder = Path(checkpoint_dir)
    if cfg["training"]["keep_checkpoints"]:
        log.info("checkpoints kept in %s (training.keep_checkpoints)", folder)
        return
    for path in [folder, *folder.parent.glob(f"{folder.name}.set-aside-*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed the checkpoints in %s (the run finished)", path)
    for parent in (folder.parent, folder.parent.parent):  # <model>/<setting>/ when empty
        with contextlib.suppress(OSError):
            parent.rmdir()


# --- stand-ins ------------------------------------------------------------------------------


def pretrain_standin(
    cfg: Mapping[str, Any], name: str, out_dir: str | Path, checkpoint_dir: str | Path
) -> None:
    """Train a stand-in from random weights on the synthetic corpus and save it as released."""
    cfg = validate_config(cfg)
    used = standins(cfg)
    if name not in used:
        raise ModelError(f"no model in this config uses stand-in {name!r}", "check `models`")
    family = forecaster_class(used[name])
    if name not in family.standin_names():
        raise ModelError(
            f"family {used[name]} has no stand-in {name!r}",
            f"use one of {', '.join(family.standin_names()) or '(none)'}",
        )
    pre = cfg["pretrain"]
    horizon = horizon_steps(cfg)
    with _claim(cfg) as claim:
        started = time.perf_counter()
        corpus = generate_corpus(CorpusConfig(**pre["corpus"]))
        data = CorpusTrainingData(
            corpus,
            pre["min_context_steps"],
            pre["max_context_steps"],
            horizon,
            pre["seed"],
            step_s=cfg["grid"]["frequency_minutes"] * 60,
        )
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
        result = trainer.fit()
        forecaster.module.to("cpu")
        trainable, total = parameter_counts(forecaster.module)
        with atomic_dir(out_dir) as tmp:
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
            (tmp / "history.tsv").write_text(_history_tsv(result.history))
        assert trainable == total
    _finish_checkpoints(cfg, checkpoint_dir)


# --- fine-tuning -----------------------------------------------------------------------------


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
    """Adapt one model with one method setting and one seed (default: the run's first);
    write the adapter (or full model) + metadata."""
    cfg = validate_config(cfg)
    run, seed = _replicate(cfg, model, setting, seed)
    if not run.trains:
        raise ModelError(
            f"run {run.run_id} is zero-shot and has nothing to train", "forecast it directly"
        )
    spec = method_spec(run)
    training = _training_config(cfg, run.method, seed)
    vitals = vital_names_from_config(cfg["vitals"])
    with _claim(cfg) as claim:
        started = time.perf_counter()
        data = WindowTrainingData(
            WindowSet.load(train_windows),
            WindowSet.load(validation_windows),
            vitals,
            seed=training.seed,
            validation_max_series=cfg["training"]["validation_max_series"],
            # the validation forecast metric is scored as the study scores (min-max scale)
            ranges=minmax_ranges(cfg, vitals),
        )
        forecaster = load_base(
            run,
            standin_dir,
            claim.device,
            steps=(data.context_steps, data.horizon_steps),
            seed=training.seed,
        )
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
        result = trainer.fit(stop_after_steps=stop_after_steps)
        forecaster.module.to("cpu")
        meta = {
            "run": run.run_id,
            "model": model,
            "setting": setting,
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
        with atomic_dir(out_dir) as tmp:
            if spec.method.saves == "model":  # full and scratch: the whole model
                forecaster.save_pretrained(tmp / "model")
            else:
                save_adapted(forecaster.module, spec, tmp / "model")
            write_json(meta, tmp / "metadata.json")
            (tmp / "history.tsv").write_text(_history_tsv(result.history))
    _finish_checkpoints(cfg, checkpoint_dir)
    return meta


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


def oracle_predictor(synthetic: Mapping[str, Any], windows: WindowSet) -> Predictor:
    """The synthetic study's reference: samples of each horizon bin from the generator's own
    state at the window's origin (:func:`vitalfm.synthetic.oracle.oracle_samples`)."""
    from vitalfm.synthetic.oracle import oracle_samples

    stays, origins = windows.window_icustay_ids(), windows.origin_seconds()

    def predict(
        vital: str, rows: np.ndarray, context: torch.Tensor, time: Any, samples: int, seed: int
    ) -> Forecast:
        drawn = oracle_samples(
            synthetic,
            stays[rows],
            origins[rows],
            vital,
            windows.horizon_steps,
            windows.frequency_minutes,
            samples,
            seed,
        )
        paths = torch.from_numpy(np.ascontiguousarray(drawn, dtype=np.float32))
        return Forecast(median=paths.quantile(0.5, dim=1), samples=paths)

    return predict


def forecast(
    cfg: Mapping[str, Any],
    model: str,
    setting: str,
    test_windows: str | Path,
    out_parquet: str | Path,
    out_json: str | Path,
    run_dir: str | Path | None = None,
    standin_dir: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Forecast every window of a split (``test_windows``: its window file) with one replicate
    of a run (``seed``; default the run's first); parquet table + metadata JSON."""
    cfg = validate_config(cfg)
    run, seed = _replicate(cfg, model, setting, seed)
    fc = cfg["forecast"]
    config = ForecastConfig(
        num_samples=fc["num_samples"],
        batch_size=fc["batch_size"],
        quantile_levels=tuple(fc["quantile_levels"]),
        seed=replicate_seed(fc["seed"], seed),
    )
    vitals = vital_names_from_config(cfg["vitals"])
    with _claim(cfg) as claim:
        windows = WindowSet.load(test_windows)
        if run.is_oracle:
            forecaster = None
            predictor = oracle_predictor(cfg["synthetic"], windows)
        else:
            predictor = None
            forecaster = load_for_forecast(
                run,
                run_dir,
                standin_dir,
                claim.device,
                steps=(windows.context_steps, windows.horizon_steps),
                seed=seed,
            )
        try:
            table, facts = forecast_windows(
                forecaster, windows, vitals, config, predictor=predictor
            )
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"the GPU ran out of memory forecasting batches of {config.batch_size} series",
                f"lower forecast.batch_size (e.g. to {max(1, config.batch_size // 2)})",
            ) from None
        if table.num_rows == 0:
            raise ModelError(
                f"run {run.run_id} produced no forecasts",
                "check that the test split has windows with observed horizons",
            )
        if run.trains and run_dir is not None:
            parameters = json.loads((Path(run_dir) / "metadata.json").read_text())["parameters"]
        else:
            total = parameter_counts(forecaster.module)[1] if forecaster is not None else 0
            parameters = {"trainable": 0, "total": total, "base_total": total}
        described = (
            forecaster.describe()
            if forecaster is not None
            else {"family": "oracle", "source": "the synthetic generator's latent state"}
        )
        meta = {
            "run": run.run_id,
            "model": model,
            "setting": setting,
            "seed": seed,
            "split": windows.split,
            **described,
            "method": run.method,
            "parameters": parameters,
            "forecast_config": {**config.__dict__, "quantile_levels": list(config.quantile_levels)},
            "forecast": facts,
            "median_finite_fraction": float(
                np.isfinite(table.column("median").to_numpy(zero_copy_only=False)).mean()
            ),
            "device": claim.describe(),
            "software": software_versions(),
            "git_revision": git_revision(),
        }
        write_parquet(table, out_parquet)
        write_json(meta, out_json)
        return meta
