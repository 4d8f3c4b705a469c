"""Resample long-format vital-sign readings onto a regular time grid per ICU stay.

Each stay gets bins ``[t, t + freq)`` from its ``intime`` floored to the grid frequency up to
the bin containing its ``outtime``. A bin's value is the mean of the readings in it; a bin
without a reading stays empty (NaN, ``<vital>_observed`` false). Nothing is filled here: a gap
filled over a whole stay would carry readings from after a forecast origin into the context
before it. Filling, if asked for, is done per window from that window's context alone
(:mod:`vitalfm.data.windows`). Everything is vectorised over all stays at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vitalfm.errors import ConfigError, DataError
from vitalfm.io import write_parquet
from vitalfm.mimic import VITAL_NAMES

COHORT_COLUMNS: tuple[str, ...] = ("subject_id", "icustay_id", "intime", "outtime")
VITALS_COLUMNS: tuple[str, ...] = ("icustay_id", "charttime", "vital", "value")
# Schema metadata keys (bytes in parquet); windows.py checks the frequency against its config.
META_FREQUENCY = "vitalfm.grid.frequency_minutes"
META_VITALS = "vitalfm.grid.vital_names"
META_FORMAT = "vitalfm.grid.format_version"
#: 2: observations only (format 1 grids carried stay-wide filled values and ``_filled`` flags).
FORMAT_VERSION = 2

_US_PER_MINUTE = 60_000_000
_NAT = np.iinfo(np.int64).min

SUMMARY_COLUMNS: tuple[str, ...] = (
    "vital",
    "readings_input",
    "readings_unknown_stay",
    "readings_without_value",
    "readings_outside_stay",
    "readings_used",
    "bins_total",
    "bins_observed",
    "bins_missing",
)


def grid_schema(vital_names: Sequence[str]) -> pa.Schema:
    """The grid table's schema: stay keys, then value/observed per vital, in order."""
    fields = [
        pa.field("icustay_id", pa.int32(), nullable=False),
        pa.field("subject_id", pa.int32(), nullable=False),
        pa.field("time", pa.timestamp("us"), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
    ]
    for name in vital_names:
        fields += [
            pa.field(name, pa.float32()),
            pa.field(f"{name}_observed", pa.bool_(), nullable=False),
        ]
    return pa.schema(fields)


@dataclass(frozen=True)
class GridResult:
    """The grid table plus what happened on the way (one summary row per vital)."""

    table: pa.Table
    summary: pd.DataFrame
    n_stays_in_cohort: int
    n_stays_kept: int
    n_stays_without_readings: int
    n_stays_invalid_times: int

    def report(self) -> dict[str, Any]:
        """JSON-ready summary for the workflow's logs."""
        return {
            "n_stays_in_cohort": self.n_stays_in_cohort,
            "n_stays_kept": self.n_stays_kept,
            "n_stays_without_readings": self.n_stays_without_readings,
            "n_stays_invalid_times": self.n_stays_invalid_times,
            "n_rows": self.table.num_rows,
            "vitals": json.loads(self.summary.to_json(orient="records")),
        }


def _check_options(vital_names: Sequence[str], frequency_minutes: int) -> None:
    if not vital_names:
        raise ConfigError("config key vitals.names is empty", "list at least one vital")
    if len(set(vital_names)) != len(vital_names):
        raise ConfigError(
            f"config key vitals.names = {list(vital_names)!r} repeats a vital",
            "list each vital once",
        )
    unknown = [v for v in vital_names if v not in VITAL_NAMES]
    if unknown:
        raise ConfigError(
            f"config key vitals.names has unknown vital(s) {unknown!r}",
            "use only " + ", ".join(VITAL_NAMES),
        )
    if int(frequency_minutes) != frequency_minutes or frequency_minutes <= 0:
        raise ConfigError(
            f"config key grid.frequency_minutes = {frequency_minutes!r} is invalid",
            "set it to a positive whole number of minutes (e.g. 15)",
        )


def _to_frame(data: pd.DataFrame | pa.Table, columns: Sequence[str], what: str) -> pd.DataFrame:
    names = data.column_names if isinstance(data, pa.Table) else list(data.columns)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(
            f"the {what} table lacks column(s) {missing!r} (it has {names!r})",
            f"rerun the rule that writes the {what} file, or pass the {what} table, not another",
        )
    if isinstance(data, pa.Table):
        return data.select(list(columns)).to_pandas()
    return data.loc[:, list(columns)]


def _epoch_us(values: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch; NaT becomes int64 min."""
    series = pd.to_datetime(values)
    if series.dt.tz is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.to_numpy(dtype="datetime64[us]").view(np.int64)


def _vital_codes(values: pd.Series, vital_names: Sequence[str]) -> np.ndarray:
    """Position of each reading's vital in ``vital_names``; -1 for other vitals or nulls."""
    cat = values.astype("category") if not isinstance(values.dtype, pd.CategoricalDtype) else values
    index = {name: i for i, name in enumerate(vital_names)}
    # The trailing -1 makes the null code (-1) map to -1 too.
    lookup = np.array([index.get(str(c), -1) for c in cat.cat.categories] + [-1], dtype=np.int64)
    return lookup[cat.cat.codes.to_numpy()]


def resample_stays(
    vitals: pd.DataFrame | pa.Table,
    cohort: pd.DataFrame | pa.Table,
    *,
    vital_names: Sequence[str],
    frequency_minutes: int,
) -> GridResult:
    """Resample long-format readings onto a regular grid per ICU stay.

    ``vitals`` needs columns icustay_id, charttime, vital, value; ``cohort`` needs subject_id,
    icustay_id, intime, outtime. Readings of other vitals are ignored; readings of stays not in
    the cohort, without a value, or outside ``[intime, outtime]`` are dropped and counted.
    Stays without any kept reading are dropped and counted. Raises :class:`DataError` when a
    studied vital has no usable reading at all.
    """
    vital_names = tuple(vital_names)
    _check_options(vital_names, frequency_minutes)
    n_vitals = len(vital_names)
    freq_us = int(frequency_minutes) * _US_PER_MINUTE

    # --- stays ------------------------------------------------------------------------------
    stays = _to_frame(cohort, COHORT_COLUMNS, "cohort")
    if stays["icustay_id"].isna().any() or stays["subject_id"].isna().any():
        raise DataError(
            "the cohort table has rows without icustay_id or subject_id",
            "rerun the cohort rule; every cohort row must name its ICU stay and patient",
        )
    stays = stays.sort_values("icustay_id", kind="stable")
    stay_ids = stays["icustay_id"].to_numpy(dtype=np.int64)
    dup = stay_ids[1:][stay_ids[1:] == stay_ids[:-1]]
    if dup.size:
        raise DataError(
            f"the cohort table lists ICU stay {int(dup[0])} more than once "
            f"({np.unique(dup).size} repeated stay(s))",
            "rerun the cohort rule; it must write one row per ICU stay",
        )
    subject_ids = stays["subject_id"].to_numpy(dtype=np.int64)
    intime = _epoch_us(stays["intime"])
    outtime = _epoch_us(stays["outtime"])
    valid_times = (intime != _NAT) & (outtime != _NAT) & (outtime >= intime)
    intime = np.where(valid_times, intime, 0)
    outtime = np.where(valid_times, outtime, 0)
    grid_start = np.floor_divide(intime, freq_us) * freq_us
    n_bins = np.where(valid_times, (outtime - grid_start) // freq_us + 1, 0)
    n_stays = stay_ids.size

    # --- readings ---------------------------------------------------------------------------
    readings = _to_frame(vitals, VITALS_COLUMNS, "vitals")
    code = _vital_codes(readings["vital"], vital_names)
    wanted = code >= 0
    rid = readings["icustay_id"].to_numpy(dtype=np.float64, na_value=np.nan)[wanted]
    code = code[wanted]
    charttime = _epoch_us(readings["charttime"])[wanted]
    value = readings["value"].to_numpy(dtype=np.float64, na_value=np.nan)[wanted]

    rid_ok = ~np.isnan(rid)
    rid_int = np.where(rid_ok, rid, -1).astype(np.int64)
    pos = np.clip(np.searchsorted(stay_ids, rid_int), 0, max(n_stays - 1, 0))
    known = rid_ok & (n_stays > 0)
    if n_stays:
        known &= stay_ids[pos] == rid_int
    has_value = ~np.isnan(value)
    inside = (
        (
            known
            & valid_times[pos]
            & (charttime != _NAT)
            & (charttime >= intime[pos])
            & (charttime <= outtime[pos])
        )
        if n_stays
        else np.zeros(code.size, dtype=bool)
    )
    used = known & has_value & inside

    def per_vital(mask: np.ndarray) -> np.ndarray:
        return np.bincount(code[mask], minlength=n_vitals)

    counts = {
        "readings_input": per_vital(np.ones(code.size, dtype=bool)),
        "readings_unknown_stay": per_vital(~known),
        "readings_without_value": per_vital(known & ~has_value),
        "readings_outside_stay": per_vital(known & has_value & ~inside),
        "readings_used": per_vital(used),
    }
    empty = [v for v, n in zip(vital_names, counts["readings_used"], strict=True) if n == 0]
    if empty:
        detail = ", ".join(
            f"{v} ({counts['readings_input'][vital_names.index(v)]} row(s) in the input)"
            for v in empty
        )
        raise DataError(
            f"no usable reading inside any cohort ICU stay for vital(s): {detail}",
            "remove them from config key vitals.names, or check the chartevents itemids "
            "in vitalfm.mimic.CHART_ITEMS and the extracted vitals file",
        )

    # --- bins -------------------------------------------------------------------------------
    pos, code, charttime, value = pos[used], code[used], charttime[used], value[used]
    kept = np.bincount(pos, minlength=n_stays) > 0
    n_kept = int(kept.sum())
    kept_bins = n_bins[kept]
    offsets = np.zeros(n_kept + 1, dtype=np.int64)
    np.cumsum(kept_bins, out=offsets[1:])
    n_rows = int(offsets[-1])
    new_index = np.cumsum(kept) - 1
    row = offsets[new_index[pos]] + (charttime - grid_start[pos]) // freq_us
    flat = row * n_vitals + code
    sums = np.bincount(flat, weights=value, minlength=n_rows * n_vitals).reshape(n_rows, -1)
    hits = np.bincount(flat, minlength=n_rows * n_vitals).reshape(n_rows, -1)
    observed = hits > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(observed, sums / np.maximum(hits, 1), np.nan)

    row_stay = np.repeat(np.arange(n_kept, dtype=np.int64), kept_bins)
    step = np.arange(n_rows, dtype=np.int64) - offsets[:-1][row_stay]
    time_us = grid_start[kept][row_stay] + step * freq_us

    schema = grid_schema(vital_names)
    columns: list[pa.Array] = [
        pa.array(stay_ids[kept][row_stay].astype(np.int32)),
        pa.array(subject_ids[kept][row_stay].astype(np.int32)),
        pa.array(time_us.view("datetime64[us]")),
        pa.array(step.astype(np.int32)),
    ]
    for j in range(n_vitals):
        columns += [
            pa.array(means[:, j].astype(np.float32)),  # missing stays NaN, not null
            pa.array(observed[:, j]),
        ]
    table = pa.Table.from_arrays(columns, schema=schema).replace_schema_metadata(
        {
            META_FREQUENCY: str(int(frequency_minutes)),
            META_VITALS: json.dumps(list(vital_names)),
            META_FORMAT: str(FORMAT_VERSION),
        }
    )

    bins_observed = observed.sum(axis=0)
    summary = pd.DataFrame({"vital": list(vital_names), **counts})
    summary["bins_total"] = n_rows
    summary["bins_observed"] = bins_observed
    summary["bins_missing"] = n_rows - bins_observed
    summary = summary.loc[:, list(SUMMARY_COLUMNS)]
    return GridResult(
        table=table,
        summary=summary,
        n_stays_in_cohort=n_stays,
        n_stays_kept=n_kept,
        n_stays_without_readings=int((valid_times & ~kept).sum()),
        n_stays_invalid_times=int((~valid_times).sum()),
    )


def write_grid(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write the grid table to parquet atomically."""
    write_parquet(table, path)


def read_grid(path: str | os.PathLike[str], vital_names: Sequence[str] | None = None) -> pa.Table:
    """Read a grid parquet file, checking that it has the columns of ``vital_names``."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"grid file {path} does not exist", "run the grid rule first") from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(
            f"grid file {path} cannot be read ({err})", "delete it and rerun the grid rule"
        ) from None
    version = (table.schema.metadata or {}).get(META_FORMAT.encode())
    if version is None or int(version) != FORMAT_VERSION:
        raise DataError(
            f"grid file {path} was written by an older vitalfm (format "
            f"{version.decode() if version else 1}, which filled gaps over whole stays)",
            "delete it and rerun the grid rule",
        )
    names = vital_names if vital_names is not None else grid_vital_names(table)
    expected = grid_schema(names)
    missing = [f.name for f in expected if f.name not in table.column_names]
    if missing:
        raise DataError(
            f"grid file {path} lacks column(s) {missing!r}",
            "rerun the grid rule with the current config key vitals.names",
        )
    return table


def grid_vital_names(table: pa.Table) -> tuple[str, ...]:
    """The vitals of a grid table, from its metadata or else from its ``*_observed`` columns."""
    meta = table.schema.metadata or {}
    raw = meta.get(META_VITALS.encode())
    if raw is not None:
        return tuple(json.loads(raw))
    return tuple(
        name[: -len("_observed")] for name in table.column_names if name.endswith("_observed")
    )


def grid_frequency_minutes(table: pa.Table) -> int | None:
    """The grid step recorded in the table's metadata, or None when it carries none."""
    raw = (table.schema.metadata or {}).get(META_FREQUENCY.encode())
    return int(raw) if raw is not None else None
