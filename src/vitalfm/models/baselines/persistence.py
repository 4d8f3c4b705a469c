"""Persistence (the naive forecast): every horizon step repeats the last observed value.

The reference the authors' group reports its deep models against (arXiv 2311.04770). It has
no parameters and nothing to train (method ``zero_shot``).

Its intervals are the textbook naive method's (Hyndman & Athanasopoulos, *Forecasting:
Principles and Practice*, 3rd ed., §5.5): the series is taken as a random walk, so the
forecast ``h`` steps ahead is normal around the last value with standard deviation
``sigma * sqrt(h)``, where ``sigma`` is the root mean square of the context's one-step
changes. Changes across a gap of ``g`` steps count as ``change / sqrt(g)`` (a random walk's
spread over ``g`` steps). Where ``h`` counts from the last observed point, so a context that
ends in a gap gets wider intervals. A context with fewer than two observed points has no
change to measure: its quantiles all equal the last value (a point forecast, which coverage
then scores as an interval of width 0).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models.base import Forecast, ModelError, SeriesBatch, TimeAxis
from vitalfm.models.baselines.inputs import pinball_loss
from vitalfm.models.baselines.scratch import ScratchForecaster


def last_observed(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(last observed value, steps from it to the context's end) per row of [B, C].

    A row with no observed value gets NaN and step count C.
    """
    observed = torch.isfinite(context)
    length = context.shape[-1]
    positions = torch.arange(length, device=context.device).expand_as(context)
    last = torch.where(observed, positions, -1).max(dim=-1).values
    value = context.gather(-1, last.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    value = torch.where(last >= 0, value, torch.nan)
    return value, (length - 1 - last).clamp_max(length)


def random_walk_sigma(context: torch.Tensor) -> torch.Tensor:
    """Per row of [B, C]: RMS of the changes between successive observed points, each
    divided by the square root of the steps between them (0 with fewer than two points)."""
    observed = torch.isfinite(context)
    positions = torch.arange(context.shape[-1], device=context.device).expand_as(context)
    seen = torch.where(observed, positions, -1).cummax(dim=-1).values
    previous = torch.cat([torch.full_like(seen[:, :1], -1), seen[:, :-1]], dim=-1)
    valid = observed & (previous >= 0)
    values = torch.where(observed, context, 0.0)
    gap = (positions - previous).clamp_min(1).to(values.dtype)
    change = (values - values.gather(-1, previous.clamp_min(0))) / gap.sqrt()
    squares = torch.where(valid, change, 0.0).square().sum(dim=-1)
    return (squares / valid.sum(dim=-1).clamp_min(1)).sqrt()


class PersistenceModule(nn.Module):
    """No parameters: the engine's interface wants a module to count and move."""

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return last_observed(context)[0]


class PersistenceForecaster(ScratchForecaster):
    family: ClassVar[str] = "persistence"
    loss_name: ClassVar[str] = "pinball"
    OPTIONS: ClassVar[dict[str, str]] = {}

    @classmethod
    def build_module(
        cls,
        architecture: dict[str, Any],
        context_steps: int | None,
        horizon_steps: int | None,
        quantile_levels: tuple[float, ...],
    ) -> nn.Module:
        return PersistenceModule()

    def quantiles(self, context: torch.Tensor, horizon: int) -> torch.Tensor:
        """[B, Q, H] quantiles of the random-walk forecast (see the module docstring)."""
        context = context.detach().cpu().double()
        last, since = last_observed(context)
        sigma = random_walk_sigma(context)
        ahead = since.double().unsqueeze(-1) + torch.arange(1, horizon + 1, dtype=torch.float64)
        spread = sigma.unsqueeze(-1) * ahead.sqrt()  # [B, H]
        levels = torch.tensor(self.quantile_levels, dtype=torch.float64)
        z = torch.distributions.Normal(0.0, 1.0).icdf(levels).view(1, -1, 1)
        return (last.view(-1, 1, 1) + z * spread.unsqueeze(1)).float()

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """The pinball loss of its quantiles (for reference; nothing trains)."""
        quantiles = self.quantiles(batch.context, batch.target.shape[-1])
        return pinball_loss(quantiles, batch.target.cpu().float(), self.quantile_levels, reduction)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
        seeds: np.ndarray | None = None,  # draws nothing
    ) -> Forecast:
        if horizon < 1:
            raise ModelError(f"a horizon of {horizon} steps", "forecast at least one step")
        quantiles = self.quantiles(context, horizon)
        median = last_observed(context.detach().cpu().float())[0].unsqueeze(-1).expand(-1, horizon)
        return Forecast(
            median=median.contiguous(),
            quantiles=quantiles,
            quantile_levels=tuple(self.quantile_levels),
        )
