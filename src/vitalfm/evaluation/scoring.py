"""Rule ``score``: one run's forecasts -> per-patient sums, from which every metric follows.

A score table has one row per (subject_id, scale, vital, step) with the sums of
:data:`~vitalfm.evaluation.metric_registry.STATISTICS` over that patient's observed target
points: each registered metric's per-point sums, and its per-series sums for a series metric
(DTW). ``step`` 0 is the whole horizon and ``vital`` "all" every vital, so each cell of the
metrics table is a plain sum over patients (``n_windows`` counts distinct windows, which is why
the totals are stored rather than summed later). Series sums live only in step-0 rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vitalfm.config import minmax_ranges
from vitalfm.data.windows import WindowSet
from vitalfm.errors import DataError
from vitalfm.evaluation.metric_registry import (
    COUNT_SUMS,
    POINT_SUMS,
    REGISTRY,
    STATISTICS,
)
from vitalfm.evaluation.metrics import SCALES, mase_scale, point_terms, to_minmax
from vitalfm.evaluation.quantiles import CRPS_LEVELS, FORECAST_LEVELS, quantile_column

log = logging.getLogger(__name__)

KEYS = ("subject_id", "scale", "vital", "step")
ALL = "all"
#: Columns every forecast table must have; the other forecast levels only add to a metric
#: (without the 95% interval's bounds its coverage is NaN; the calibration error is taken over
#: the levels present).
REQUIRED_COLUMNS = (
    "window_id",
    "subject_id",
    "vital",
    "step",
    "y_true",
    "observed",
    "median",
    *(quantile_column(level) for level in CRPS_LEVELS),
)
#: Series metrics: {metric's value sum: the sum counting its series}.
SERIES_COUNTS = {m.numerator: m.denominator for m in REGISTRY if m.series is not None}
#: The scored levels beyond the required ones, read where a forecast table has them.
OPTIONAL_SCORED = tuple(level for level in FORECAST_LEVELS if level not in CRPS_LEVELS)


def forecast_path(results_dir: str | Path, split: str, replicate_id: str) -> Path:
    """``results/forecasts/<split>/<model>/<setting>/seed-<k>.parquet``."""
    return Path(results_dir) / "forecasts" / split / f"{replicate_id}.parquet"


def score_path(results_dir: str | Path, split: str, replicate_id: str) -> Path:
    """``results/scores/<split>/<model>/<setting>/seed-<k>.parquet``."""
    return Path(results_dir) / "scores" / split / f"{replicate_id}.parquet"


def _missing(kind: str, run_id: str, path: Path, rule: str) -> DataError:
    return DataError(
        f"no {kind} for run {run_id}: {path} is missing",
        f"make it with `snakemake {path}` (rule {rule})",
    )


def read_forecasts(path: str | Path, run_id: str) -> pd.DataFrame:
    """A run's forecast table; DataError if it is missing, unreadable or lacks columns."""
    path = Path(path)
    if not path.is_file():
        raise _missing("forecasts", run_id, path, "forecast")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(
            f"forecast file {path} of run {run_id} is not a readable parquet file ({err})",
            f"delete it and remake it with `snakemake {path}` (rule forecast)",
        ) from None
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise DataError(
            f"forecast file {path} of run {run_id} lacks column(s) {', '.join(missing)} "
            f"(it has {', '.join(schema.names)})",
            "it was not written by this version's forecast rule: delete it and remake it with "
            f"`snakemake {path}` (rule forecast)",
        )
    optional = [quantile_column(level) for level in OPTIONAL_SCORED]
    columns = [*REQUIRED_COLUMNS, *(name for name in optional if name in schema.names)]
    return pq.read_table(path, columns=columns).to_pandas()


def _check_points(frame: pd.DataFrame, windows: WindowSet, run_id: str, source: str) -> None:
    fix = "remake the forecasts on the current test windows (rule forecast)"
    window_id = frame["window_id"].to_numpy(np.int64)
    if window_id.min() < 0 or window_id.max() >= len(windows):
        raise DataError(
            f"run {run_id}: {source} has window ids outside the {len(windows)} test windows",
            fix,
        )
    subjects = windows.window_subject_ids()[window_id]
    if not np.array_equal(subjects, frame["subject_id"].to_numpy(np.int64)):
        raise DataError(
            f"run {run_id}: {source} names other patients than the test windows do", fix
        )
    step = frame["step"].to_numpy(np.int64)
    if step.min() < 1 or step.max() > windows.horizon_steps:
        raise DataError(
            f"run {run_id}: {source} has horizon steps outside 1..{windows.horizon_steps}", fix
        )
    unknown = sorted(set(frame["vital"]) - set(windows.vital_names))
    if unknown:
        raise DataError(f"run {run_id}: {source} has vitals {unknown} not in the windows", fix)
    if frame.duplicated(["vital", "window_id", "step"]).any():
        raise DataError(f"run {run_id}: {source} repeats (window, vital, step) rows", fix)
    predictions = ["y_true", "median", *(quantile_column(level) for level in CRPS_LEVELS)]
    bad = ~np.isfinite(frame[predictions].to_numpy(np.float64)).all(axis=1)
    if bad.any():
        raise DataError(
            f"run {run_id}: {source} has {int(bad.sum())} observed point(s) with a missing or "
            "non-finite truth, median or 0.1-0.9 quantile",
            "check the run's model (a diverged fine-tuning gives NaN forecasts) and remake "
            "the forecasts (rule forecast)",
        )


def _aggregate(points: pd.DataFrame, series: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Sums of one scale's point terms over ``keys`` (a subset of subject_id, vital, step)."""
    groups = points.groupby(keys, observed=True, sort=False)
    out = groups[list(POINT_SUMS)].sum()
    out["n_points"] = groups.size()
    out["n_windows"] = groups["window_id"].nunique()
    for value, count in SERIES_COUNTS.items():
        if "step" in keys:
            out[value] = 0.0
            out[count] = 0
        else:  # a series metric is per series (window, vital) over the whole horizon
            by = series.groupby(keys, observed=True, sort=False)[value]
            out[value] = by.sum()
            out[count] = by.count()
    out = out.reset_index()
    if "vital" not in keys:
        out["vital"] = ALL
    if "step" not in keys:
        out["step"] = 0
    return out


def score_forecasts(
    forecasts: pd.DataFrame,
    windows: WindowSet,
    ranges: Mapping[str, tuple[float, float]],
    run_id: str,
    source: str = "the forecast table",
) -> pd.DataFrame:
    """Per-patient sums (see the module docstring) of one run's forecast table."""
    observed = forecasts["observed"].to_numpy(bool)
    if not observed.any():
        raise DataError(
            f"run {run_id} has no observed target points in {source}: nothing to score",
            "check that the test windows hold observed readings (results/windows/test.npz) "
            "and remake the forecasts (rule forecast)",
        )
    frame = forecasts.loc[observed].reset_index(drop=True)
    frame["vital"] = frame["vital"].astype(str)
    _check_points(frame, windows, run_id, source)

    vital = frame["vital"].to_numpy()
    window_id = frame["window_id"].to_numpy(np.int64)
    step = frame["step"].to_numpy(np.int64)
    y = frame["y_true"].to_numpy(np.float64)
    median = frame["median"].to_numpy(np.float64)
    levels = [*CRPS_LEVELS, *(lv for lv in OPTIONAL_SCORED if quantile_column(lv) in frame)]
    quantiles = {level: frame[quantile_column(level)].to_numpy(np.float64) for level in levels}

    scale = np.full(len(frame), np.nan)
    low = np.zeros(len(frame))
    high = np.ones(len(frame))
    series_parts = []
    horizon = windows.horizon_steps
    for name in pd.unique(vital):
        rows = np.flatnonzero(vital == name)
        wins, series = np.unique(window_id[rows], return_inverse=True)
        context = windows.context(name, wins), windows.context_observed(name, wins)
        scale[rows] = mase_scale(*context)[series]
        low[rows], high[rows] = ranges[name]
        truth = np.full((len(wins), horizon), np.nan)
        point = np.full((len(wins), horizon), np.nan)
        mask = np.zeros((len(wins), horizon), dtype=bool)
        truth[series, step[rows] - 1] = y[rows]
        point[series, step[rows] - 1] = median[rows]
        mask[series, step[rows] - 1] = True
        series_parts.append(
            pd.DataFrame(
                {
                    "subject_id": windows.window_subject_ids()[wins].astype(np.int64),
                    "vital": name,
                    **{
                        metric.numerator: metric.series(truth, point, mask)
                        for metric in REGISTRY
                        if metric.series is not None
                    },
                    "range": ranges[name][1] - ranges[name][0],
                }
            )
        )
    series_frame = pd.concat(series_parts, ignore_index=True)

    keys = pd.DataFrame(
        {"subject_id": frame["subject_id"].to_numpy(np.int64), "vital": vital, "step": step}
    )
    keys["window_id"] = window_id
    parts = []
    for scale_name in SCALES:
        if scale_name == "original":
            terms = point_terms(y, median, quantiles, scale)
            series = series_frame[["subject_id", "vital", *SERIES_COUNTS]]
        else:
            # min-max is linear per vital: quantiles stay quantiles, MASE's scale and a series
            # value (DTW: a root of summed squared differences) shrink by the range.
            scaled = {lv: to_minmax(q, low, high) for lv, q in quantiles.items()}
            terms = point_terms(
                to_minmax(y, low, high), to_minmax(median, low, high), scaled, scale / (high - low)
            )
            series = series_frame.assign(
                **{value: series_frame[value] / series_frame["range"] for value in SERIES_COUNTS}
            )
        points = keys.assign(**terms)
        for group in (["subject_id", "vital", "step"], ["subject_id", "vital"]):
            parts.append(_aggregate(points, series, group).assign(scale=scale_name))
        for group in (["subject_id", "step"], ["subject_id"]):
            parts.append(_aggregate(points, series, group).assign(scale=scale_name))
    table = pd.concat(parts, ignore_index=True)
    table = table[[*KEYS, *STATISTICS]]
    table["step"] = table["step"].astype(np.int16)
    for name in COUNT_SUMS:
        table[name] = table[name].round().astype(np.int64)
    return table.sort_values(list(KEYS), kind="stable").reset_index(drop=True)


def score_run(
    cfg: Mapping[str, Any],
    run_id: str,
    forecasts_path: str | Path,
    windows_path: str | Path,
    output_path: str | Path,
) -> pd.DataFrame:
    """Score one run's forecast file against the test windows; write and return the table."""
    from vitalfm.io import write_parquet

    started = time.perf_counter()
    forecasts = read_forecasts(forecasts_path, run_id)
    windows = WindowSet.load(windows_path)
    ranges = minmax_ranges(cfg, sorted(set(forecasts["vital"].astype(str))))
    table = score_forecasts(forecasts, windows, ranges, run_id, source=str(forecasts_path))
    write_parquet(pa.Table.from_pandas(table, preserve_index=False), output_path)
    totals = table[(table["vital"] == ALL) & (table["step"] == 0)]
    totals = totals[totals["scale"] == "original"][list(COUNT_SUMS)].sum()
    left_out = "".join(
        f"; {m.label} leaves out {totals['n_points'] - totals[m.point_count]} point(s) {m.left_out}"
        for m in REGISTRY
        if m.left_out is not None
    )
    log.info(
        "run %s: %d observed points in %d windows of %d patients%s (%.2f s)",
        run_id,
        totals["n_points"],
        totals["n_windows"],
        table["subject_id"].nunique(),
        left_out,
        time.perf_counter() - started,
    )
    return table


def read_scores(
    path: str | Path,
    run_id: str,
    results_dir: str | Path | None = None,
    split: str | None = None,
) -> pd.DataFrame:
    """A replicate's score table; a missing one names the rule to make it (and its forecasts,
    when ``results_dir`` and ``split`` say where they belong)."""
    path = Path(path)
    if not path.is_file():
        if results_dir is not None and split is not None:
            replicate = str(Path(path).relative_to(Path(results_dir) / "scores" / split))
            forecasts = forecast_path(results_dir, split, replicate.removesuffix(".parquet"))
            if not forecasts.is_file():
                raise _missing("forecasts", run_id, forecasts, "forecast")
        raise _missing("scores", run_id, path, "score")
    table = pq.read_table(path).to_pandas()
    missing = [name for name in (*KEYS, *STATISTICS) if name not in table.columns]
    if missing:
        raise DataError(
            f"score file {path} of run {run_id} lacks column(s) {', '.join(missing)}",
            f"delete it and remake it with `snakemake {path}` (rule score)",
        )
    table["vital"] = table["vital"].astype(str)
    table["scale"] = table["scale"].astype(str)
    return table
