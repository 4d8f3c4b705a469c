"""The study's metrics, each a ratio of two sums over observed target points (or series).

Per-point terms come from ``gluonts.ev.stats`` and DTW from ``dtaidistance``. Because every
metric is ``factor * numerator / denominator`` with both sums taken over points, per-patient
sums are sufficient statistics: a cell (scale, vital, step) of any run, and any patient
bootstrap resample of it, is a weighted sum of them (see :mod:`vitalfm.evaluation.scoring`).

Definitions (y = truth, m = median forecast, q_a = the forecast's a-quantile):

- mse, mae: mean of (y - m)^2 and |y - m|.
- mape: 100 * mean |y - m| / |y| over points with y != 0 (the others are left out and counted).
- crps: mean over points of the quantile approximation mean_a 2 * pinball_a(y, q_a) over the
  levels 0.1 ... 0.9; wql: the same sum divided by sum |y| (gluonts'
  ``mean_weighted_sum_quantile_loss``).
- mase: mean |y - m| / s, s = mean |x_t - x_prev| over pairs of successive observed readings
  in the window's context (filled bins skipped); series with s = 0 or fewer than 2 pairs are
  left out and counted.
- coverage_80, coverage_95: share of points with q_0.1 <= y <= q_0.9 (q_0.025, q_0.975); NaN
  for a model without those quantiles.
- dtw: mean over series (window, vital) of the DTW distance between m and y on the observed
  horizon steps (dtaidistance: sqrt of the least summed squared difference along a warping
  path); whole horizon only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gluonts.ev import stats

from vitalfm.errors import DataError

log = logging.getLogger(__name__)

METRICS = ("mse", "mae", "mape", "dtw", "crps", "wql", "mase", "coverage_80", "coverage_95")
#: Error metrics: lower is better. Coverage is better the closer it is to its nominal level.
ERROR_METRICS = ("mse", "mae", "mape", "dtw", "crps", "wql", "mase")
NOMINAL_COVERAGE = {"coverage_80": 0.8, "coverage_95": 0.95}
INTERVALS = {"coverage_80": (0.1, 0.9), "coverage_95": (0.025, 0.975)}
#: The levels every model forecasts; CRPS and wQL average the pinball loss over them.
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCALES = ("original", "minmax")

#: metric -> (numerator sum, denominator sum, factor)
RATIOS: dict[str, tuple[str, str, float]] = {
    "mse": ("se", "n_points", 1.0),
    "mae": ("ae", "n_points", 1.0),
    "mape": ("ape", "n_ape", 100.0),
    "dtw": ("dtw", "n_dtw", 1.0),
    "crps": ("crps", "n_points", 1.0),
    "wql": ("crps", "abs_y", 1.0),
    "mase": ("ase", "n_ase", 1.0),
    "coverage_80": ("cov80", "n_cov80", 1.0),
    "coverage_95": ("cov95", "n_cov95", 1.0),
}
#: The points a metric was computed on (what the tables report as n_points).
POINT_COUNTS = {
    "mape": "n_ape",
    "mase": "n_ase",
    "coverage_80": "n_cov80",
    "coverage_95": "n_cov95",
}
#: Per-point sums (each point adds its term); n_points, n_windows and the DTW sums are added
#: by the scoring.
POINT_TERMS = (
    "se",
    "ae",
    "ape",
    "n_ape",
    "crps",
    "abs_y",
    "ase",
    "n_ase",
    "cov80",
    "n_cov80",
    "cov95",
    "n_cov95",
)
STATISTICS = ("n_points", "n_windows", *POINT_TERMS, "dtw", "n_dtw")


def quantile_column(level: float) -> str:
    """The forecast table's column for a quantile level (as the forecast rule names it)."""
    return f"q{level:g}"


def to_minmax(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """(x - low) / (high - low), not clipped."""
    return (values - low) / (high - low)


def mase_scale(context: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[S] mean |x_t - x_prev| over successive observed context readings; NaN if unusable.

    ``context`` [S, C] values, ``observed`` [S, C] real readings (filled bins are skipped, so
    x_prev is the reading before x_t however many bins back). NaN where the series has fewer
    than 2 such pairs or the mean is 0 (MASE is undefined there).
    """
    positions = np.where(observed, np.arange(context.shape[1]), -1)
    previous = np.maximum.accumulate(positions, axis=1)[:, :-1]  # last reading before t
    pairs = observed[:, 1:] & (previous >= 0)
    earlier = np.take_along_axis(context, np.maximum(previous, 0), axis=1)
    diffs = np.where(pairs, np.abs(context[:, 1:] - earlier), 0.0)
    count = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = diffs.sum(axis=1) / count
    return np.where((count >= 2) & (scale > 0), scale, np.nan)


def point_terms(
    y: np.ndarray,
    median: np.ndarray,
    quantiles: Mapping[float, np.ndarray],
    scale: np.ndarray,
) -> dict[str, np.ndarray]:
    """Each point's contribution to the sums in :data:`POINT_TERMS` (float64 arrays).

    ``quantiles`` maps levels to forecasts (it must hold :data:`CRPS_LEVELS`; a missing or
    NaN interval bound leaves the point out of that coverage); ``scale`` is the MASE scale
    of each point's series (NaN: left out of MASE).
    """
    y = np.asarray(y, dtype=np.float64)
    data: dict[str, np.ndarray] = {"label": y, "median": np.asarray(median, dtype=np.float64)}
    for level, values in quantiles.items():
        data[str(level)] = np.asarray(values, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    terms: dict[str, np.ndarray] = {
        "se": stats.squared_error(data, "median"),
        "ae": stats.absolute_error(data, "median"),
        "abs_y": stats.absolute_label(data),
    }
    nonzero = y != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms["ape"] = np.where(nonzero, stats.absolute_percentage_error(data, "median"), 0.0)
        usable = np.isfinite(scale)
        data["seasonal_error"] = np.where(usable, scale, 1.0)
        terms["ase"] = np.where(usable, stats.absolute_scaled_error(data, "median"), 0.0)
    terms["n_ape"] = nonzero.astype(np.float64)
    terms["n_ase"] = usable.astype(np.float64)
    # gluonts' quantile_loss is 2 * pinball; CRPS ~ its mean over the levels.
    terms["crps"] = np.mean([stats.quantile_loss(data, level) for level in CRPS_LEVELS], axis=0)
    for metric, short in (("coverage_80", "cov80"), ("coverage_95", "cov95")):
        low_level, high_level = INTERVALS[metric]
        nan = np.full_like(y, np.nan)
        low = data.get(str(low_level), nan)
        high = data.get(str(high_level), nan)
        # gluonts' coverage is one-sided (y <= q); the interval needs both bounds.
        has = np.isfinite(low) & np.isfinite(high)
        terms[short] = (has & (low <= y) & (y <= high)).astype(np.float64)
        terms[f"n_{short}"] = has.astype(np.float64)
    return terms


def dtw_distances(truth: np.ndarray, forecast: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """[S] DTW distance per row between forecast and truth on the row's observed steps.

    Rows with no observed step give NaN. Uses dtaidistance's C implementation.
    """
    from dtaidistance import dtw

    # Exact DTW: dtaidistance 2.5.1's pruning returns inf or too large a distance for some
    # short series (e.g. length 2), so it stays off. The settings are converted once and the
    # C routine called directly: distance_fast re-parses them per call (6x slower here).
    settings = dtw.DTWSettings(use_pruning=False)
    try:
        from dtaidistance import dtw_cc

        kwargs = settings.c_kwargs()
        distance = lambda a, b: dtw_cc.distance(a, b, **kwargs)  # noqa: E731
    except ImportError:  # a build without the C extension: the library's Python code
        distance = lambda a, b: dtw.distance(a, b, use_c=False, use_pruning=False)  # noqa: E731
    out = np.full(truth.shape[0], np.nan)
    truth = np.asarray(truth, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    for i in np.flatnonzero(observed.any(axis=1)):
        keep = observed[i]
        out[i] = distance(
            np.ascontiguousarray(forecast[i, keep]), np.ascontiguousarray(truth[i, keep])
        )
    return out


def ratio(numerator: np.ndarray, denominator: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """factor * numerator / denominator, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    if factor != 1.0:
        out *= factor
    return out


def metric_value(metric: str, sums: Mapping[str, np.ndarray]) -> np.ndarray:
    """A metric from sums of :data:`STATISTICS` (arrays of any shape, e.g. [B, cells])."""
    numerator, denominator, factor = RATIOS[metric]
    return ratio(sums[numerator], sums[denominator], factor)


def is_better(metric: str, value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whether ``value`` beats ``reference``: lower error, or coverage nearer its nominal."""
    if metric in NOMINAL_COVERAGE:
        nominal = NOMINAL_COVERAGE[metric]
        return np.abs(value - nominal) < np.abs(reference - nominal)
    return value < reference


# --- the study's tables ----------------------------------------------------------------------

RUN_COLUMNS = ("run", "model", "family", "setting", "method", "kind", "rank", "baseline")
METRICS_COLUMNS = (
    *RUN_COLUMNS,
    "scale",
    "vital",
    "step",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_patients",
    "n_windows",
    "n_points",
)
PAIRED_COLUMNS = (
    "run",
    "model",
    "setting",
    "reference",
    "reference_run",
    "scale",
    "vital",
    "metric",
    "value",
    "reference_value",
    "difference",
    "ci_low",
    "ci_high",
    "fraction_better",
)
CONFIDENCE = 0.95


def is_baseline(run: Any) -> bool:
    """A from-scratch baseline (``Run.baseline``; a ``scratch`` source where that is absent)."""
    flag = getattr(run, "baseline", None)
    return bool(flag) if flag is not None else "scratch" in run.source


def run_facts(run: Any) -> dict[str, Any]:
    """The run columns of the metrics table."""
    rank = run.method.get("rank")
    return {
        "run": run.run_id,
        "model": run.model,
        "family": run.family,
        "setting": run.setting,
        "method": run.method.get("method", run.setting),
        "kind": run.method["kind"],
        "rank": float(rank) if rank is not None else np.nan,
        "baseline": is_baseline(run),
    }


@dataclass
class RunSummary:
    """One run's metric values and patient-bootstrap resamples, per cell."""

    cells: pd.DataFrame  # scale, vital, step of each cell (row c)
    values: dict[str, np.ndarray]  # metric -> [C]
    resamples: dict[str, np.ndarray]  # metric -> [B, C]
    totals: dict[str, np.ndarray]  # statistic -> [C]
    n_patients: np.ndarray  # [C]

    def step0(self) -> dict[tuple[str, str], int]:
        """{(scale, vital): cell} of the whole-horizon cells."""
        whole = self.cells[self.cells["step"] == 0]
        cells = zip(whole.index, whole["scale"], whole["vital"], strict=True)
        return {(scale, vital): int(cell) for cell, scale, vital in cells}


def _cell_order(column: pd.Series) -> pd.Series:
    """Original scale first, then min-max; vital "all" first."""
    if column.name == "scale":
        return column.map({name: i for i, name in enumerate(SCALES)})
    if column.name == "vital":
        return column.where(column != "all", "")
    return column


def summarise_run(scores: Any, patients: np.ndarray, weights: np.ndarray) -> RunSummary:
    """Totals, metrics and bootstrap resamples of one run's score table.

    ``patients`` are the sorted subject ids the ``weights`` [B, P] columns refer to.
    """
    from vitalfm.evaluation.bootstrap import resample_sums

    cells = (
        scores[["scale", "vital", "step"]]
        .drop_duplicates()
        .sort_values(["scale", "vital", "step"], key=_cell_order)
        .reset_index(drop=True)
    )
    cell_id = cells.reset_index().merge(scores, on=["scale", "vital", "step"], how="right")
    per_patient = np.zeros((len(patients), len(cells), len(STATISTICS)))
    rows = np.searchsorted(patients, cell_id["subject_id"].to_numpy())
    per_patient[rows, cell_id["index"].to_numpy()] = cell_id[list(STATISTICS)].to_numpy(float)
    totals_array = per_patient.sum(axis=0)
    resampled_array = resample_sums(weights, per_patient)
    totals = {name: totals_array[:, k] for k, name in enumerate(STATISTICS)}
    resampled = {name: resampled_array[:, :, k] for k, name in enumerate(STATISTICS)}
    n_points = per_patient[:, :, STATISTICS.index("n_points")]
    return RunSummary(
        cells=cells,
        values={m: metric_value(m, totals) for m in METRICS},
        resamples={m: metric_value(m, resampled) for m in METRICS},
        totals=totals,
        n_patients=(n_points > 0).sum(axis=0),
    )


def _metric_rows(facts: dict[str, Any], summary: RunSummary) -> pd.DataFrame:
    from vitalfm.evaluation.bootstrap import percentile_interval

    parts = []
    for metric in METRICS:
        low, high = percentile_interval(summary.resamples[metric], CONFIDENCE)
        part = summary.cells.assign(
            metric=metric,
            value=summary.values[metric],
            ci_low=low,
            ci_high=high,
            n_patients=summary.n_patients,
            n_windows=summary.totals["n_windows"],
            n_points=summary.totals[POINT_COUNTS.get(metric, "n_points")],
        )
        if metric == "dtw":  # a whole-horizon metric
            part = part[part["step"] == 0]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True).assign(**facts)
    for name in ("n_patients", "n_windows", "n_points"):
        frame[name] = frame[name].round().astype(np.int64)
    frame["step"] = frame["step"].astype(np.int64)
    return frame[list(METRICS_COLUMNS)]


def _paired_rows(
    run: Any, summary: RunSummary, reference: str, ref_run: Any, ref: RunSummary
) -> pd.DataFrame:
    """Whole-horizon differences run minus reference, on the same resampled patients."""
    from vitalfm.evaluation.bootstrap import percentile_interval

    mine_cells, ref_cells = summary.step0(), ref.step0()
    common = [key for key in mine_cells if key in ref_cells]
    mine_idx = np.array([mine_cells[key] for key in common], dtype=np.int64)
    ref_idx = np.array([ref_cells[key] for key in common], dtype=np.int64)
    parts = []
    for metric in METRICS:
        mine = summary.resamples[metric][:, mine_idx]
        theirs = ref.resamples[metric][:, ref_idx]
        low, high = percentile_interval(mine - theirs, CONFIDENCE)
        both = np.isfinite(mine) & np.isfinite(theirs)
        better = (is_better(metric, mine, theirs) & both).sum(axis=0)
        value = summary.values[metric][mine_idx]
        reference_value = ref.values[metric][ref_idx]
        parts.append(
            pd.DataFrame(
                {
                    "scale": [key[0] for key in common],
                    "vital": [key[1] for key in common],
                    "metric": metric,
                    "value": value,
                    "reference_value": reference_value,
                    "difference": value - reference_value,
                    "ci_low": low,
                    "ci_high": high,
                    "fraction_better": ratio(better, both.sum(axis=0)),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).assign(
        run=run.run_id,
        model=run.model,
        setting=run.setting,
        reference=reference,
        reference_run=ref_run.run_id,
    )
    return frame[list(PAIRED_COLUMNS)]


def best_baseline(runs: Sequence[Any], summaries: Mapping[str, RunSummary]) -> Any | None:
    """The baseline run with the lowest overall min-max MAE (vital all, whole horizon)."""
    best, best_mae = None, np.inf
    for run in runs:
        if not is_baseline(run):
            continue
        summary = summaries[run.run_id]
        cell = summary.step0().get(("minmax", "all"))
        mae = summary.values["mae"][cell] if cell is not None else np.nan
        if np.isfinite(mae) and mae < best_mae:
            best, best_mae = run, mae
    return best


def study_tables(
    runs: Sequence[Any], scores: Mapping[str, Any], resamples: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics and paired tables (see shared column lists) of runs' score tables.

    All runs share one set of resampled patients, so paired differences compare like with
    like; patients a run did not score add nothing to it.
    """
    from vitalfm.evaluation.bootstrap import patient_weights

    for run in runs:
        table = scores[run.run_id]
        if not table["n_points"].sum():
            raise DataError(
                f"run {run.run_id} has no observed target points: nothing to score",
                "check the test windows and remake its forecasts and scores (rules forecast, "
                "score)",
            )
    patients = np.unique(np.concatenate([scores[r.run_id]["subject_id"].to_numpy() for r in runs]))
    weights = patient_weights(len(patients), resamples, seed)
    summaries = {r.run_id: summarise_run(scores[r.run_id], patients, weights) for r in runs}
    metrics = pd.concat(
        [_metric_rows(run_facts(r), summaries[r.run_id]) for r in runs], ignore_index=True
    )

    paired: list[pd.DataFrame] = []
    zero_shot = {r.model: r for r in runs if r.method["kind"] == "zero_shot"}
    for model in dict.fromkeys(r.model for r in runs):
        if model not in zero_shot:
            log.info("model %s has no zero_shot run: no paired rows against zero-shot", model)
    baseline = best_baseline(runs, summaries)
    if baseline is None:
        log.info("no baseline run in this study: no paired rows against the best baseline")
    else:
        log.info("best baseline (lowest overall min-max MAE): %s", baseline.run_id)
    for run in runs:
        summary = summaries[run.run_id]
        ref = zero_shot.get(run.model)
        if ref is not None and ref.run_id != run.run_id:
            paired.append(_paired_rows(run, summary, "zero_shot", ref, summaries[ref.run_id]))
        if baseline is not None and baseline.run_id != run.run_id:
            paired.append(
                _paired_rows(run, summary, "best_baseline", baseline, summaries[baseline.run_id])
            )
    if paired:
        return metrics, pd.concat(paired, ignore_index=True)
    return metrics, pd.DataFrame({name: [] for name in PAIRED_COLUMNS})


def study_metrics(
    cfg: Mapping[str, Any],
    score_paths: Mapping[str, str | Path] | None = None,
    results_dir: str | Path = "results",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics and paired tables of the config's runs.

    Reads ``score_paths`` ({run id: score file}) or, by default, ``results_dir/scores``; a
    missing file names the run and the rule that makes it.
    """
    from vitalfm.evaluation.scoring import read_scores, score_path
    from vitalfm.study import study_runs

    runs = study_runs(cfg)
    scores = {}
    for run in runs:
        if score_paths is None:
            path, folder = score_path(results_dir, run.run_id), results_dir
        else:
            path, folder = Path(score_paths[run.run_id]), None
        scores[run.run_id] = read_scores(path, run.run_id, folder)
    boot = cfg["evaluation"]["bootstrap"]
    return study_tables(runs, scores, int(boot["resamples"]), int(boot["seed"]))


def write_metrics(
    cfg: Mapping[str, Any],
    score_paths: Mapping[str, str | Path],
    metrics_path: str | Path,
    metrics_csv: str | Path,
    paired_path: str | Path,
    paired_csv: str | Path,
) -> None:
    """Rule ``metrics``: both tables as parquet and CSV."""
    import pyarrow as pa

    from vitalfm.io import write_parquet, write_text

    started = time.perf_counter()
    metrics, paired = study_metrics(cfg, score_paths)
    outputs = ((metrics, metrics_path, metrics_csv), (paired, paired_path, paired_csv))
    for frame, parquet, csv in outputs:
        write_parquet(pa.Table.from_pandas(frame, preserve_index=False), parquet)
        write_text(frame.to_csv(index=False), csv)
    log.info(
        "%d metric rows for %d runs, %d paired rows (%.2f s)",
        len(metrics),
        metrics["run"].nunique(),
        len(paired),
        time.perf_counter() - started,
    )
