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
Batches and dropout masks are pure functions of (seed, step) (see
:mod:`vitalfm.engine.training_data`), so a job killed at any point (even by SIGKILL) and rerun
resumes from its last checkpoint and ends, on CPU, with the same weights as an uninterrupted
run. The checkpoint folder's format is :mod:`vitalfm.engine.checkpoints`'s. We keep our own
loop rather than HF ``Trainer`` or Lightning because neither gives bit-identical resumption
with step-addressed batches, and both add per-step overhead that the small models here feel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vitalfm.engine.checkpoints import CheckpointFolder, number_or
from vitalfm.engine.training_config import (
    TrainingConfig,
    TrainingError,
    TrainingInterrupted,
    TrainingResult,
)
from vitalfm.engine.training_data import TrainingData, ValidationForecastSet
from vitalfm.evaluation.metric_registry import CRPS, MAE
from vitalfm.models.base import Forecaster, SeriesBatch, TimeAxis

log = logging.getLogger(__name__)

__all__ = ["Trainer", "TrainingConfig", "TrainingError", "TrainingInterrupted", "TrainingResult"]


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


def seed_step_generators(seed: int, device: torch.device) -> None:
    """Seed the generators a training step draws from: the CPU one and ``device``'s own.

    The same streams as ``torch.manual_seed(seed)`` on those generators, without its walk over
    every backend (CUDA queueing, MPS, XPU, custom devices), which took 0.1-0.2 ms a step on
    CPU, about 1 % of the Chronos-2 stand-in's step.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


def _forecast_seed(seed: int) -> int:
    """The base of the validation forecasts' per-series seeds: the same at every evaluation."""
    return int(np.random.SeedSequence([seed, 5]).generate_state(1)[0])


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
        self.checkpoints = CheckpointFolder(self.checkpoint_dir, self.fingerprint)
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
        #: The training loss of every step this Trainer ran (not those before a resumption).
        self.train_losses: list[float] = []
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
        series' vital, pooled over observed target points. As in the study's forecasts
        (:func:`~vitalfm.engine.forecast.forecast_windows`), each series samples from its own
        stream (:func:`~vitalfm.engine.forecast.series_seeds` of its window's index in the
        validation split, start and vital), the same at every evaluation (the training RNG is
        left as it was), and every call has ``validation_batch_size`` rows rounded up to a
        multiple of 64 (:func:`~vitalfm.engine.forecast.call_rows`; the last call padded),
        so evaluations differ only by the weights and no series' forecast depends on the
        others. Empty without a forecast set.
        """
        if self.forecast_set is None:
            return {}
        from vitalfm.engine.forecast import (
            call_rows,
            fixed_shape_calls,
            series_seeds,
            to_quantiles,
        )
        from vitalfm.evaluation.metrics import point_terms, to_minmax
        from vitalfm.evaluation.quantiles import CRPS_LEVELS

        started = time.perf_counter()
        self.forecaster.module.eval()
        self._in_train_mode = False
        pairs, cfg = self.forecast_set.pairs, self.config
        horizon = pairs.target.shape[1]
        crps, abs_error, points = 0.0, 0.0, 0
        devices = [self.device] if self.device.type == "cuda" else []
        base, size = _forecast_seed(cfg.seed), call_rows(cfg.validation_batch_size)
        seeds = series_seeds(base, pairs.window_ids, pairs.start_s, pairs.vitals.tolist())
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(base % 2**63)
            for call in fixed_shape_calls(seeds, size, base):
                rows, index, real = slice(call.start, call.stop), call.index, call.real
                forecast = self.forecaster.predict(
                    torch.from_numpy(np.ascontiguousarray(pairs.context[index])),
                    horizon,
                    cfg.validation_num_samples,
                    time=TimeAxis(pairs.start_s[index], pairs.step_s),
                    seeds=call.seeds,
                )
                quantiles = to_quantiles(forecast, CRPS_LEVELS).detach().cpu().double().numpy()
                median = forecast.median.detach().cpu().double().numpy()
                quantiles, median = quantiles[:real], median[:real]
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
                crps += float(terms[CRPS.numerator].sum())
                abs_error += float(terms[MAE.numerator].sum())
                points += int(observed.sum())
        return {
            CRPS.name: crps / points if points else math.nan,
            MAE.name: abs_error / points if points else math.nan,
            "seconds": time.perf_counter() - started,
        }

    def _train_step(self) -> float:
        cfg = self.config
        if not self._in_train_mode:  # module.train() walks every submodule: once per eval
            self.forecaster.module.train()
            self._in_train_mode = True
        seed_step_generators(_step_seed(cfg.seed, self.step), self.device)
        batch = self.data.train_batch(self.step, cfg.batch_size)
        loss = self._loss(batch)
        value = float(loss.detach())  # the step's one host sync
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at step {self.step + 1} "
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
        self.train_losses.append(value)
        return value

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
                f"validation_{CRPS.name}": metrics.get(CRPS.name, math.nan),
                f"validation_{MAE.name}": metrics.get(MAE.name, math.nan),
                "selection_metric": self.selection_metric,
                "best_step": self.best_step,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "samples_per_s": samples_per_s,
                "validation_forecast_s": metrics.get("seconds", math.nan),
            }
        )
        return self.step > 0 and self.bad_evals >= self.config.patience

    # --- checkpoints (the folder's format: vitalfm.engine.checkpoints) ---------------------------

    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(
            self.step,
            {k: p.detach().cpu().contiguous() for k, p in self.params.items()},
            (
                {k: t.cpu().contiguous() for k, t in self.best_state.items()}
                if self.best_state is not None
                else None
            ),
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
            {
                "selection_metric": self.selection_metric,
                "best_score": self.best_score,
                "best_loss": self.best_loss,
                "best_step": self.best_step,
                "initial_loss": self.initial_loss,
                "initial_score": self.initial_score,
                "bad_evals": self.bad_evals,
                "history": self.history,
            },
        )

    def load_latest_checkpoint(self) -> int | None:
        checkpoint = self.checkpoints.load_latest()
        if checkpoint is None:
            return None
        trained, best, state = checkpoint.trainable, checkpoint.best, checkpoint.state
        if set(trained) != set(self.params):
            raise self.checkpoints.corrupt(
                checkpoint.path, "its parameter names differ from the adapted model's"
            )
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(trained[name].to(param.device))
        self.optimizer.load_state_dict(checkpoint.optimizer["optimizer"])
        self.scheduler.load_state_dict(checkpoint.optimizer["scheduler"])
        self.best_state = (
            {k: t.to(self.device) for k, t in best.items()} if best is not None else None
        )
        self.step = int(state["step"])
        self.best_score = number_or(state["best_score"], math.inf)
        self.best_loss = number_or(state["best_loss"], math.inf)
        self.best_step = int(state["best_step"])
        self.initial_loss = number_or(state["initial_loss"], math.nan)
        self.initial_score = number_or(state["initial_score"], math.nan)
        self.bad_evals = int(state["bad_evals"])
        self.history = [
            {k: math.nan if v is None else v for k, v in row.items()} for row in state["history"]
        ]
        return self.step

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
