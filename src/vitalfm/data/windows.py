"""Forecasting windows, indexed rather than materialised.

For one split we keep the grid arrays of its ICU stays concatenated (``values``, ``observed``:
``[T, V]``, NaN where a bin has no reading) and describe each window by its first row. A window
is ``context_steps + horizon_steps`` consecutive bins of one stay; windows start at step 0 and
every ``stride_steps`` after while they fit. Gathers such as ``values[start[:, None] + arange(L)]``
give ``[N, L]`` blocks without a Python loop, and the arrays are stored in one uncompressed
``.npz`` that loads in one read.

No look-ahead: what a model sees of a window (:meth:`WindowSet.context`) is computed from the
readings inside that window's context only. Gaps stay missing by default (each family handles
them as its library does); ``windows.fill`` may fill them causally, per window
(:func:`causal_fill`), never from a reading at or after the forecast origin.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vitalfm.data.grid import grid_frequency_minutes
from vitalfm.errors import ConfigError, DataError
from vitalfm.io import atomic_path, write_parquet

FORMAT = "vitalfm.windows"
#: 2: observations only, filling per window (version 1 stored grid-filled values).
FORMAT_VERSION = 2
FILL_METHODS: tuple[str, ...] = ("none", "ffill", "linear")
_US_PER_MINUTE = 60_000_000
_RERUN = "delete it and rerun the windows rule"


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


@dataclass(eq=False)
class WindowSet:
    """The windows of one split; see the module docstring for the layout."""

    split: str
    vital_names: tuple[str, ...]
    frequency_minutes: int
    context_steps: int
    horizon_steps: int
    stride_steps: int
    min_horizon_observed: int
    values: np.ndarray  # float32 [T, V]: the bin's mean reading, NaN where it has none
    observed: np.ndarray  # bool [T, V]
    stay_ids: np.ndarray  # int32 [S]
    subject_ids: np.ndarray  # int32 [S]
    stay_offsets: np.ndarray  # int64 [S + 1]
    stay_start_times: np.ndarray  # int64 [S], epoch microseconds of step 0
    window_start_rows: np.ndarray  # int64 [N]
    window_stay_index: np.ndarray  # int32 [N]
    horizon_observed: np.ndarray  # int16 [N, V], observed horizon points
    fill_method: str = "none"  # how contexts are filled, causally (windows.fill.method)
    fill_max_gap_steps: tuple[int, ...] = ()  # per vital; () = no filling

    ARRAYS: ClassVar[tuple[str, ...]] = (
        "values",
        "observed",
        "stay_ids",
        "subject_ids",
        "stay_offsets",
        "stay_start_times",
        "window_start_rows",
        "window_stay_index",
        "horizon_observed",
    )

    def __len__(self) -> int:
        return int(self.window_start_rows.shape[0])

    @property
    def window_steps(self) -> int:
        return self.context_steps + self.horizon_steps

    def vital_index(self, vital: str) -> int:
        try:
            return self.vital_names.index(vital)
        except ValueError:
            raise KeyError(f"vital {vital!r} not in this window set {self.vital_names}") from None

    def _gather(
        self, array: np.ndarray, vital: str, offset: int, length: int, rows: np.ndarray | None
    ) -> np.ndarray:
        starts = self.window_start_rows if rows is None else self.window_start_rows[rows]
        index = starts[:, None] + (offset + np.arange(length, dtype=np.int64))
        return array[index, self.vital_index(vital)]

    def context(self, vital: str, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, C]: what a model sees of each context (NaN where it sees no value).

        The readings of the context, filled causally per window as ``windows.fill`` asks
        (:func:`causal_fill`; nothing by default). ``rows`` selects windows by index (e.g.
        from :meth:`windows_for`); default all.
        """
        raw = self.context_readings(vital, rows)
        gap = self.fill_max_gap_steps[self.vital_index(vital)] if self.fill_max_gap_steps else 0
        if self.fill_method == "none" or gap < 1:
            return raw
        return causal_fill(raw, self.fill_method, gap)

    def context_readings(self, vital: str, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, C]: the context's readings only (bin means), NaN where a bin has none."""
        return self._gather(self.values, vital, 0, self.context_steps, rows)

    def horizon(self, vital: str, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, H]: horizon readings (bin means), NaN where a bin has none."""
        return self._gather(self.values, vital, self.context_steps, self.horizon_steps, rows)

    def context_observed(self, vital: str, rows: np.ndarray | None = None) -> np.ndarray:
        """bool [N, C]: context bins with a real reading."""
        return self._gather(self.observed, vital, 0, self.context_steps, rows)

    def horizon_observed_mask(self, vital: str, rows: np.ndarray | None = None) -> np.ndarray:
        """bool [N, H]: horizon bins to score (those with a reading)."""
        c, h = self.context_steps, self.horizon_steps
        return self._gather(self.observed, vital, c, h, rows)

    def origin_seconds(self) -> np.ndarray:
        """int64 [N]: each window's forecast origin (start of its first horizon bin), epoch s."""
        return self.window_start_seconds() + self.context_steps * self.frequency_minutes * 60

    def windows_for(self, vital: str) -> np.ndarray:
        """int64 indices of windows with >= min_horizon_observed observed horizon points."""
        counts = self.horizon_observed[:, self.vital_index(vital)]
        return np.flatnonzero(counts >= self.min_horizon_observed).astype(np.int64)

    def window_icustay_ids(self) -> np.ndarray:
        return self.stay_ids[self.window_stay_index]

    def window_subject_ids(self) -> np.ndarray:
        return self.subject_ids[self.window_stay_index]

    def window_start_steps(self) -> np.ndarray:
        """int64 [N]: step of each window's first bin within its stay."""
        return self.window_start_rows - self.stay_offsets[:-1][self.window_stay_index]

    def window_start_seconds(self) -> np.ndarray:
        """int64 [N]: when each window's first bin starts, in seconds since the Unix epoch."""
        stay_start_s = self.stay_start_times[self.window_stay_index] // 1_000_000
        return stay_start_s + self.window_start_steps() * self.frequency_minutes * 60

    def index_frame(self) -> pd.DataFrame:
        """One row per window: ids, where it starts, and observed horizon points per vital."""
        step_us = self.frequency_minutes * _US_PER_MINUTE
        start_step = self.window_start_steps()
        context_start = self.stay_start_times[self.window_stay_index] + start_step * step_us
        forecast_start = context_start + self.context_steps * step_us
        frame = pd.DataFrame(
            {
                "window_id": np.arange(len(self), dtype=np.int64),
                "subject_id": self.window_subject_ids(),
                "icustay_id": self.window_icustay_ids(),
                "start_row": self.window_start_rows,
                "start_step": start_step.astype(np.int32),
                "context_start": context_start.view("datetime64[us]"),
                "forecast_start": forecast_start.view("datetime64[us]"),
            }
        )
        for j, name in enumerate(self.vital_names):
            frame[f"{name}_horizon_observed"] = self.horizon_observed[:, j]
        return frame

    # --- persistence ------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "split": self.split,
            "vital_names": list(self.vital_names),
            "frequency_minutes": self.frequency_minutes,
            "context_steps": self.context_steps,
            "horizon_steps": self.horizon_steps,
            "stride_steps": self.stride_steps,
            "min_horizon_observed": self.min_horizon_observed,
            "fill_method": self.fill_method,
            "fill_max_gap_steps": list(self.fill_max_gap_steps),
        }

    def save(
        self, npz_path: str | os.PathLike[str], index_path: str | os.PathLike[str] | None = None
    ) -> None:
        """Write the arrays to an uncompressed ``.npz`` and, if given, the index to parquet.

        Both writes are atomic. The ``.npz`` is written through a file handle so that numpy
        does not append ``.npz`` to the temporary name.
        """
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        with atomic_path(npz_path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, metadata=np.array(json.dumps(self.metadata())), **arrays)
        if index_path is not None:
            table = pa.Table.from_pandas(self.index_frame(), preserve_index=False)
            write_parquet(table, index_path)

    @classmethod
    def load(cls, npz_path: str | os.PathLike[str]) -> WindowSet:
        """Read a window set written by :meth:`save`; DataError if missing, corrupt or stale."""
        path = Path(npz_path)
        if not path.is_file():
            raise DataError(f"window file {path} does not exist", "run the windows rule first")
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["metadata"][()]))
                arrays = {name: npz[name] for name in cls.ARRAYS}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(
                f"window file {path} is corrupt or incomplete ({type(err).__name__}: {err})",
                _RERUN,
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{path} is not a vitalfm window file", _RERUN)
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"window file {path} has format version {meta.get('format_version')!r}; this "
                f"vitalfm reads version {FORMAT_VERSION}",
                _RERUN,
            )
        try:
            scalars = {
                "split": str(meta["split"]),
                "vital_names": tuple(meta["vital_names"]),
                "frequency_minutes": int(meta["frequency_minutes"]),
                "context_steps": int(meta["context_steps"]),
                "horizon_steps": int(meta["horizon_steps"]),
                "stride_steps": int(meta["stride_steps"]),
                "min_horizon_observed": int(meta["min_horizon_observed"]),
                "fill_method": str(meta["fill_method"]),
                "fill_max_gap_steps": tuple(int(g) for g in meta["fill_max_gap_steps"]),
            }
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"window file {path} has incomplete metadata ({err})", _RERUN) from None
        windows = cls(**scalars, **arrays)
        problem = windows.check()
        if problem:
            raise DataError(f"window file {path} is inconsistent: {problem}", _RERUN)
        return windows

    def check(self) -> str | None:
        """Describe the first structural inconsistency, or None when the arrays fit together."""
        n_rows, n_vitals = self.values.shape[0], len(self.vital_names)
        if self.fill_method not in FILL_METHODS:
            return f"unknown fill method {self.fill_method!r}"
        if self.fill_max_gap_steps and len(self.fill_max_gap_steps) != n_vitals:
            return "fill_max_gap_steps does not give one gap per vital"
        for name in ("values", "observed"):
            if getattr(self, name).shape != (n_rows, n_vitals):
                return f"{name} has shape {getattr(self, name).shape}, not {(n_rows, n_vitals)}"
        n_stays = self.stay_ids.shape[0]
        if self.subject_ids.shape != (n_stays,) or self.stay_start_times.shape != (n_stays,):
            return "per-stay arrays differ in length"
        offsets = self.stay_offsets
        if offsets.shape != (n_stays + 1,) or offsets[0] != 0 or offsets[-1] != n_rows:
            return "stay_offsets do not cover the rows"
        n = len(self)
        if self.window_stay_index.shape != (n,) or self.horizon_observed.shape != (n, n_vitals):
            return "per-window arrays differ in length"
        if n and (
            self.window_stay_index.min() < 0
            or self.window_stay_index.max() >= n_stays
            or np.any(
                self.window_start_rows + self.window_steps > offsets[1:][self.window_stay_index]
            )
            or np.any(self.window_start_rows < offsets[:-1][self.window_stay_index])
        ):
            return "a window reaches outside its ICU stay"
        return None


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
