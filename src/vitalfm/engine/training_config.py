"""What a training run is given and what it gives back, shared by the loop and its callers.

:class:`TrainingConfig` (the optimiser, schedule, early-stopping and model-selection settings),
:class:`TrainingResult` (steps, best step, the validation history, memory and speed), the
history as the ``history.tsv`` saved beside a trained model (:func:`history_tsv`), and
:class:`TrainingError`, raised when training cannot go on as configured.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from vitalfm.errors import ConfigError
from vitalfm.evaluation.metric_registry import CRPS, MAE
from vitalfm.models.base import ModelError

#: What early stopping may watch: a validation forecast metric, or the objective itself.
SELECTION_METRICS = (CRPS.name, MAE.name, "loss")


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
    selection_metric: str = CRPS.name
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


HISTORY_FIELDS = ("step", "train_loss", "validation_loss", "learning_rate", "samples_per_s")


def history_tsv(history: list[dict[str, Any]]) -> str:
    """The loss curve: the fixed columns, then whatever else the Trainer recorded (the
    validation forecast metrics, the selection metric, the best step so far)."""
    buffer = io.StringIO()
    extra = [k for row in history for k in row if k not in HISTORY_FIELDS]
    fields = [*HISTORY_FIELDS, *dict.fromkeys(extra)]
    writer = csv.DictWriter(buffer, fields, delimiter="\t", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()
