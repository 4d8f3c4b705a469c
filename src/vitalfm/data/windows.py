"""Cut one split of the grid into forecasting windows (:func:`build_windows`).

A window is ``context_steps + horizon_steps`` consecutive bins of one ICU stay; windows start at
step 0 and every ``stride_steps`` after while they fit, and a window counts when its horizon has
enough readings. The result is a :class:`~vitalfm.data.window_set.WindowSet` (the windows
indexed, not materialised, and their file format); :mod:`vitalfm.data.window_fill` fills
contexts causally. Both are re-exported here, where the workflow and the models import them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vitalfm.data.grid import grid_frequency_minutes
from vitalfm.data.window_fill import FILL_METHODS, causal_fill, check_fill_method, fill_settings
from vitalfm.data.window_set import FORMAT, FORMAT_VERSION, WindowSet
from vitalfm.errors import ConfigError, DataError

__all__ = [
    "FILL_METHODS",
    "FORMAT",
    "FORMAT_VERSION",
    "WindowSet",
    "build_windows",
    "causal_fill",
    "check_fill_method",
    "fill_settings",
    "hours_to_steps",
]


def hours_to_steps(hours: float, frequency_minutes: int, key: str) -> int:
    """Whole number of grid steps in ``hours``; ConfigError when it is not whole or < 1."""
    steps = hours * 60 / frequency_minutes
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise ConfigError(
            f"config key windows.{key} = {hours!r} is not a whole, positive number of "
            f"{frequency_minutes}-minute grid steps",
            f"use a multiple of {frequency_minutes / 60:g} h or change grid.frequency_minutes",
        )
    return round(steps)


def _split_rows(grid: pa.Table, manifest: pd.DataFrame, split: str) -> pa.Table:
    if "split" not in manifest.columns or "subject_id" not in manifest.columns:
        raise DataError(
            "the split manifest lacks the columns subject_id and split", "rerun the splits rule"
        )
    subjects = manifest.loc[manifest["split"] == split, "subject_id"].to_numpy(dtype=np.int64)
    if subjects.size == 0:
        known = sorted(manifest["split"].unique().tolist())
        raise DataError(
            f"the split manifest has no patient in split {split!r} (it has {known!r})",
            "use one of train, validation, test, or rerun the splits rule",
        )
    mask = pc.is_in(
        grid.column("subject_id"),
        value_set=pa.array(subjects, pa.int64()).cast(grid.schema.field("subject_id").type),
    )
    return grid.filter(mask)


def build_windows(
    grid: pa.Table,
    manifest: pd.DataFrame,
    *,
    split: str,
    vital_names: Sequence[str],
    frequency_minutes: int,
    context_hours: float,
    horizon_hours: float,
    stride_hours: float,
    min_horizon_observed: int = 1,
    fill: Mapping[str, Any] | None = None,
) -> WindowSet:
    """Index the forecasting windows of one split of the grid.

    A window counts when at least one vital has >= ``min_horizon_observed`` observed horizon
    points; per-vital counts are kept so that model jobs can skip (window, vital) pairs
    without any. Stays without a counted window are left out. ``fill`` is the config's
    ``windows.fill`` (method, max_gap_minutes, max_gap_minutes_per_vital): how
    :meth:`WindowSet.context` fills each context, causally; default none.
    """
    vital_names = tuple(vital_names)
    fill_method, fill_gaps = fill_settings(fill, vital_names, frequency_minutes)
    recorded = grid_frequency_minutes(grid)
    if recorded is not None and recorded != frequency_minutes:
        raise DataError(
            f"the grid has {recorded}-minute steps but the windows were asked for "
            f"{frequency_minutes}-minute steps",
            "rerun the grid rule with the current config key grid.frequency_minutes",
        )
    if min_horizon_observed < 1:
        raise ConfigError(
            f"config key windows.min_horizon_observed = {min_horizon_observed!r} is invalid",
            "set it to a whole number >= 1",
        )
    context_steps = hours_to_steps(context_hours, frequency_minutes, "context_hours")
    horizon_steps = hours_to_steps(horizon_hours, frequency_minutes, "horizon_hours")
    stride_steps = hours_to_steps(stride_hours, frequency_minutes, "stride_hours")
    length = context_steps + horizon_steps

    needed = ["icustay_id", "subject_id", "time", "step"]
    for name in vital_names:
        needed += [name, f"{name}_observed"]
    missing = [c for c in needed if c not in grid.column_names]
    if missing:
        raise DataError(
            f"the grid table lacks column(s) {missing!r}",
            "rerun the grid rule with the current config key vitals.names",
        )
    table = _split_rows(grid.select(needed), manifest, split)
    table = table.sort_by([("icustay_id", "ascending"), ("step", "ascending")])

    stay_of_row = table.column("icustay_id").to_numpy().astype(np.int64)
    steps = table.column("step").to_numpy().astype(np.int64)
    n_rows = stay_of_row.size
    firsts = np.flatnonzero(np.r_[True, stay_of_row[1:] != stay_of_row[:-1]]) if n_rows else []
    offsets = np.append(np.asarray(firsts, dtype=np.int64), n_rows)
    lengths = np.diff(offsets)
    expected_steps = np.arange(n_rows, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    if not np.array_equal(steps, expected_steps):
        raise DataError(
            "the grid table's steps are not 0, 1, 2, ... within each ICU stay",
            "rerun the grid rule; the grid file was not written by vitalfm.data.grid",
        )

    # Candidate windows: starts 0, stride, 2 * stride, ... while the window fits in the stay.
    # (n - L) // stride + 1 is <= 0 exactly when the stay is shorter than one window.
    per_stay = np.maximum((lengths - length) // stride_steps + 1, 0)
    cand_stay = np.repeat(np.arange(lengths.size, dtype=np.int64), per_stay)
    first_cand = np.repeat(np.cumsum(per_stay) - per_stay, per_stay)
    within = np.arange(cand_stay.size, dtype=np.int64) - first_cand
    cand_start = offsets[:-1][cand_stay] + within * stride_steps

    n_vitals = len(vital_names)
    values = np.empty((n_rows, n_vitals), dtype=np.float32)
    observed = np.empty((n_rows, n_vitals), dtype=bool)
    for j, name in enumerate(vital_names):
        values[:, j] = table.column(name).to_numpy().astype(np.float32, copy=False)
        observed[:, j] = table.column(f"{name}_observed").to_numpy()
    # Only readings count: a grid written by another tool may carry values in empty bins.
    values[~observed] = np.nan
    cumulative = np.zeros((n_rows + 1, n_vitals), dtype=np.int64)
    np.cumsum(observed, axis=0, out=cumulative[1:])
    h_start = cand_start + context_steps
    counts = cumulative[h_start + horizon_steps] - cumulative[h_start]
    good = (counts >= min_horizon_observed).any(axis=1)
    if not good.any():
        raise DataError(
            f"split {split!r} has no forecasting window: {lengths.size} ICU stay(s), "
            f"{cand_stay.size} window(s) of {context_hours:g} h + {horizon_hours:g} h fit, none "
            f"with >= {min_horizon_observed} observed horizon point(s)",
            "shorten config keys windows.context_hours / windows.horizon_hours, or use a "
            "bigger cohort",
        )
    win_stay, win_start, counts = cand_stay[good], cand_start[good], counts[good]

    # Keep only the rows of stays that have a window, and re-base the row numbers.
    keep_stay = np.bincount(win_stay, minlength=lengths.size) > 0
    keep_row = np.repeat(keep_stay, lengths)
    kept_lengths = lengths[keep_stay]
    new_offsets = np.zeros(kept_lengths.size + 1, dtype=np.int64)
    np.cumsum(kept_lengths, out=new_offsets[1:])
    new_stay = np.cumsum(keep_stay) - 1
    win_start = win_start - offsets[:-1][win_stay] + new_offsets[:-1][new_stay[win_stay]]
    win_stay = new_stay[win_stay]

    subject_of_row = table.column("subject_id").to_numpy().astype(np.int64)
    time_of_row = table.column("time").cast(pa.timestamp("us")).to_numpy()
    kept_firsts = offsets[:-1][keep_stay]
    return WindowSet(
        split=split,
        vital_names=vital_names,
        frequency_minutes=int(frequency_minutes),
        context_steps=context_steps,
        horizon_steps=horizon_steps,
        stride_steps=stride_steps,
        min_horizon_observed=int(min_horizon_observed),
        values=np.ascontiguousarray(values[keep_row]),
        observed=np.ascontiguousarray(observed[keep_row]),
        stay_ids=stay_of_row[kept_firsts].astype(np.int32),
        subject_ids=subject_of_row[kept_firsts].astype(np.int32),
        stay_offsets=new_offsets,
        stay_start_times=time_of_row[kept_firsts].astype("datetime64[us]").view(np.int64),
        window_start_rows=win_start.astype(np.int64),
        window_stay_index=win_stay.astype(np.int32),
        horizon_observed=counts.astype(np.int16),
        fill_method=fill_method,
        fill_max_gap_steps=fill_gaps,
    )
