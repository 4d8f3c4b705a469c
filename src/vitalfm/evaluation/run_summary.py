"""One run's metrics on one split: the mean over its seeds, with intervals over patients and seeds.

A run has one replicate per seed (:mod:`vitalfm.study`); each replicate's score table holds
per-patient sums (:mod:`vitalfm.evaluation.scoring`). For one split and one cell (scale, vital,
horizon step) of a run:

- **point estimate**: the mean over the run's seeds of each seed's metric (a ratio of sums over
  all patients, :mod:`vitalfm.evaluation.metric_registry`);
- **interval**: a two-way bootstrap that resamples patients and seeds independently, with
  replacement (Owen's "pigeonhole" bootstrap for crossed designs, Ann. Appl. Stat. 2007):
  resample b weights patient p by how often it was drawn (``W[b, p]``) and seed s likewise
  (``V[b, s]``); the resampled metric is the ``V``-weighted mean over seeds of each seed's
  ``W``-weighted ratio of sums. For a crossed design y_ps = mu + a_p + b_s + e_ps it
  estimates var(a)/P + var(b)/S + var(e)/(P S) up to a factor (S - 1)/S on the seed term and a
  surplus on the residual term (conservative); ``tests/test_run_summary.py`` checks it against
  simulations with known variance. A run with one seed has patient-only intervals.

The summary keeps each whole-horizon cell's resamples, so that :mod:`vitalfm.evaluation.paired`
can compare two runs on the same resampled patients and seeds, and each whole-horizon cell's
observed coverage at every calibration level with the same kind of interval (the calibration
table, :func:`calibration_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.evaluation.bootstrap import percentile_interval
from vitalfm.evaluation.metric_registry import (
    CALIBRATION_LEVELS,
    METRICS,
    REGISTRY,
    STATISTICS,
    level_count,
    level_coverages,
)
from vitalfm.evaluation.metrics import SCALES, metric_value

#: The split every "best" is chosen on, and the one results are reported on.
SELECTION_SPLIT = "validation"
REPORT_SPLIT = "test"
CONFIDENCE = 0.95
#: The scale of the registry's selection metric that chooses every "best" (baseline here, and
#: setting, rank in the tables).
SELECTION_SCALE = "minmax"

RUN_COLUMNS = ("run", "model", "family", "setting", "method", "kind", "rank", "baseline")
METRICS_COLUMNS = (
    *RUN_COLUMNS,
    "split",
    "scale",
    "vital",
    "step",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_patients",
    "n_windows",
    "n_points",
)

#: The calibration table: observed coverage at each calibration level per run, split and vital
#: (whole horizon; coverage does not depend on the scale, so original units only).
CALIBRATION_COLUMNS = (
    *RUN_COLUMNS,
    "split",
    "vital",
    "level",
    "coverage",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_patients",
    "n_points",
)

REPLICATE_COLUMNS = (
    "run",
    "model",
    "setting",
    "split",
    "seed",
    "scale",
    "vital",
    "metric",
    "value",
)


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
    """One run's metrics on one split: per cell, over its seeds and the bootstrap."""

    seeds: tuple[int, ...]
    cells: pd.DataFrame  # scale, vital, step of each cell (row c)
    values: dict[str, np.ndarray]  # metric -> [C], mean over seeds
    seed_values: dict[str, np.ndarray]  # metric -> [S, C]
    low: dict[str, np.ndarray]  # metric -> [C], interval bounds
    high: dict[str, np.ndarray]
    whole: dict[tuple[str, str], int]  # (scale, vital) -> column of the whole-horizon cells
    whole_cells: np.ndarray  # [W] the cell of each whole-horizon column
    resamples: dict[str, np.ndarray]  # metric -> [B, W], whole-horizon cells only
    counts: dict[str, np.ndarray]  # n_windows, n_points, ... -> [C] (the same for every seed)
    n_patients: np.ndarray  # [C]
    #: level -> (coverage, ci_low, ci_high), each [W] over the whole-horizon cells
    coverage: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def columns(self, keys: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """(columns of :attr:`resamples`, cells of :attr:`values`) of whole-horizon ``keys``."""
        columns = np.array([self.whole[key] for key in keys], dtype=np.int64)
        return columns, self.whole_cells[columns]


def _cell_order(column: pd.Series) -> pd.Series:
    """Original scale first, then min-max; vital "all" first."""
    if column.name == "scale":
        return column.map({name: i for i, name in enumerate(SCALES)})
    if column.name == "vital":
        return column.where(column != "all", "")
    return column


def _weighted_seed_mean(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """[B, S, C] -> [B, C]: the mean over seeds weighted by draws ``weights`` [B, S]."""
    if weights is None:
        return values[:, 0]
    finite = np.isfinite(values)
    w = weights[:, :, None] * finite
    total = np.where(finite, values, 0.0) * w
    with np.errstate(invalid="ignore", divide="ignore"):
        return total.sum(axis=1) / w.sum(axis=1)


def summarise_run(
    tables: Sequence[pd.DataFrame],
    seeds: Sequence[int],
    patients: np.ndarray,
    weights: np.ndarray,
    seed_draws: np.ndarray | None,
) -> RunSummary:
    """Metrics of one run's replicates (``tables``, one per seed) on one split.

    ``patients`` are the split's sorted subject ids that the columns of ``weights`` [B, P]
    refer to; ``seed_draws`` [B, S] are the seed weights (None for one seed).
    """
    frame = pd.concat(tables, ignore_index=True)
    cells = (
        frame[["scale", "vital", "step"]]
        .drop_duplicates()
        .sort_values(["scale", "vital", "step"], key=_cell_order)
        .reset_index(drop=True)
    )
    numbered = cells.reset_index()
    per_patient = np.zeros((len(tables), len(patients), len(cells), len(STATISTICS)))
    for s, table in enumerate(tables):
        cell_id = numbered.merge(table, on=["scale", "vital", "step"], how="right")
        rows = np.searchsorted(patients, cell_id["subject_id"].to_numpy())
        per_patient[s, rows, cell_id["index"].to_numpy()] = cell_id[list(STATISTICS)].to_numpy(
            float
        )
    totals = per_patient.sum(axis=1)  # [S, C, K]
    sums = {name: totals[:, :, k] for k, name in enumerate(STATISTICS)}
    seed_values = {m: metric_value(m, sums) for m in METRICS}
    with np.errstate(invalid="ignore"):
        values = {m: _nanmean(seed_values[m], axis=0) for m in METRICS}
    resampled = np.einsum("bp,spck->bsck", weights, per_patient, optimize=True)
    boot_sums = {name: resampled[..., k] for k, name in enumerate(STATISTICS)}
    whole_cells = cells.index[cells["step"] == 0].to_numpy()
    whole = {
        (str(cells.at[c, "scale"]), str(cells.at[c, "vital"])): i for i, c in enumerate(whole_cells)
    }
    low, high, resamples = {}, {}, {}
    for metric in METRICS:
        combined = _weighted_seed_mean(metric_value(metric, boot_sums), seed_draws)  # [B, C]
        low[metric], high[metric] = percentile_interval(combined, CONFIDENCE)
        resamples[metric] = combined[:, whole_cells]
    whole_sums = {name: values[..., whole_cells] for name, values in boot_sums.items()}
    resampled_coverage = level_coverages(whole_sums)  # level -> [B, S, W]
    coverage = {}
    for level, share in level_coverages(sums).items():
        combined = _weighted_seed_mean(resampled_coverage[level], seed_draws)
        with np.errstate(invalid="ignore"):
            value = _nanmean(share[:, whole_cells], axis=0)
        coverage[level] = (value, *percentile_interval(combined, CONFIDENCE))
    first = totals[0]
    counts = {name: first[:, STATISTICS.index(name)] for name in STATISTICS}
    n_points = per_patient[0, :, :, STATISTICS.index("n_points")]
    return RunSummary(
        seeds=tuple(seeds),
        cells=cells,
        values=values,
        seed_values=seed_values,
        low=low,
        high=high,
        whole=whole,
        whole_cells=whole_cells,
        resamples=resamples,
        counts=counts,
        n_patients=(n_points > 0).sum(axis=0),
        coverage=coverage,
    )


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def metric_rows(facts: dict[str, Any], split: str, summary: RunSummary) -> pd.DataFrame:
    """The run's rows of the metrics table: every metric of every cell, with its counts."""
    parts = []
    for metric in REGISTRY:
        part = summary.cells.assign(
            metric=metric.name,
            value=summary.values[metric.name],
            ci_low=summary.low[metric.name],
            ci_high=summary.high[metric.name],
            n_seeds=len(summary.seeds),
            n_patients=summary.n_patients,
            n_windows=summary.counts["n_windows"],
            n_points=summary.counts[metric.point_count],
        )
        if metric.whole_horizon_only:
            part = part[part["step"] == 0]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True).assign(split=split, **facts)
    for name in ("n_patients", "n_windows", "n_points"):
        frame[name] = frame[name].round().astype(np.int64)
    frame["step"] = frame["step"].astype(np.int64)
    return frame[list(METRICS_COLUMNS)]


def calibration_rows(facts: dict[str, Any], split: str, summary: RunSummary) -> pd.DataFrame:
    """The run's rows of the calibration table: per vital (whole horizon, original units), the
    observed coverage at each calibration level with its interval; levels the run's forecasts
    lack are left out."""
    keys = [key for key in summary.whole if key[0] == "original"]
    columns, cells = summary.columns(keys)
    parts = []
    for level in CALIBRATION_LEVELS:
        value, low, high = (part[columns] for part in summary.coverage[level])
        parts.append(
            pd.DataFrame(
                {
                    "vital": [key[1] for key in keys],
                    "level": level,
                    "coverage": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n_seeds": len(summary.seeds),
                    "n_patients": summary.n_patients[cells],
                    "n_points": summary.counts[level_count(level)][cells],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).assign(split=split, **facts)
    frame = frame[frame["n_points"] > 0].reset_index(drop=True)
    for name in ("n_patients", "n_points"):
        frame[name] = frame[name].round().astype(np.int64)
    return frame[list(CALIBRATION_COLUMNS)]


def replicate_rows(run: Any, split: str, summary: RunSummary) -> pd.DataFrame:
    """Each seed's whole-horizon metrics (the seed spread and the sampling-noise floor)."""
    keys = list(summary.whole)
    _, cells = summary.columns(keys)
    rows = []
    for s, seed in enumerate(summary.seeds):
        for metric in METRICS:
            values = summary.seed_values[metric][s, cells]
            for (scale, vital), value in zip(keys, values, strict=True):
                rows.append(
                    (run.run_id, run.model, run.setting, split, seed, scale, vital, metric, value)
                )
    return pd.DataFrame(rows, columns=list(REPLICATE_COLUMNS))
