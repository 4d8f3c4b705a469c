"""What the from-scratch baselines share: their saved form, inputs, options and quantile loss.

Baselines (``source: {scratch: true}``) have no pretrained weights. A family builds one from a
seeded random init (:meth:`ScratchForecaster.from_scratch`) for the study's window lengths;
method kind ``scratch`` then trains every parameter with the engine's Trainer on the same
windows as the fine-tunes, and the trained model is saved as ``config.json`` (family,
resolved options, window lengths, quantile levels) + ``model.safetensors``, which
:meth:`ScratchForecaster.load` opens again.

Inputs: contexts arrive in original units with NaN where missing. :func:`fill_context`
forward-fills them (points before the first reading get the mean of the observed ones) and
:func:`scale_context` standardises each series by the mean and spread of its observed points.

The MLP families (N-BEATS, N-HiTS) predict the study's quantile levels directly and train on
the pinball loss (:func:`pinball_loss`), so CRPS and interval coverage are defined for them.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from vitalfm.io import json_text
from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
)

#: The study's quantile levels (as ``vitalfm.engine.forecast.DEFAULT_LEVELS``).
QUANTILE_LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FORMAT = "vitalfm.scratch"
#: A series' scale is at least this share of its level (and at least SCALE_FLOOR): a flat
#: context (SpO2 at 100 %, a filled gap) would otherwise blow its errors up by orders of
#: magnitude and outweigh the whole batch.
SCALE_FLOOR_RELATIVE = 0.01
SCALE_FLOOR = 1e-3


# --- inputs ------------------------------------------------------------------------------------


def fill_context(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(filled values, observed mask) of a [B, C] context with NaN where missing.

    Each missing point takes the last observed value before it; points before the first
    reading take the mean of the series' observed points (0 for a series with none).
    """
    observed = torch.isfinite(context)
    positions = torch.arange(context.shape[-1], device=context.device).expand_as(context)
    last_seen = torch.where(observed, positions, 0).cummax(dim=-1).values
    values = torch.where(observed, context, 0.0)
    filled = values.gather(-1, last_seen)
    counts = observed.sum(dim=-1, keepdim=True)
    mean = values.sum(dim=-1, keepdim=True) / counts.clamp_min(1)
    seen_before = observed.cummax(dim=-1).values
    return torch.where(seen_before, filled, mean), observed


def scale_context(
    filled: torch.Tensor, observed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) [B, 1]: mean and standard deviation of each series' observed points,
    the scale floored at ``max(SCALE_FLOOR_RELATIVE * |mean|, SCALE_FLOOR)``."""
    weight = observed.to(filled.dtype)
    count = weight.sum(dim=-1, keepdim=True).clamp_min(1)
    loc = (filled * weight).sum(dim=-1, keepdim=True) / count
    variance = (((filled - loc) * weight) ** 2).sum(dim=-1, keepdim=True) / count
    floor = (SCALE_FLOOR_RELATIVE * loc.abs()).clamp_min(SCALE_FLOOR)
    return loc, torch.maximum(variance.sqrt(), floor)


def fit_context(context: torch.Tensor, length: int) -> torch.Tensor:
    """The last ``length`` points of [B, C]; a shorter context is left-padded with NaN."""
    if context.shape[-1] >= length:
        return context[..., context.shape[-1] - length :]
    pad = torch.full(
        (*context.shape[:-1], length - context.shape[-1]),
        float("nan"),
        dtype=context.dtype,
        device=context.device,
    )
    return torch.cat([pad, context], dim=-1)


def pinball_loss(
    quantiles: torch.Tensor, target: torch.Tensor, levels: Sequence[float]
) -> torch.Tensor:
    """Mean pinball loss of quantiles [B, Q, H] at ``levels`` against target [B, H].

    Averaged over the levels and over the observed (finite) target points only.
    """
    observed = torch.isfinite(target)
    level = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device).view(1, -1, 1)
    error = torch.where(observed, target, 0.0).unsqueeze(1).to(quantiles.dtype) - quantiles
    loss = torch.maximum(level * error, (level - 1) * error).mean(dim=1)
    return (loss * observed).sum() / observed.sum().clamp_min(1)


# --- option checks -------------------------------------------------------------------------------


def option_error(family: str, name: str, value: Any, expected: str) -> ModelError:
    return ModelError(
        f"{family} option {name} = {value!r} is invalid",
        f"set models.<name>.options.{name} to {expected}",
    )


def positive_int(family: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise option_error(family, name, value, "a positive integer")
    return value


def positive_int_list(family: str, name: str, value: Any, length: int) -> list[int]:
    """A list of ``length`` positive integers (one per stack)."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != length
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise option_error(family, name, value, f"a list of {length} positive integers")
    return list(value)


def fraction(family: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise option_error(family, name, value, "a number in [0, 1)")
    return float(value)


def choice(family: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise option_error(family, name, value, "one of " + ", ".join(allowed))
    return str(value)


# --- the shared forecaster -------------------------------------------------------------------


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

    def save_pretrained(self, directory: Path) -> None:
        from safetensors.torch import save_file

        if hasattr(self.module, "peft_config"):
            raise ModelError(
                "cannot save an adapter-wrapped model as a full checkpoint",
                "merge the adapter first (vitalfm.models.adaptation.merge_for_inference)",
            )
        directory = Path(directory)
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

    def loss(self, batch: SeriesBatch) -> torch.Tensor:
        horizon = batch.target.shape[-1]
        self._check_horizon(horizon)
        x, mask, loc, scale = self._inputs(batch.context)
        quantiles = self.module(x, mask)[..., :horizon].float()  # fp32 loss under autocast
        target = (batch.target.to(x.device).float() - loc) / scale
        return pinball_loss(quantiles, target, self.quantile_levels)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
    ) -> Forecast:
        self._check_horizon(horizon)
        self.module.eval()
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


# --- the doubly residual MLP network of N-BEATS and N-HiTS -------------------------------------


class ResidualBlock(nn.Module):
    """One block: an MLP on the (pooled) residual context and mask, emitting a backcast of the
    context and a forecast of every quantile level.

    N-BEATS' generic block is the case ``pool = 1, knots = horizon``: its linear basis
    expansion of theta is folded into the output layers (a product of two linear maps is one
    linear map). N-HiTS' block max- or average-pools its input with kernel ``pool`` and emits
    ``knots`` points per level, interpolated to the horizon.
    """

    def __init__(
        self,
        context_steps: int,
        horizon_steps: int,
        n_quantiles: int,
        hidden_size: int,
        layers: int,
        pool: int = 1,
        pool_mode: str = "max",
        knots: int | None = None,
        interpolation: str = "linear",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.horizon_steps = horizon_steps
        self.n_quantiles = n_quantiles
        self.knots = horizon_steps if knots is None else knots
        self.interpolation = interpolation
        self.pool: nn.Module
        if pool == 1:
            self.pool = nn.Identity()
        elif pool_mode == "max":
            self.pool = nn.MaxPool1d(pool, stride=pool, ceil_mode=True)
        else:
            self.pool = nn.AvgPool1d(pool, stride=pool, ceil_mode=True)
        pooled = math.ceil(context_steps / pool)
        mlp: list[nn.Module] = []
        width = 2 * pooled  # the pooled context and the pooled observed mask
        for _ in range(layers):
            mlp += [nn.Linear(width, hidden_size), nn.ReLU()]
            if dropout:
                mlp.append(nn.Dropout(dropout))
            width = hidden_size
        self.mlp = nn.Sequential(*mlp)
        self.backcast = nn.Linear(hidden_size, context_steps)
        self.forecast = nn.Linear(hidden_size, n_quantiles * self.knots)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(torch.stack([x, mask], dim=1))  # [B, 2, C / pool]
        hidden = self.mlp(pooled.flatten(1))
        forecast = self.forecast(hidden).view(-1, self.n_quantiles, self.knots)
        if self.knots != self.horizon_steps:
            if self.interpolation == "linear" and self.knots > 1:
                forecast = F.interpolate(
                    forecast, size=self.horizon_steps, mode="linear", align_corners=True
                )
            else:
                forecast = F.interpolate(forecast, size=self.horizon_steps, mode="nearest")
        return self.backcast(hidden), forecast


def block_parameters(
    context_steps: int,
    horizon_steps: int,
    n_quantiles: int,
    hidden_size: int,
    layers: int,
    pool: int = 1,
    knots: int | None = None,
) -> int:
    """Parameters of one :class:`ResidualBlock`, by formula (sizes a config before building)."""
    knots = horizon_steps if knots is None else knots
    inputs = 2 * math.ceil(context_steps / pool)
    mlp = (inputs + 1) * hidden_size + (layers - 1) * (hidden_size + 1) * hidden_size
    return mlp + (hidden_size + 1) * (context_steps + n_quantiles * knots)


class DoublyResidualNet(nn.Module):
    """Blocks in sequence: each sees what the previous ones left unexplained of the context
    (residual = residual - backcast) and adds its forecast to the sum.

    The sum starts at the last (filled) context value, as neuralforecast's N-BEATS and N-HiTS
    start from the naive forecast, so the blocks learn the change from persistence. The last
    block's backcast feeds nothing; it is kept (and counted) so that parameter counts compare
    with the papers' and the libraries' networks, which have it too.
    """

    def __init__(self, blocks: Sequence[ResidualBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = x
        forecast = x[:, -1:, None]  # [B, 1, 1], broadcast over levels and steps
        for block in self.blocks:
            backcast, block_forecast = block(residual, mask)
            residual = residual - backcast
            forecast = forecast + block_forecast
        return forecast
