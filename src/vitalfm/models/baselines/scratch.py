"""What the from-scratch baselines share: their saved form, options and forecasting path.

Baselines (``source: {scratch: true}``) have no pretrained weights. A family builds one from a
seeded random init (:meth:`ScratchForecaster.from_scratch`) for the study's window lengths;
method kind ``scratch`` then trains every parameter with the engine's Trainer on the same
windows as the fine-tunes, and the trained model is saved as ``config.json`` (family,
resolved options, window lengths, quantile levels) + ``model.safetensors``, which
:meth:`ScratchForecaster.load` opens again. Inputs: :mod:`.inputs`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.io import json_text
from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
    eval_mode,
)
from vitalfm.models.baselines.inputs import (
    QUANTILE_LEVELS,
    fill_context,
    fit_context,
    pinball_loss,
    scale_context,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FORMAT = "vitalfm.scratch"


class ScratchForecaster(Forecaster):
    """A baseline built from a seeded random init; subclasses give the network and options.

    ``options`` as configured are resolved (validated, defaults filled) into
    ``architecture``, which with the window lengths and quantile levels fully determines the
    network; it is what ``config.json`` records.
    """

    #: Option defaults; ``OPTIONS`` says what each does.
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: Whether forecasts are quantiles at ``quantile_levels`` (else samples).
    predicts_quantiles: ClassVar[bool] = True

    def __init__(
        self,
        module: nn.Module,
        source: ModelSource,
        architecture: dict[str, Any],
        context_steps: int | None,
        horizon_steps: int | None,
        quantile_levels: tuple[float, ...] = QUANTILE_LEVELS,
    ) -> None:
        super().__init__(module, source, self.family)
        self.architecture = architecture
        self.context_steps = context_steps
        self.horizon_steps = horizon_steps
        self.quantile_levels = tuple(float(q) for q in quantile_levels)

    # --- options ---------------------------------------------------------------------------

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` validated and completed with the defaults (ModelError otherwise)."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            allowed = ", ".join(sorted(cls.OPTIONS)) or "none"
            raise ModelError(
                f"family {cls.family} has no option(s) {', '.join(unknown)}",
                f"remove them from models.<name>.options (this family's options: {allowed})",
            )
        return cls.check_options({**cls.DEFAULTS, **options})

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Validate a complete option set; return it normalised (lists, floats)."""
        return options

    def apply_options(self, options: dict[str, Any]) -> None:
        """The network is built from its options: configured ones must be the ones it has."""
        resolved = self.resolve_options(options)
        if resolved != self.architecture:
            changed = sorted(k for k in resolved if resolved[k] != self.architecture.get(k))
            raise ModelError(
                f"the {self.family} model was built with options {self.architecture}, "
                f"but the config asks for {', '.join(f'{k}={resolved[k]!r}' for k in changed)}",
                "retrain it (delete its run folder) after changing models.<name>.options",
            )

    # --- building, saving, loading -----------------------------------------------------------

    @classmethod
    @abstractmethod
    def build_module(
        cls,
        architecture: dict[str, Any],
        context_steps: int | None,
        horizon_steps: int | None,
        quantile_levels: tuple[float, ...],
    ) -> nn.Module:
        """The network for resolved options and window lengths (random init)."""

    @classmethod
    def from_scratch(
        cls, options: Mapping[str, Any], context_steps: int, horizon_steps: int, seed: int
    ) -> ScratchForecaster:
        architecture = cls.resolve_options(options)
        for name, value in (("context_steps", context_steps), ("horizon_steps", horizon_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(
                    f"a {cls.family} model needs a positive {name}, got {value!r}",
                    "check windows.context_hours and windows.horizon_hours",
                )
        with torch.random.fork_rng(devices=[]):  # the init draws leave the caller's RNG alone
            torch.manual_seed(seed)
            module = cls.build_module(architecture, context_steps, horizon_steps, QUANTILE_LEVELS)
        forecaster = cls(
            module, ModelSource(scratch=True), architecture, context_steps, horizon_steps
        )
        forecaster.options = dict(options)
        return forecaster

    def config_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "version": 1,
            "family": self.family,
            "options": self.architecture,
            "context_steps": self.context_steps,
            "horizon_steps": self.horizon_steps,
            "quantile_levels": list(self.quantile_levels),
        }

    def write_pretrained(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": CONFIG_FORMAT})
        text = json_text(self.config_dict())
        (directory / CONFIG_FILE).write_text(text)

    @classmethod
    def load(cls, source: ModelSource, device: torch.device) -> ScratchForecaster:
        """A model this family saved (``source: {path: <folder>}``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if source.is_scratch:
            raise ModelError(
                f"a {cls.family} model from scratch has no saved weights to load",
                "build it with from_scratch, or point `source: {path: ...}` at a trained one",
            )
        if source.hub is not None:
            raise ModelError(
                f"family {cls.family} has no hub models",
                "use `source: {scratch: true}`, or a folder this project saved",
            )
        folder = Path(source.location)
        fix = "point it at a folder written by this family's save_pretrained (a finetune run)"
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise ModelError(f"model folder {folder} lacks {name}", fix)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as err:
            raise ModelError(f"cannot read the model in {folder}: {err}", fix) from None
        if (
            not isinstance(config, dict)
            or config.get("format") != CONFIG_FORMAT
            or config.get("family") != cls.family
        ):
            raise ModelError(f"{folder} does not hold a saved {cls.family} model", fix)
        architecture = cls.resolve_options(config.get("options") or {})
        levels = tuple(float(q) for q in config["quantile_levels"])
        context_steps, horizon_steps = config.get("context_steps"), config.get("horizon_steps")
        module = cls.build_module(architecture, context_steps, horizon_steps, levels)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise ModelError(f"the weights in {folder} do not fit its config: {err}", fix) from None
        module.to(device).eval()
        forecaster = cls(module, source, architecture, context_steps, horizon_steps, levels)
        forecaster.options = dict(config.get("options") or {})
        return forecaster

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> Forecaster:
        raise ModelError(
            f"family {cls.family} is a from-scratch baseline and has no stand-ins",
            "give it `source: {scratch: true}`",
        )

    def target_modules(self) -> TargetModules:
        # Baselines train every parameter (kind scratch); no adapter targets them.
        return TargetModules(attention=())

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "architecture": {
                **self.architecture,
                "context_steps": self.context_steps,
                "horizon_steps": self.horizon_steps,
                "output": "quantiles" if self.predicts_quantiles else "samples",
                **(
                    {"quantile_levels": list(self.quantile_levels)}
                    if self.predicts_quantiles
                    else {}
                ),
                "loss": self.loss_name,
            },
        }

    # --- shapes ------------------------------------------------------------------------------

    def _check_horizon(self, horizon: int) -> None:
        if self.horizon_steps is not None and horizon > self.horizon_steps:
            raise ModelError(
                f"this {self.family} model forecasts {self.horizon_steps} steps, "
                f"{horizon} were asked for",
                "retrain it for the configured windows.horizon_hours",
            )

    def _inputs(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(scaled filled context, observed mask as float, loc, scale) on the module's device."""
        device = next(self.module.parameters()).device
        assert self.context_steps is not None
        context = fit_context(context.float(), self.context_steps).to(device)
        filled, observed = fill_context(context)
        loc, scale = scale_context(filled, observed)
        return (filled - loc) / scale, observed.float(), loc, scale


class QuantileForecaster(ScratchForecaster):
    """A baseline whose network maps (scaled context, mask) [B, C] to quantiles [B, Q, H]."""

    loss_name: ClassVar[str] = "pinball"

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        horizon = batch.target.shape[-1]
        self._check_horizon(horizon)
        x, mask, loc, scale = self._inputs(batch.context)
        quantiles = self.module(x, mask)[..., :horizon].float()  # fp32 loss under autocast
        target = (batch.target.to(x.device).float() - loc) / scale
        return pinball_loss(quantiles, target, self.quantile_levels, reduction)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
        seeds: np.ndarray | None = None,  # draws nothing
    ) -> Forecast:
        self._check_horizon(horizon)
        eval_mode(self.module)
        x, mask, loc, scale = self._inputs(context)
        scaled = self.module(x, mask)[..., :horizon].float()
        # Levels are trained separately, so they may cross: sorting restores a monotone set
        # (a rearrangement that never raises the pinball loss).
        quantiles = (scaled.sort(dim=1).values * scale.unsqueeze(1) + loc.unsqueeze(1)).cpu()
        levels = self.quantile_levels
        median = (
            quantiles[:, levels.index(0.5)] if 0.5 in levels else quantiles.median(dim=1).values
        )
        return Forecast(median=median, quantiles=quantiles, quantile_levels=levels)
