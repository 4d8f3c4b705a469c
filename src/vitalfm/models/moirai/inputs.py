"""How a NaN-holed batch becomes MOIRAI's inputs, as gluonts feeds uni2ts's forecast modules.

One rule is shared by both variants: NaN before a row's first value is *padding* (a shorter
history, ``past_is_pad``), as gluonts' instance splitter pads a short series, not a run of
missing points. Other NaN are unobserved: MOIRAI 1.x fills them with 0
(:func:`moirai_inputs`), Moirai-2 with the causal mean (:func:`moirai2_inputs`).
"""

from __future__ import annotations

import torch


def _leading_gap(values: torch.Tensor) -> torch.Tensor:
    """True before each row's first finite value (padding: a shorter history)."""
    return torch.cumsum(torch.isfinite(values), dim=-1) == 0


def moirai_inputs(
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MOIRAI 1.x ``(target [B,T,1], observed [B,T,1], is_pad [B,T])`` from a NaN-holed [B, T].

    As gluonts feeds ``MoiraiForecast``: missing values are 0 and unobserved; the leading gap
    is padding (target 0, unobserved), as the instance splitter pads a shorter series.
    """
    observed = torch.isfinite(values)
    target = torch.where(observed, values, torch.zeros((), dtype=values.dtype))
    return target.unsqueeze(-1), observed.unsqueeze(-1), _leading_gap(values)


def moirai2_inputs(
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moirai-2 ``(target [B,T,1], observed [B,T,1], is_pad [B,T])`` from a NaN-holed [B, T].

    What ``Moirai2Forecast``'s gluonts predictor does to a series that starts at its first
    value, batched: gluonts' ``CausalMeanValueImputation`` (carry the last value forward, then
    replace each missing point by the mean of the carried-forward series before it; missing
    points stay unobserved), and the leading gap padded as for MOIRAI 1.x (0, unobserved).

    ``Moirai2Forecast.predict`` (numpy arrays) differs: uni2ts's ``LastValueImputation``
    transposes its (T, 1) arrays, so there every missing value becomes 0; we follow the
    predictor, which imputes as documented.
    """
    observed = torch.isfinite(values)
    is_pad = _leading_gap(values)
    length = values.shape[-1]
    positions = torch.arange(length, device=values.device).expand_as(values)
    first = torch.where(observed, positions, length).amin(dim=-1, keepdim=True)
    last_seen = torch.where(observed, positions, -1).cummax(dim=-1).values.clamp_min(0)
    carried = torch.where(is_pad, 0.0, values.gather(-1, last_seen).double())
    # float64, as gluonts' division by float indices
    before = torch.cumsum(carried, dim=-1) - carried
    causal_mean = before / (positions - first).clamp_min(1)
    imputed = torch.where(observed, values.double(), torch.where(is_pad, 0.0, causal_mean))
    return imputed.to(values.dtype).unsqueeze(-1), observed.unsqueeze(-1), is_pad
