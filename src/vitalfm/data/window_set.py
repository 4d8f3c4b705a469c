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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from vitalfm.data.window_fill import FILL_METHODS, causal_fill
from vitalfm.errors import DataError
from vitalfm.io import atomic_path, write_parquet

FORMAT = "vitalfm.windows"
#: 2: observations only, filling per window (version 1 stored grid-filled values).
FORMAT_VERSION = 2
_US_PER_MINUTE = 60_000_000
_RERUN = "delete it and rerun the windows rule"


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
