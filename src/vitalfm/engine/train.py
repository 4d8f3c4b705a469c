"""The training loop shared by every family and adaptation method.

AdamW over the trainable parameters, linear warm-up then linear or cosine decay, gradient
clipping, early stopping and best-checkpoint choice on a validation score (the best weights are
restored at the end), and bf16 autocast on GPU (fp32 on CPU).

The validation score (``training.selection_metric``) is by default the study's own forecast
metric, not the family's training objective: at every evaluation the current model forecasts
a fixed subset of validation series (:meth:`Trainer.validation_forecast_metrics`: the
family's ``predict`` in eval mode, a fixed sampling seed, ``validation_num_samples`` paths),
scored as the study scores test forecasts (CRPS over levels 0.1-0.9 and MAE of the median, on
the min-max scale, pooled over observed target points). Objectives and forecast quality part
ways: MOIRAI 1.x's NLL keeps falling by widening its intervals on a few tail series while its
CRPS stays put, and Chronos-T5's cross-entropy fell on a token forecasting never samples.
Data without min-max ranges (pretraining on the synthetic corpus) select on the loss.

Resumption: a checkpoint (trainable weights, best weights, optimizer and scheduler state,
counters) is written atomically every ``checkpoint_every`` steps and when SIGTERM arrives.
Batches and dropout masks are pure functions of (seed, step) (see :mod:`vitalfm.engine.data`),
so a job killed at any point (even by SIGKILL) and rerun resumes from its last checkpoint and
ends, on CPU, with the same weights as an uninterrupted run. We keep our own loop rather
than HF ``Trainer`` or Lightning because neither gives bit-identical resumption with
step-addressed batches, and both add per-step overhead that the small models here feel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vitalfm.engine.data import TrainingData, ValidationForecastSet
from vitalfm.errors import ConfigError
from vitalfm.io import atomic_dir, json_text, remove_partial_writes
from vitalfm.models.base import Forecaster, ModelError, SeriesBatch, TimeAxis

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: best tracking on the selection metric
KEEP_CHECKPOINTS = 2
SELECTION_METRICS = ("crps", "mae", "loss")


def _number(value: float | None, missing: float) -> float:
    """A number from a checkpoint's strict JSON, where NaN and infinities are written as null."""
    return missing if value is None else float(value)


class TrainingError(ModelError):
    """Training cannot go on as configured (NaN loss, out of memory, bad checkpoint)."""


class TrainingInterrupted(TrainingError):
    """SIGTERM arrived; a checkpoint was written and a rerun resumes from it."""


@dataclass(frozen=True)
class TrainingConfig:
    max_steps: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.1
    schedule: str = "linear"  # linear | cosine | constant (after warm-up)
    min_lr_ratio: float = 0.0
    grad_clip_norm: float = 1.0
    eval_every: int = 25
    patience: int = 4
    min_delta: float = 0.0
    checkpoint_every: int = 50
    seed: int = 0
    validation_batch_size: int = 256
    #: What early stopping and the best checkpoint follow: the validation forecast's CRPS or
    #: MAE (min-max scale, as the study scores), or the family's validation loss.
    selection_metric: str = "crps"
    #: Validation series forecast at every evaluation (fixed by the seed); 0: none.
    validation_forecast_series: int = 256
    #: Sample paths per series for the sampling families (Chronos-T5, MOIRAI 1.x, Lag-Llama).
    validation_num_samples: int = 20

    def __post_init__(self) -> None:
        if self.selection_metric not in SELECTION_METRICS:
            raise ConfigError(
                f"config key training.selection_metric = {self.selection_metric!r} is unknown",
                f"set it to one of {', '.join(SELECTION_METRICS)}",
            )
        if self.selection_metric != "loss" and self.validation_forecast_series < 1:
            raise ConfigError(
                f"config key training.selection_metric = {self.selection_metric} needs "
                f"validation forecasts, but training.validation_forecast_series = "
                f"{self.validation_forecast_series}",
                "set training.validation_forecast_series to at least 1 (default 256), or "
                "training.selection_metric to loss",
            )
        if self.validation_num_samples < 1:
            raise ConfigError(
                f"config key training.validation_num_samples = {self.validation_num_samples}",
                "set it to at least 1 (default 20)",
            )

    @classmethod
    def from_config(cls, entry: dict[str, Any], **overrides: Any) -> TrainingConfig:
        """Settings from the config's ``training`` section; ``None`` overrides are ignored."""
        known = set(cls.__dataclass_fields__)
        given = {**entry, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**{k: v for k, v in given.items() if k in known})

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_fraction * self.max_steps)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        decay = (
            1.0 - progress
            if self.schedule == "linear"
            else 0.5 * (1 + math.cos(math.pi * progress))
        )
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


@dataclass
class TrainingResult:
    steps: int
    best_step: int
    #: The validation loss at ``best_step`` (its minimum when selecting on the loss).
    best_validation_loss: float
    initial_validation_loss: float
    stopped_early: bool
    resumed_from_step: int | None
    wall_time_s: float
    train_samples_per_s: float
    #: One row per evaluation: step, train_loss, validation_loss, validation_crps,
    #: validation_mae (NaN without validation forecasts), selection_metric, best_step (so
    #: far), learning_rate, samples_per_s, validation_forecast_s.
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Peak memory of the training process: its RSS and, on a GPU, torch's peak allocation.
    peak_memory_mb: dict[str, float | None] = field(default_factory=dict)
    #: The metric the best step was chosen on ("loss" where the data have no min-max ranges).
    selection_metric: str = "loss"
    best_validation_score: float = math.nan
    initial_validation_score: float = math.nan
    #: Series and sample paths of the validation forecasts, and their mean seconds per
    #: evaluation (empty when there are none).
    validation_forecast: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_memory_mb(device: torch.device) -> dict[str, float | None]:
    """Peak host RSS of this process (ru_maxrss, kB on Linux) and peak device memory."""
    import resource

    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    on_device = None
    if device.type == "cuda":
        on_device = torch.cuda.max_memory_allocated(device) / 2**20
    return {"process_rss_mb": host, "device_mb": on_device}


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, 3, step]).generate_state(1)[0])


def _forecast_seed(seed: int, batch: int) -> int:
    """The sampling seed of validation-forecast batch ``batch``: the same at every evaluation."""
    return int(np.random.SeedSequence([seed, 5, batch]).generate_state(1)[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _sigterm_flag() -> Iterator[dict[str, bool]]:
    """Turn SIGTERM (pre-emption, scancel, Snakemake shutting down) into a flag we poll."""
    flag = {"stop": False}
    # signal handlers can only be installed from the main thread
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            flag["stop"] = True

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield flag
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        yield flag


class Trainer:
    """Trains ``forecaster.module`` (already adapted) on ``data``; see the module docstring."""

    def __init__(
        self,
        forecaster: Forecaster,
        data: TrainingData,
        config: TrainingConfig,
        device: torch.device,
        checkpoint_dir: Path,
        fingerprint: dict[str, Any],
        progress: bool = True,
    ) -> None:
        self.forecaster = forecaster
        self.data = data
        self.config = config
        self.device = device
        self.checkpoint_dir = Path(checkpoint_dir)
        # Data that cannot say which series to forecast (or have no min-max ranges) select
        # on the loss, as pretraining does.
        forecast_set = getattr(data, "validation_forecast_set", None)
        self.forecast_set: ValidationForecastSet | None = (
            forecast_set(config.validation_forecast_series) if forecast_set is not None else None
        )
        self.selection_metric = config.selection_metric if self.forecast_set is not None else "loss"
        if self.selection_metric != config.selection_metric:
            log.info(
                "no validation forecasts for these data (no min-max ranges): model selection "
                "uses the validation %s instead of %s",
                forecaster.loss_name,
                config.selection_metric,
            )
        selection = {"metric": self.selection_metric}
        if self.forecast_set is not None:
            pairs, digest = self.forecast_set.pairs, hashlib.sha256()
            for array in (
                pairs.context,
                pairs.target,
                self.forecast_set.low,
                self.forecast_set.high,
            ):
                digest.update(np.ascontiguousarray(array).tobytes())
            selection["series"] = digest.hexdigest()
        self.fingerprint = hashlib.sha256(
            json.dumps(
                {
                    # how often checkpoints are written does not change what they hold
                    "training": {
                        k: v for k, v in asdict(config).items() if k != "checkpoint_every"
                    },
                    "selection": selection,
                    **fingerprint,
                },
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()
        self.progress = progress
        self.params = trainable_parameters(forecaster.module)
        if not self.params:
            raise TrainingError(
                "the adapted model has no trainable parameters",
                "use method kind zero_shot for forecasting without training",
            )
        # The fused kernel (CPU and CUDA) updates all parameters in one pass; on the Chronos-2
        # stand-in its optimizer step took 0.6 ms against 3.2 ms for the per-tensor loop.
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, config.lr_factor)
        self.step = 0
        #: The selection metric's best value, and the validation loss at that step.
        self.best_score = math.inf
        self.best_loss = math.inf
        self.best_step = 0
        self.initial_loss = math.nan
        self.initial_score = math.nan
        self.bad_evals = 0
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        # Not the module's own flag: a fresh peft wrapper says training=True over an eval model.
        self._in_train_mode = False

    # --- one step and validation -------------------------------------------------------------

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )

    def _loss(self, batch: SeriesBatch) -> torch.Tensor:
        with self._autocast():
            return self.forecaster.loss(batch.to(self.device)).float()

    def validation_loss(self) -> float:
        self.forecaster.module.eval()
        self._in_train_mode = False
        total, count = 0.0, 0
        with torch.no_grad():
            for batch in self.data.validation_batches(self.config.validation_batch_size):
                total += float(self._loss(batch)) * len(batch)
                count += len(batch)
        return total / max(count, 1)

    def validation_forecast_metrics(self) -> dict[str, float]:
        """CRPS and MAE of the current model's forecasts of the validation forecast set.

        As the study scores test forecasts (:mod:`vitalfm.evaluation`): quantiles at
        :data:`~vitalfm.evaluation.quantiles.CRPS_LEVELS` from the forecast
        (:func:`~vitalfm.engine.forecast.to_quantiles`), CRPS as their mean 2 x pinball loss
        and the absolute error of the forecast's median, on the min-max scale of each
        series' vital, pooled over observed target points. Each batch samples with a seed
        that is the same at every evaluation (the training RNG is left as it was), so
        evaluations differ only by the weights. Empty without a forecast set.
        """
        if self.forecast_set is None:
            return {}
        from vitalfm.engine.forecast import to_quantiles
        from vitalfm.evaluation.metrics import point_terms, to_minmax
        from vitalfm.evaluation.quantiles import CRPS_LEVELS

        started = time.perf_counter()
        self.forecaster.module.eval()
        self._in_train_mode = False
        pairs, cfg = self.forecast_set.pairs, self.config
        horizon = pairs.target.shape[1]
        crps, abs_error, points = 0.0, 0.0, 0
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for batch, start in enumerate(range(0, len(pairs), cfg.validation_batch_size)):
                rows = slice(start, start + cfg.validation_batch_size)
                torch.manual_seed(_forecast_seed(cfg.seed, batch))
                forecast = self.forecaster.predict(
                    torch.from_numpy(np.ascontiguousarray(pairs.context[rows])),
                    horizon,
                    cfg.validation_num_samples,
                    time=TimeAxis(pairs.start_s[rows], pairs.step_s),
                )
                quantiles = to_quantiles(forecast, CRPS_LEVELS).detach().cpu().double().numpy()
                median = forecast.median.detach().cpu().double().numpy()
                truth = pairs.target[rows].astype(np.float64)
                observed = np.isfinite(truth)
                low = np.broadcast_to(self.forecast_set.low[rows, None], truth.shape)[observed]
                high = np.broadcast_to(self.forecast_set.high[rows, None], truth.shape)[observed]
                terms = point_terms(
                    to_minmax(truth[observed], low, high),
                    to_minmax(median[observed], low, high),
                    {
                        level: to_minmax(quantiles[:, j][observed], low, high)
                        for j, level in enumerate(CRPS_LEVELS)
                    },
                    np.full(int(observed.sum()), np.nan),
                )
                crps += float(terms["crps"].sum())
                abs_error += float(terms["ae"].sum())
                points += int(observed.sum())
        return {
            "crps": crps / points if points else math.nan,
            "mae": abs_error / points if points else math.nan,
            "seconds": time.perf_counter() - started,
        }

    def _train_step(self) -> float:
        cfg = self.config
        if not self._in_train_mode:  # module.train() walks every submodule: once per eval
            self.forecaster.module.train()
            self._in_train_mode = True
        torch.manual_seed(_step_seed(cfg.seed, self.step))
        batch = self.data.train_batch(self.step, cfg.batch_size)
        loss = self._loss(batch)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {float(loss.detach())} at step {self.step + 1} "
                f"(learning rate {self.scheduler.get_last_lr()[0]:.3g})",
                "lower the learning rate (training.learning_rate or the method's "
                "learning_rate), or raise training.grad_clip_norm's strictness; the last "
                f"checkpoint is kept in {self.checkpoint_dir}",
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), cfg.grad_clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def _evaluate(self, train_loss: float, samples_per_s: float) -> bool:
        """Record a validation point; True when early stopping says stop."""
        loss = self.validation_loss()
        if not math.isfinite(loss):
            raise TrainingError(
                f"the validation loss became {loss} at step {self.step}",
                f"lower the learning rate; the last checkpoint is kept in {self.checkpoint_dir}",
            )
        metrics = self.validation_forecast_metrics()
        score = {"loss": loss, **metrics}[self.selection_metric]
        if not math.isfinite(score):  # forecasts with NaN: never the best
            log.warning("validation %s is %s at step %d", self.selection_metric, score, self.step)
            score = math.inf
        if self.step == 0:
            self.initial_loss, self.initial_score = loss, score
        improved = score < self.best_score - self.config.min_delta
        if improved:
            self.best_score, self.best_loss, self.best_step = score, loss, self.step
            self.bad_evals = 0
            self.best_state = {k: p.detach().clone() for k, p in self.params.items()}
        elif self.step > 0:
            self.bad_evals += 1
        self.history.append(
            {
                "step": self.step,
                "train_loss": train_loss,
                "validation_loss": loss,
                "validation_crps": metrics.get("crps", math.nan),
                "validation_mae": metrics.get("mae", math.nan),
                "selection_metric": self.selection_metric,
                "best_step": self.best_step,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "samples_per_s": samples_per_s,
                "validation_forecast_s": metrics.get("seconds", math.nan),
            }
        )
        return self.step > 0 and self.bad_evals >= self.config.patience

    # --- checkpoints ----------------------------------------------------------------------------

    def _checkpoints(self) -> list[Path]:
        if not self.checkpoint_dir.is_dir():
            return []
        found = [p for p in self.checkpoint_dir.glob("step-*") if p.is_dir()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self) -> Path:
        target = self.checkpoint_dir / f"step-{self.step:07d}"
        with atomic_dir(target) as tmp:
            save_file(
                {k: p.detach().cpu().contiguous() for k, p in self.params.items()},
                tmp / "trainable.safetensors",
            )
            if self.best_state is not None:
                save_file(
                    {k: t.cpu().contiguous() for k, t in self.best_state.items()},
                    tmp / "best.safetensors",
                )
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                },
                tmp / "optimizer.pt",
            )
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
            state = {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "step": self.step,
                "selection_metric": self.selection_metric,
                "best_score": self.best_score,
                "best_loss": self.best_loss,
                "best_step": self.best_step,
                "initial_loss": self.initial_loss,
                "initial_score": self.initial_score,
                "bad_evals": self.bad_evals,
                "history": self.history,
                "files": files,
            }
            (tmp / "state.json").write_text(json_text(state, indent=1))  # strict: NaN as null
        for old in self._checkpoints()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def _corrupt(self, path: Path, why: str) -> TrainingError:
        return TrainingError(
            f"the checkpoint {path} cannot be resumed: {why}",
            f"delete {self.checkpoint_dir} to restart this run from step 0",
        )

    def _set_aside(self, old_fingerprint: str) -> Path:
        """Move checkpoints written for another configuration out of the way (never reuse
        them, never delete a user's files): ``<folder>.set-aside-<their fingerprint>``."""
        aside = self.checkpoint_dir.with_name(
            f"{self.checkpoint_dir.name}.set-aside-{old_fingerprint[:12]}"
        )
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(self.checkpoint_dir, aside)
        log.warning(
            "the checkpoints in %s were written for another configuration (model, method, data "
            "or training settings changed); set aside as %s, training starts from step 0",
            self.checkpoint_dir,
            aside,
        )
        return aside

    def _remove_partial_checkpoints(self) -> None:
        """Checkpoint folders a kill interrupted mid-write (atomic_dir's temporaries)."""
        for leftover in remove_partial_writes(self.checkpoint_dir):
            log.info("removed %s, left by an interrupted checkpoint write", leftover)

    def load_latest_checkpoint(self) -> int | None:
        self._remove_partial_checkpoints()
        found = self._checkpoints()
        if not found:
            return None
        path = found[-1]
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as err:
            raise self._corrupt(path, f"state.json is unreadable ({err})") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise self._corrupt(path, f"unknown checkpoint format {state.get('format')!r}")
        if state.get("fingerprint") != self.fingerprint:
            self._set_aside(str(state.get("fingerprint")))
            return None
        for name, digest in state["files"].items():
            file = path / name
            if not file.is_file() or _sha256(file) != digest:
                raise self._corrupt(path, f"{name} is missing or does not match its checksum")
        try:
            trained = load_file(path / "trainable.safetensors")
            best = (
                load_file(path / "best.safetensors")
                if (path / "best.safetensors").is_file()
                else None
            )
            opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        except (SafetensorError, RuntimeError, OSError, ValueError) as err:
            raise self._corrupt(path, f"its tensors cannot be read ({err})") from None
        if set(trained) != set(self.params):
            raise self._corrupt(path, "its parameter names differ from the adapted model's")
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(trained[name].to(param.device))
        self.optimizer.load_state_dict(opt_state["optimizer"])
        self.scheduler.load_state_dict(opt_state["scheduler"])
        self.best_state = (
            {k: t.to(self.device) for k, t in best.items()} if best is not None else None
        )
        self.step = int(state["step"])
        self.best_score = _number(state["best_score"], math.inf)
        self.best_loss = _number(state["best_loss"], math.inf)
        self.best_step = int(state["best_step"])
        self.initial_loss = _number(state["initial_loss"], math.nan)
        self.initial_score = _number(state["initial_score"], math.nan)
        self.bad_evals = int(state["bad_evals"])
        self.history = [
            {k: math.nan if v is None else v for k, v in row.items()} for row in state["history"]
        ]
        return self.step

    # --- the loop -------------------------------------------------------------------------------

    def fit(self, stop_after_steps: int | None = None) -> TrainingResult:
        """Train to ``max_steps`` or early stop; ``stop_after_steps`` is for tests (a crash)."""
        cfg = self.config
        started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        resumed = self.load_latest_checkpoint()
        if resumed is not None:
            log.info("resuming from checkpoint at step %d in %s", resumed, self.checkpoint_dir)
        stopped_early = bool(resumed is not None and self.bad_evals >= cfg.patience)
        if resumed is None:
            self._evaluate(math.nan, math.nan)
            log.info(
                "step 0 validation %s: %.5f, %s: %.5f",
                self.forecaster.loss_name,
                self.initial_loss,
                self.selection_metric,
                self.initial_score,
            )
        window_loss, window_steps, window_started = 0.0, 0, time.perf_counter()
        trained_samples, train_time = 0, 0.0
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="train",
            disable=not self.progress,
            file=sys.stderr,
            mininterval=1.0 if sys.stderr.isatty() else 15.0,
            dynamic_ncols=True,
        )
        try:
            with _sigterm_flag() as sigterm:
                while self.step < cfg.max_steps and not stopped_early:
                    step_started = time.perf_counter()
                    try:
                        window_loss += self._train_step()
                    except torch.OutOfMemoryError:
                        raise TrainingError(
                            f"the GPU ran out of memory at batch size {cfg.batch_size}",
                            f"lower training.batch_size (e.g. to {max(1, cfg.batch_size // 2)})",
                        ) from None
                    train_time += time.perf_counter() - step_started
                    trained_samples += cfg.batch_size
                    window_steps += 1
                    rate = trained_samples / max(train_time, 1e-9)
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{window_loss / window_steps:.4f}", sps=f"{rate:.0f}", refresh=False
                    )
                    if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                        elapsed = time.perf_counter() - window_started
                        stopped_early = self._evaluate(
                            window_loss / window_steps, window_steps * cfg.batch_size / elapsed
                        )
                        last = self.history[-1]
                        log.info(
                            "step %d: train %.5f, validation %.5f, crps %.5f, mae %.5f "
                            "(best %s %.5f at %d)",
                            self.step,
                            window_loss / window_steps,
                            last["validation_loss"],
                            last["validation_crps"],
                            last["validation_mae"],
                            self.selection_metric,
                            self.best_score,
                            self.best_step,
                        )
                        window_loss, window_steps, window_started = 0.0, 0, time.perf_counter()
                    if self.step % cfg.checkpoint_every == 0 or sigterm["stop"]:
                        self.save_checkpoint()
                    if sigterm["stop"]:
                        raise TrainingInterrupted(
                            f"training received SIGTERM at step {self.step}; a checkpoint "
                            f"was saved in {self.checkpoint_dir}",
                            "rerun the same command (or Snakemake target) to resume from it",
                        )
                    if stop_after_steps is not None and self.step >= stop_after_steps:
                        raise KeyboardInterrupt  # simulate a crash, for tests
        finally:
            bar.close()
        if self.step and (self.step % cfg.checkpoint_every):
            self.save_checkpoint()
        if stopped_early:
            log.info(
                "early stop at step %d: best validation %s at step %d",
                self.step,
                self.selection_metric,
                self.best_step,
            )
        if self.best_state is not None:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(self.best_state[name])
        return TrainingResult(
            steps=self.step,
            best_step=self.best_step,
            best_validation_loss=self.best_loss,
            initial_validation_loss=self.initial_loss,
            stopped_early=stopped_early,
            resumed_from_step=resumed,
            wall_time_s=time.perf_counter() - started,
            train_samples_per_s=trained_samples / train_time if train_time else math.nan,
            history=self.history,
            peak_memory_mb=peak_memory_mb(self.device),
            selection_metric=self.selection_metric,
            best_validation_score=self.best_score,
            initial_validation_score=self.initial_score,
            validation_forecast=self._forecast_facts(),
        )

    def _forecast_facts(self) -> dict[str, float]:
        if self.forecast_set is None:
            return {}
        seconds = [h["validation_forecast_s"] for h in self.history]
        seconds = [t for t in seconds if isinstance(t, float) and math.isfinite(t)]
        return {
            "series": len(self.forecast_set),
            "num_samples": self.config.validation_num_samples,
            "mean_seconds_per_evaluation": float(np.mean(seconds)) if seconds else math.nan,
        }
