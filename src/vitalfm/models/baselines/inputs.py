"""What the from-scratch baselines do to a context before their networks see it.

Contexts arrive in original units with NaN where missing. :func:`fill_context` forward-fills
them (points before the first reading get the mean of the observed ones) and
:func:`scale_context` standardises each series by the mean and spread of its observed points.
The MLP families (N-BEATS, N-HiTS) predict the study's quantile levels directly and train on
the pinball loss (:func:`pinball_loss`), so CRPS and interval coverage are defined for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vitalfm.evaluation.quantiles import FORECAST_LEVELS
from vitalfm.models.series_loss import pooled

#: The study's quantile levels (as ``vitalfm.engine.forecast.DEFAULT_LEVELS``).
QUANTILE_LEVELS = FORECAST_LEVELS
#: A series' scale is at least this share of its level (and at least SCALE_FLOOR): a flat
#: context (SpO2 at 100 %, a filled gap) would otherwise blow its errors up by orders of
#: magnitude and outweigh the whole batch.
SCALE_FLOOR_RELATIVE = 0.01
SCALE_FLOOR = 1e-3


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
    quantiles: torch.Tensor,
    target: torch.Tensor,
    levels: Sequence[float],
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean pinball loss of quantiles [B, Q, H] at ``levels`` against target [B, H].

    Averaged over the levels and over the observed (finite) target points only: of the whole
    batch, or (``reduction="none"``) of each series [B]
    (:func:`~vitalfm.models.series_loss.pooled`).
    """
    observed = torch.isfinite(target)
    level = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device).view(1, -1, 1)
    error = torch.where(observed, target, 0.0).unsqueeze(1).to(quantiles.dtype) - quantiles
    loss = torch.maximum(level * error, (level - 1) * error).mean(dim=1)
    return pooled(loss, observed, reduction)
