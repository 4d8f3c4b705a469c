"""Rule ``metrics``: the study's metrics tables, every run on validation and test.

Each run's cells come from :mod:`vitalfm.evaluation.run_summary` (the mean over its seeds, an
interval over patients and seeds), its comparisons from :mod:`vitalfm.evaluation.paired`
(differences against its zero-shot form and the best baseline, the share of the
persistence-to-oracle gap it closes). Within a split every run shares one set of resampled
patients, and every run with the study's full seed list one set of resampled seeds, so paired
differences compare like with like. Writes the metrics, paired, per-seed, gap and calibration
tables.
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
from vitalfm.evaluation.bootstrap import patient_weights, seed_weights
from vitalfm.evaluation.paired import (
    GAP_COLUMNS,
    PAIRED_COLUMNS,
    best_baseline,
    gap_rows,
    paired_rows,
)
from vitalfm.evaluation.run_summary import (
    CALIBRATION_COLUMNS,
    METRICS_COLUMNS,
    REPLICATE_COLUMNS,
    REPORT_SPLIT,
    SELECTION_SPLIT,
    RunSummary,
    calibration_rows,
    metric_rows,
    replicate_rows,
    run_facts,
    summarise_run,
)
from vitalfm.evaluation.scoring import read_scores, score_path
from vitalfm.methods import zero_shot_kind
from vitalfm.models.registry import naive_reference_family

log = logging.getLogger(__name__)
#: The reference label of paired differences against each model's zero-shot run.
ZERO_SHOT = zero_shot_kind()

#: (split, run id, seed) -> a score table.
ScoreKey = tuple[str, str, int]


@dataclass
class StudyTables:
    """The metrics rule's tables (see :mod:`vitalfm.evaluation.run_summary` and
    :mod:`vitalfm.evaluation.paired` for their columns)."""

    metrics: pd.DataFrame
    paired: pd.DataFrame
    replicates: pd.DataFrame
    gap: pd.DataFrame
    #: Observed coverage at each calibration level (the calibration figure's data).
    calibration: pd.DataFrame


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
    parts: dict[str, list[pd.DataFrame]] = {
        "metrics": [],
        "paired": [],
        "rep": [],
        "gap": [],
        "calibration": [],
    }
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
            parts["metrics"].append(metric_rows(run_facts(run), split, summary))
            parts["calibration"].append(calibration_rows(run_facts(run), split, summary))
            parts["rep"].append(replicate_rows(run, split, summary))

    zero_shot = {r.model: r for r in runs if r.is_zero_shot}
    for model in dict.fromkeys(r.model for r in runs if not r.is_oracle):
        if model not in zero_shot:
            log.info("model %s has no zero_shot run: no paired rows against zero-shot", model)
    selection = SELECTION_SPLIT if SELECTION_SPLIT in summaries else splits[0]
    baseline = best_baseline(runs, summaries[selection])
    if baseline is None:
        log.info("no baseline run in this study: no paired rows against the best baseline")
    else:
        log.info("best baseline on %s (lowest min-max MAE): %s", selection, baseline.run_id)
    naive = naive_reference_family()
    persistence = next((r for r in runs if r.family == naive), None)
    oracle = next((r for r in runs if r.is_oracle), None)
    for split in splits:
        by_id = summaries[split]
        for run in runs:
            summary = by_id[run.run_id]
            ref = zero_shot.get(run.model)
            if ref is not None and ref.run_id != run.run_id:
                parts["paired"].append(
                    paired_rows(run, split, summary, ZERO_SHOT, ref, by_id[ref.run_id], "")
                )
            if baseline is not None and baseline.run_id != run.run_id and not run.is_oracle:
                parts["paired"].append(
                    paired_rows(
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
                    gap_rows(
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
        calibration=frame("calibration", CALIBRATION_COLUMNS),
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
    paired, paired_csv, replicates, replicates_csv and, optionally, gap, gap_csv, calibration,
    calibration_csv)."""
    import pyarrow as pa

    from vitalfm.io import write_parquet, write_text

    started = time.perf_counter()
    tables = study_metrics(cfg, score_paths)
    for name in ("metrics", "paired", "replicates", "gap", "calibration"):
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
