"""Rule ``events``: one replicate's forecasts of a split -> each (window, event)'s truth, onset,
context status and forecast probability (:mod:`vitalfm.evaluation.events` defines them).

The table has one row per (window, event) for every window the replicate forecast the event's
vital on: split-independent columns ``window_id``, ``subject_id``, ``event``, ``vital``,
``truth``, ``onset_step``, ``ongoing``, ``probability``, ``forecast_onset_step``,
``lead_minutes``, ``n_observed`` and ``source`` ("paths" or "quantiles").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from vitalfm.data.windows import WindowSet
from vitalfm.errors import DataError
from vitalfm.evaluation.events import (
    Event,
    lead_minutes,
    observed_truth,
    path_forecast,
    quantile_forecast,
)
from vitalfm.evaluation.quantiles import quantile_column

EVENT_COLUMNS = (
    "window_id",
    "subject_id",
    "event",
    "vital",
    "truth",
    "onset_step",
    "ongoing",
    "probability",
    "forecast_onset_step",
    "lead_minutes",
    "n_observed",
    "source",
)
#: Columns of a sample-path file (rule forecast): one row per observed horizon point.
PATH_COLUMNS = ("window_id", "vital", "step", "samples")


def _levels(frame: pd.DataFrame) -> list[tuple[float, str]]:
    """The quantile levels a forecast table holds on every row (a model without the outer
    levels writes NaN there; such a level is left out), increasing."""
    out = []
    for name in frame.columns:
        if name.startswith("q") and name != "q":
            try:
                level = float(name[1:])
            except ValueError:
                continue
            if quantile_column(level) == name and frame[name].notna().all():
                out.append((level, name))
    return sorted(out)


def paths_by_vital(paths: pa.Table | None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{vital: (window_id [R], step [R], samples [R, S])} of a sample-path table (empty when
    it has no rows: the model has no sample paths)."""
    if paths is None or paths.num_rows == 0:
        return {}
    missing = [c for c in PATH_COLUMNS if c not in paths.column_names]
    if missing:
        raise DataError(
            f"the sample-path file lacks column(s) {', '.join(missing)}",
            "remake it with the forecast rule of this version",
        )
    column = paths.column("samples").combine_chunks()
    size = column.type.list_size
    samples = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    vitals = np.asarray(paths.column("vital").to_pylist(), dtype=object)
    window = paths.column("window_id").to_numpy().astype(np.int64)
    step = paths.column("step").to_numpy().astype(np.int64)
    return {
        str(v): (window[vitals == v], step[vitals == v], samples[vitals == v])
        for v in np.unique(vitals)
    }


def window_events(
    forecasts: pd.DataFrame,
    windows: WindowSet,
    events: Sequence[Event],
    alarm: float,
    paths: pa.Table | None = None,
    replicate: str = "",
) -> pd.DataFrame:
    """Each (window, event)'s facts for one replicate's forecast table of one split."""
    horizon = windows.horizon_steps
    by_vital = paths_by_vital(paths)
    levels = _levels(forecasts)
    parts = []
    for event in events:
        rows = forecasts[forecasts["vital"].astype(str) == event.vital]
        if rows.empty:
            continue
        ids = np.unique(rows["window_id"].to_numpy(np.int64))
        pos = np.searchsorted(ids, rows["window_id"].to_numpy(np.int64))
        step = rows["step"].to_numpy(np.int64) - 1
        truth = np.full((len(ids), horizon), np.nan)
        observed = np.zeros((len(ids), horizon), dtype=bool)
        truth[pos, step] = rows["y_true"].to_numpy(np.float64)
        observed[pos, step] = rows["observed"].to_numpy(bool)
        occurs, onset = observed_truth(event, truth, observed)
        context = windows.context_readings(event.vital, ids)
        seen = windows.context_observed(event.vital, ids)
        ongoing, _ = observed_truth(event, context, seen)
        if event.vital in by_vital:
            p_window, p_step, samples = by_vital[event.vital]
            cube = np.full((len(ids), horizon, samples.shape[1]), np.nan, dtype=np.float32)
            where = np.searchsorted(ids, p_window)
            known = (where < len(ids)) & (ids[np.minimum(where, len(ids) - 1)] == p_window)
            cube[where[known], p_step[known] - 1] = samples[known]
            covered = np.zeros_like(observed)
            covered[where[known], p_step[known] - 1] = True
            if (observed & ~covered).any():
                raise DataError(
                    f"{replicate}: the sample-path file lacks paths for observed points of "
                    f"{event.vital}",
                    "remake the forecasts and their paths together (rule forecast)",
                )
            probability, forecast_onset = path_forecast(event, cube, observed, alarm)
            source = "paths"
        else:
            cube = np.zeros((len(ids), horizon, len(levels)))
            for k, (_, name) in enumerate(levels):
                cube[pos, step, k] = rows[name].to_numpy(np.float64)
            values = [level for level, _ in levels]
            probability, forecast_onset = quantile_forecast(event, cube, values, observed, alarm)
            source = "quantiles"
        parts.append(
            pd.DataFrame(
                {
                    "window_id": ids,
                    "subject_id": windows.window_subject_ids()[ids].astype(np.int64),
                    "event": event.name,
                    "vital": event.vital,
                    "truth": occurs,
                    "onset_step": onset.astype(np.int16),
                    "ongoing": ongoing,
                    "probability": probability.astype(np.float64),
                    "forecast_onset_step": forecast_onset.astype(np.int16),
                    # counted on new-onset windows only (events.py)
                    "lead_minutes": np.where(
                        ongoing,
                        np.nan,
                        lead_minutes(onset, forecast_onset, int(windows.frequency_minutes)),
                    ),
                    "n_observed": observed.sum(axis=1).astype(np.int16),
                    "source": source,
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: [] for c in EVENT_COLUMNS})
    return pd.concat(parts, ignore_index=True)[list(EVENT_COLUMNS)]
