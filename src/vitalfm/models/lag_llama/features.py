"""Lag-Llama's per-token inputs: scaling, lag features, static and calendar features.

Each token is one time step with ``[lags (len(lags_seq)), log1p|loc|, log scale, 6 calendar
features]``, in that column order (the released ``wte`` weights expect it). gluonts provides
the lag helper (``lagged_sequence_values``), the mean/std scalers and the calendar features;
the robust scaler is Lag-Llama's own and gluonts has none, so it is written here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from gluonts.time_feature import (
    day_of_month,
    day_of_week,
    day_of_year,
    get_lags_for_frequency,
    hour_of_day,
    minute_of_hour,
    second_of_minute,
)

from vitalfm.lazy_imports import import_leaf
from vitalfm.models.base import TimeAxis

# gluonts.torch's own __init__ imports every estimator and Lightning (~2.5 s per job)
MeanScaler = import_leaf("gluonts.torch.scaler", "gluonts.torch").MeanScaler
StdScaler = import_leaf("gluonts.torch.scaler", "gluonts.torch").StdScaler
lagged_sequence_values = import_leaf("gluonts.torch.util", "gluonts.torch").lagged_sequence_values

#: gluonts' features for frequency "S" (``time_features_from_frequency_str("S")``), in order.
#: Lag-Llama uses these whatever the data's frequency.
CALENDAR_FEATURES = (
    second_of_minute,
    minute_of_hour,
    hour_of_day,
    day_of_week,
    day_of_month,
    day_of_year,
)
#: The frequencies whose gluonts lags Lag-Llama pools.
LAG_FREQUENCIES = ("Q", "M", "W", "D", "H", "T", "S")
#: Floors of the scale, as Lag-Llama's robust scaler and gluonts' scalers set them.
DEFAULT_MINIMUM_SCALE = {"robust": 1e-10, "mean": 1e-10, "std": 1e-5, "none": 1.0}


def released_lags() -> list[int]:
    """The 84 lag indices of the released model (0 = the current value), recomputed.

    Union of gluonts' lags for the frequencies Q..S, sorted, minus one. A checkpoint carries
    its own list in ``model_kwargs["lags_seq"]``; this one is for stand-ins.
    """
    lags: set[int] = set()
    with warnings.catch_warnings():  # pandas deprecates the aliases Q, M, H, T, S
        warnings.simplefilter("ignore", FutureWarning)
        for freq in LAG_FREQUENCIES:
            lags.update(get_lags_for_frequency(freq, num_default_lags=1))
    return sorted(lag - 1 for lag in lags)


# --- scaling -------------------------------------------------------------------------------------


def robust_scale(
    values: torch.Tensor, observed: torch.Tensor, minimum_scale: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) [B, 1]: median and inter-quartile range of the observed values.

    The lower of two middle values is the median (``torch.nanmedian``); loc is 0 when nothing
    is observed, scale is 1 when the IQR is undefined and never below ``minimum_scale``.
    """
    with torch.no_grad():
        kept = torch.where(observed > 0, values, torch.nan)
        median = torch.nanmedian(kept, dim=-1, keepdim=True).values
        spread = torch.nanquantile(kept, torch.tensor([0.25, 0.75], device=values.device), dim=-1)
        iqr = (spread[1] - spread[0]).unsqueeze(-1)
        loc = torch.nan_to_num(median, nan=0.0)
        scale = torch.where(torch.isnan(iqr), torch.ones_like(iqr), iqr).clamp_min(minimum_scale)
    return loc, scale


def scale_stats(
    kind: str, values: torch.Tensor, observed: torch.Tensor, minimum_scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) [B, 1] of ``values`` [B, T] weighted by ``observed`` for a scaling kind."""
    floor = DEFAULT_MINIMUM_SCALE[kind] if minimum_scale is None else minimum_scale
    if kind == "robust":
        return robust_scale(values, observed, floor)
    if kind == "mean":
        _, loc, scale = MeanScaler(dim=-1, keepdim=True, minimum_scale=floor)(values, observed)
        return loc, scale
    if kind == "std":
        _, loc, scale = StdScaler(dim=-1, keepdim=True, minimum_scale=floor)(values, observed)
        return loc, scale
    ones = torch.ones_like(values[:, :1])
    return torch.zeros_like(ones), ones


# --- token features ------------------------------------------------------------------------------


def lag_features(
    history: torch.Tensor, prior: int, start: int, stop: int, lags: Sequence[int]
) -> torch.Tensor:
    """[N, stop - start, len(lags)]: for token t, column j holds ``history[prior + t - lags[j]]``.

    ``history`` [N, prior + tokens] is the scaled series whose first ``prior`` points only
    feed the lags.
    """
    with warnings.catch_warnings():
        # gluonts indexes with a list of slices, which torch deprecates (same result today;
        # the tests compare the lags with an independent computation)
        warnings.filterwarnings("ignore", "Using a non-tuple sequence", UserWarning)
        return lagged_sequence_values(
            list(lags), history[:, : prior + start], history[:, prior + start : prior + stop], -1
        )


def static_features(loc: torch.Tensor, scale: torch.Tensor, tokens: int) -> torch.Tensor:
    """[N, tokens, 2]: log1p(|loc|) and log(scale), the same for every token."""
    return torch.cat((loc.abs().log1p(), scale.log()), dim=-1)[:, None, :].expand(-1, tokens, -1)


def calendar_features(time: TimeAxis, length: int, offset: int) -> np.ndarray:
    """float32 [B, length, 6]: gluonts' "S" features of data points ``offset`` .. ``+length``.

    Points before the first context point (``offset + j < 0``, the left padding) get zeros,
    as gluonts' InstanceSplitter pads every past field with 0.
    """
    stamps = time.timestamps(length, offset)
    index = pd.DatetimeIndex(stamps.reshape(-1))
    columns = [np.asarray(feature(index), dtype=np.float32) for feature in CALENDAR_FEATURES]
    features = np.stack(columns, axis=-1).reshape(stamps.shape[0], length, len(columns))
    padded = offset + np.arange(length) < 0
    features[:, padded] = 0.0
    return features


def token_features(
    history: torch.Tensor,
    prior: int,
    start: int,
    stop: int,
    lags: Sequence[int],
    loc: torch.Tensor,
    scale: torch.Tensor,
    calendar: torch.Tensor | None,
) -> torch.Tensor:
    """[N, stop - start, feature size] for tokens ``start`` .. ``stop`` of ``history``.

    ``calendar`` [N, >= stop, 6] holds the calendar features of every token (or None).
    """
    parts = [
        lag_features(history, prior, start, stop, lags),
        static_features(loc, scale, stop - start),
    ]
    if calendar is not None:
        parts.append(calendar[:, start:stop])
    return torch.cat(parts, dim=-1)
