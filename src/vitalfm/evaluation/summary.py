"""The study's metrics tables: every run on validation and test, over patients and seeds.

A run has one replicate per seed (:mod:`vitalfm.study`); each replicate's score table holds
per-patient sums (:mod:`vitalfm.evaluation.scoring`). For one split and one cell (scale, vital,
horizon step) of a run:

- **point estimate**: the mean over the run's seeds of each seed's metric (a ratio of sums over
  all patients, :mod:`vitalfm.evaluation.metrics`);
- **interval**: a two-way bootstrap that resamples patients and seeds independently, with
  replacement (Owen's "pigeonhole" bootstrap for crossed designs, Ann. Appl. Stat. 2007):
  resample b weights patient p by how often it was drawn (``W[b, p]``) and seed s likewise
  (``V[b, s]``); the resampled metric is the ``V``-weighted mean over seeds of each seed's
  ``W``-weighted ratio of sums. For a crossed design y_ps = mu + a_p + b_s + e_ps it
  estimates var(a)/P + var(b)/S + var(e)/(P S) up to a factor (S - 1)/S on the seed term and a
  surplus on the residual term (conservative); ``tests/test_aggregate.py`` checks it against
  simulations with known variance. A run with one seed has patient-only intervals.

Every run of a split shares the same resampled patients, and every run with the study's full
seed list the same resampled seeds, so a paired difference (run minus reference, both
resampled together) pairs patients and seeds. References: each model's zero-shot run, and the
best baseline, **chosen on validation** (lowest validation min-max MAE) and then compared on
both splits. With an oracle (synthetic data) and a persistence run, each run also gets the
share of the persistence-to-oracle gap it closes, (persistence - run) / (persistence - oracle),
with its interval.
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

from vitalfm.errors import DataError
from vitalfm.evaluation.bootstrap import patient_weights, percentile_interval, seed_weights
from vitalfm.evaluation.metrics import (
    ERROR_METRICS,
    METRICS,
    POINT_COUNTS,
    SCALES,
    STATISTICS,
    is_better,
    metric_value,
    ratio,
)

log = logging.getLogger(__name__)

#: The split every "best" is chosen on, and the one results are reported on.
SELECTION_SPLIT = "validation"
REPORT_SPLIT = "test"
CONFIDENCE = 0.95
#: The metric and scale that choose the best baseline (and, in the tables, the best setting).
SELECTION = ("mae", "minmax")

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
PAIRED_COLUMNS = (
    "run",
    "model",
    "setting",
    "split",
    "reference",
    "reference_run",
    "chosen_on",
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
GAP_COLUMNS = (
    "run",
    "model",
    "setting",
    "split",
    "persistence_run",
    "oracle_run",
    "scale",
    "vital",
    "metric",
    "value",
    "persistence_value",
    "oracle_value",
    "share_closed",
    "ci_low",
    "ci_high",
)
#: (split, run id, seed) -> a score table.
ScoreKey = tuple[str, str, int]


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
    )


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _metric_rows(facts: dict[str, Any], split: str, summary: RunSummary) -> pd.DataFrame:
    parts = []
    for metric in METRICS:
        part = summary.cells.assign(
            metric=metric,
            value=summary.values[metric],
            ci_low=summary.low[metric],
            ci_high=summary.high[metric],
            n_seeds=len(summary.seeds),
            n_patients=summary.n_patients,
            n_windows=summary.counts["n_windows"],
            n_points=summary.counts[POINT_COUNTS.get(metric, "n_points")],
        )
        if metric == "dtw":  # a whole-horizon metric
            part = part[part["step"] == 0]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True).assign(split=split, **facts)
    for name in ("n_patients", "n_windows", "n_points"):
        frame[name] = frame[name].round().astype(np.int64)
    frame["step"] = frame["step"].astype(np.int64)
    return frame[list(METRICS_COLUMNS)]


def _replicate_rows(run: Any, split: str, summary: RunSummary) -> pd.DataFrame:
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


def _paired_rows(
    run: Any,
    split: str,
    summary: RunSummary,
    reference: str,
    ref_run: Any,
    ref: RunSummary,
    chosen_on: str,
) -> pd.DataFrame:
    """Whole-horizon differences run minus reference, on the same resampled patients (and
    seeds, where both have them)."""
    common = [key for key in summary.whole if key in ref.whole]
    mine_idx, whole_mine = summary.columns(common)
    ref_idx, whole_ref = ref.columns(common)
    parts = []
    for metric in METRICS:
        mine = summary.resamples[metric][:, mine_idx]
        theirs = ref.resamples[metric][:, ref_idx]
        low, high = percentile_interval(mine - theirs, CONFIDENCE)
        both = np.isfinite(mine) & np.isfinite(theirs)
        better = (is_better(metric, mine, theirs) & both).sum(axis=0)
        value = summary.values[metric][whole_mine]
        reference_value = ref.values[metric][whole_ref]
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
        split=split,
        reference=reference,
        reference_run=ref_run.run_id,
        chosen_on=chosen_on,
    )
    return frame[list(PAIRED_COLUMNS)]


def _gap_rows(
    run: Any,
    split: str,
    summary: RunSummary,
    persistence: Any,
    pers: RunSummary,
    oracle: Any,
    orac: RunSummary,
) -> pd.DataFrame:
    """The share of the persistence-to-oracle gap a run closes, per error metric."""
    common = [k for k in summary.whole if k in pers.whole and k in orac.whole]
    trio = [(part, *part.columns(common)) for part in (summary, pers, orac)]
    parts = []
    for metric in ERROR_METRICS:
        mine, base, best = (part.resamples[metric][:, columns] for part, columns, _ in trio)
        value, base_value, best_value = (part.values[metric][cells] for part, _, cells in trio)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (base_value - value) / (base_value - best_value)
            boot = (base - mine) / (base - best)
        boot = np.where(np.isfinite(boot), boot, np.nan)
        low, high = percentile_interval(boot, CONFIDENCE)
        parts.append(
            pd.DataFrame(
                {
                    "scale": [k[0] for k in common],
                    "vital": [k[1] for k in common],
                    "metric": metric,
                    "value": value,
                    "persistence_value": base_value,
                    "oracle_value": best_value,
                    "share_closed": share,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).assign(
        run=run.run_id,
        model=run.model,
        setting=run.setting,
        split=split,
        persistence_run=persistence.run_id,
        oracle_run=oracle.run_id,
    )
    return frame[list(GAP_COLUMNS)]


def best_baseline(runs: Sequence[Any], summaries: Mapping[str, RunSummary]) -> Any | None:
    """The baseline run with the lowest min-max MAE (vital all, whole horizon) in
    ``summaries`` (the selection split's)."""
    best, best_mae = None, np.inf
    metric, scale = SELECTION
    for run in runs:
        if not is_baseline(run):
            continue
        summary = summaries[run.run_id]
        if (scale, "all") not in summary.whole:
            continue
        _, cells = summary.columns([(scale, "all")])
        mae = summary.values[metric][cells[0]]
        if np.isfinite(mae) and mae < best_mae:
            best, best_mae = run, mae
    return best


@dataclass
class StudyTables:
    metrics: pd.DataFrame
    paired: pd.DataFrame
    replicates: pd.DataFrame
    gap: pd.DataFrame


def study_tables(
    runs: Sequence[Any],
    scores: Mapping[ScoreKey, pd.DataFrame],
    resamples: int,
    seed: int,
    splits: Sequence[str] = (SELECTION_SPLIT, REPORT_SPLIT),
) -> StudyTables:
    """The study's tables from every replicate's score table (``scores[(split, run id, seed)]``).

    Within a split all runs share one set of resampled patients, and all runs with several
    seeds one set of resampled seeds, so paired differences compare like with like.
    """
    for (split, run_id, replicate), table in scores.items():
        if not table["n_points"].sum():
            raise DataError(
                f"run {run_id}/seed-{replicate} ({split}) has no observed target points: "
                "nothing to score",
                "check the windows and remake its forecasts and scores (rules forecast, score)",
            )
    study_seeds = sorted({s for run in runs for s in run.seeds})
    seed_draws = seed_weights(study_seeds, resamples, seed)
    parts: dict[str, list[pd.DataFrame]] = {"metrics": [], "paired": [], "rep": [], "gap": []}
    summaries: dict[str, dict[str, RunSummary]] = {}
    for split in splits:
        tables = {r.run_id: [scores[(split, r.run_id, s)] for s in r.seeds] for r in runs}
        patients = np.unique(
            np.concatenate([t["subject_id"].to_numpy() for ts in tables.values() for t in ts])
        )
        weights = patient_weights(len(patients), resamples, seed)
        summaries[split] = {}
        for run in runs:
            draws = seed_draws[:, [study_seeds.index(s) for s in run.seeds]]
            summaries[split][run.run_id] = summarise_run(
                tables[run.run_id],
                run.seeds,
                patients,
                weights,
                draws if len(run.seeds) > 1 else None,
            )
            summary = summaries[split][run.run_id]
            parts["metrics"].append(_metric_rows(run_facts(run), split, summary))
            parts["rep"].append(_replicate_rows(run, split, summary))

    zero_shot = {r.model: r for r in runs if r.method["kind"] == "zero_shot"}
    for model in dict.fromkeys(r.model for r in runs if not r.is_oracle):
        if model not in zero_shot:
            log.info("model %s has no zero_shot run: no paired rows against zero-shot", model)
    selection = SELECTION_SPLIT if SELECTION_SPLIT in summaries else splits[0]
    baseline = best_baseline(runs, summaries[selection])
    if baseline is None:
        log.info("no baseline run in this study: no paired rows against the best baseline")
    else:
        log.info("best baseline on %s (lowest min-max MAE): %s", selection, baseline.run_id)
    persistence = next((r for r in runs if r.family == "persistence"), None)
    oracle = next((r for r in runs if r.is_oracle), None)
    for split in splits:
        by_id = summaries[split]
        for run in runs:
            summary = by_id[run.run_id]
            ref = zero_shot.get(run.model)
            if ref is not None and ref.run_id != run.run_id:
                parts["paired"].append(
                    _paired_rows(run, split, summary, "zero_shot", ref, by_id[ref.run_id], "")
                )
            if baseline is not None and baseline.run_id != run.run_id and not run.is_oracle:
                parts["paired"].append(
                    _paired_rows(
                        run,
                        split,
                        summary,
                        "best_baseline",
                        baseline,
                        by_id[baseline.run_id],
                        selection,
                    )
                )
            if persistence is not None and oracle is not None and not run.is_oracle:
                parts["gap"].append(
                    _gap_rows(
                        run,
                        split,
                        summary,
                        persistence,
                        by_id[persistence.run_id],
                        oracle,
                        by_id[oracle.run_id],
                    )
                )

    def frame(name: str, columns: Sequence[str]) -> pd.DataFrame:
        found = parts[name]
        if found:
            return pd.concat(found, ignore_index=True)
        return pd.DataFrame({column: [] for column in columns})

    return StudyTables(
        metrics=frame("metrics", METRICS_COLUMNS),
        paired=frame("paired", PAIRED_COLUMNS),
        replicates=frame("rep", REPLICATE_COLUMNS),
        gap=frame("gap", GAP_COLUMNS),
    )


def study_metrics(
    cfg: Mapping[str, Any],
    score_paths: Mapping[ScoreKey, str | Path] | None = None,
    results_dir: str | Path = "results",
) -> StudyTables:
    """The study's tables for the config's runs.

    Reads ``score_paths`` ({(split, run id, seed): score file}) or, by default, the files under
    ``results_dir/scores``; a missing file names the run and the rule that makes it.
    """
    from vitalfm.evaluation.scoring import read_scores, score_path
    from vitalfm.study import SPLITS_SCORED, study_runs

    runs = study_runs(cfg)
    scores = {}
    for split in SPLITS_SCORED:
        for run in runs:
            for seed in run.seeds:
                key = (split, run.run_id, seed)
                replicate = f"{run.replicate_id(seed)} ({split})"
                if score_paths is None:
                    path = score_path(results_dir, split, run.replicate_id(seed))
                    scores[key] = read_scores(path, replicate, results_dir, split)
                else:
                    scores[key] = read_scores(Path(score_paths[key]), replicate)
    boot = cfg["evaluation"]["bootstrap"]
    return study_tables(runs, scores, int(boot["resamples"]), int(boot["seed"]))


def write_metrics(
    cfg: Mapping[str, Any],
    score_paths: Mapping[ScoreKey, str | Path],
    outputs: Mapping[str, str | Path],
) -> StudyTables:
    """Rule ``metrics``: every table as parquet and CSV (``outputs``: metrics, metrics_csv,
    paired, paired_csv, replicates, replicates_csv and, optionally, gap, gap_csv)."""
    import pyarrow as pa

    from vitalfm.io import write_parquet, write_text

    started = time.perf_counter()
    tables = study_metrics(cfg, score_paths)
    for name in ("metrics", "paired", "replicates", "gap"):
        if name not in outputs:
            continue
        table = getattr(tables, name)
        write_parquet(pa.Table.from_pandas(table, preserve_index=False), outputs[name])
        write_text(table.to_csv(index=False), outputs[f"{name}_csv"])
    log.info(
        "%d metric rows for %d runs, %d paired rows, %d gap rows (%.2f s)",
        len(tables.metrics),
        tables.metrics["run"].nunique(),
        len(tables.paired),
        len(tables.gap),
        time.perf_counter() - started,
    )
    return tables
