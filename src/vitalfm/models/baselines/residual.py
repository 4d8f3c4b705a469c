"""The doubly residual MLP network of N-BEATS and N-HiTS (blocks, their parameter count)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


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
