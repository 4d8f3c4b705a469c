"""Filling a context's gaps causally (``windows.fill``): each window's context is filled from
its own readings only, never from one at or after the forecast origin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vitalfm.errors import ConfigError

FILL_METHODS: tuple[str, ...] = ("none", "ffill", "linear")


def check_fill_method(method: str) -> None:
    """ConfigError naming ``windows.fill.method`` unless it is one of :data:`FILL_METHODS`."""
    if method not in FILL_METHODS:
        raise ConfigError(
            f"config key windows.fill.method = {method!r} is invalid",
            "set it to one of " + ", ".join(repr(m) for m in FILL_METHODS),
        )


def causal_fill(values: np.ndarray, method: str, max_gap_steps: int) -> np.ndarray:
    """A filled copy of contexts ``values`` [N, C] (NaN = no reading), row by row.

    Each row is filled from its own points only, so nothing after a context reaches it:
    ``ffill`` carries a reading forward over at most ``max_gap_steps`` empty bins; ``linear``
    interpolates across a run of at most ``max_gap_steps`` empty bins that has a reading on
    both sides inside the row (a trailing run stays missing). Points before a row's first
    reading are never filled; ``none`` (or a gap of 0) fills nothing.
    """
    out = np.array(values, dtype=np.float32, copy=True)
    if method == "none" or max_gap_steps < 1 or out.size == 0:
        return out
    check_fill_method(method)
    observed = np.isfinite(out)
    length = out.shape[1]
    position = np.arange(length, dtype=np.int64)
    previous = np.maximum.accumulate(np.where(observed, position, -1), axis=1)
    before = np.take_along_axis(out, np.maximum(previous, 0), axis=1)
    if method == "ffill":
        fill = ~observed & (previous >= 0) & (position - previous <= max_gap_steps)
        out[fill] = before[fill]
        return out
    following = np.minimum.accumulate(np.where(observed, position, length)[:, ::-1], axis=1)
    following = following[:, ::-1]
    fill = (
        ~observed
        & (previous >= 0)
        & (following < length)
        & (following - previous - 1 <= max_gap_steps)
    )
    after = np.take_along_axis(out, np.minimum(following, length - 1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = (position - previous) / (following - previous)
        interpolated = before.astype(np.float64) + (after - before.astype(np.float64)) * fraction
    out[fill] = interpolated[fill].astype(np.float32)
    return out


def fill_settings(
    fill: Mapping[str, Any] | None, vital_names: Sequence[str], frequency_minutes: int
) -> tuple[str, tuple[int, ...]]:
    """(method, longest fillable gap in grid steps per vital) from ``windows.fill``.

    A gap of k empty bins spans k * frequency minutes; it may be filled when that is at most
    the vital's ``max_gap_minutes``.
    """
    fill = dict(fill or {})
    method = str(fill.get("method", "none"))
    check_fill_method(method)
    default = int(fill.get("max_gap_minutes", 60))
    overrides = dict(fill.get("max_gap_minutes_per_vital") or {})
    gaps = []
    for name in vital_names:
        minutes = int(overrides.get(name, default))
        if minutes < 0:
            raise ConfigError(
                f"config key windows.fill max gap for {name} = {minutes!r} is negative",
                "use 0 (no filling) or a positive number of minutes",
            )
        gaps.append(minutes // int(frequency_minutes))
    # Overrides for vitals that are not studied are ignored on purpose (the default config
    # carries a temperature override even when temperature is left out).
    return method, tuple(gaps)
