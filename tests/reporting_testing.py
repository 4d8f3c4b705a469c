"""A small hand-made results tree for the reporting tests (no model is run).

The tree has what the workflow writes for two foundation models x three method settings
(zero-shot, LoRA rank 1 and 2) and two baselines (persistence, and a trained N-HiTS): metrics and
paired differences in the metrics rule's format, run metadata and loss histories, Snakemake
benchmark files, forecasts of a tiny test WindowSet, and the data stage's summaries.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.engine.training_data import usable_rows
from vitalfm.study import study_runs
from vitalfm.testing import toy_windows

VITALS = ("heart_rate", "mbp")
METRICS = (
    "mse",
    "mae",
    "mape",
    "dtw",
    "crps",
    "wql",
    "mase",
    "coverage_80",
    "coverage_95",
    "calibration_error",
)
HORIZON = 12
QUANTILES = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)
# Overall test min-max MAE of each run; the other numbers are derived from it.
LEVEL = {
    "tiny_chronos/zero_shot": 0.100,
    "tiny_chronos/lora-r1": 0.080,
    "tiny_chronos/lora-r2": 0.070,
    "m-b/zero_shot": 0.110,
    "m-b/lora-r1": 0.090,
    "m-b/lora-r2": 0.095,
    "persistence/zero_shot": 0.120,
    "nhits/scratch": 0.085,
    "oracle/oracle": 0.050,
}
# Validation MAE where it differs from test: tiny_chronos' rank 1 wins on validation although
# rank 2 is better on test; every "best" must follow validation.
VALIDATION_LEVEL = {**LEVEL, "tiny_chronos/lora-r1": 0.075, "tiny_chronos/lora-r2": 0.078}
SEEDS = (0, 1)
BASE_TOTAL = {
    "tiny_chronos": 1_000_000,
    "m-b": 2_000_000,
    "persistence": 0,
    "nhits": 700_000,
    "oracle": 0,
}
NO_PEAK_RECORD = "m-b/lora-r2"  # its metadata lacks the trainer's memory record
RAW_CONFIG = {
    "vitals": {"names": list(VITALS)},
    "models": {
        "tiny_chronos": {"family": "chronos", "source": {"standin": "chronos-t5"}},
        "m-b": {"family": "moirai", "source": {"standin": "moirai"}},
        "persistence": {
            "family": "persistence",
            "source": {"scratch": True},
            "methods": ["zero_shot"],
        },
        "nhits": {"family": "nhits", "source": {"scratch": True}, "methods": ["scratch"]},
    },
    "methods": {
        "zero_shot": {"kind": "zero_shot"},
        "lora": {"kind": "lora", "rank": [1, 2]},
        "scratch": {"kind": "scratch"},
    },
    "training": {"seeds": list(SEEDS), "all_seeds_for": ["zero_shot", "lora-r2", "scratch"]},
}


def _tsv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)


def _json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _metric_value(level: float, metric: str, vital_i: int, step: int, scale: str) -> float:
    if metric.startswith("coverage"):
        return 0.6 + 0.3 * level / 0.12 + 0.01 * vital_i
    if metric == "calibration_error":  # no unit: the same on both scales
        return 0.5 * level + 0.01 * vital_i + 0.001 * step
    factor = {"mse": 0.2, "mape": 90, "dtw": 6, "crps": 0.8, "wql": 1.5, "mase": 9}.get(metric, 1)
    unit = 150 if scale == "original" else 1
    return level * factor * unit * (1 + 0.1 * vital_i) * (1 + 0.03 * step)


def _levels(split: str, levels: dict[str, float]) -> dict[str, float]:
    if split == "test" or levels is not LEVEL:
        return levels
    return VALIDATION_LEVEL


def event_window_rows(run_index: int, level: float, split: str) -> pd.DataFrame:
    """One replicate's event table (rule events): hypotension on 40 windows of 8 patients,
    a forecast whose probability separates the events less well as the run's error grows."""
    rng = np.random.default_rng([run_index, 0 if split == "validation" else 1])
    n = 40
    truth = rng.random(n) < 0.3
    ongoing = rng.random(n) < 0.25
    noise = rng.normal(0.0, 4 * level, n)
    probability = np.clip(0.2 + 0.6 * truth + noise, 0.0, 1.0)
    onset = np.where(truth, rng.integers(1, HORIZON + 1, n), -1)
    forecast_onset = np.where(probability >= 0.5, rng.integers(1, HORIZON + 1, n), -1)
    detected = truth & (probability >= 0.5) & ~ongoing
    return pd.DataFrame(
        {
            "window_id": np.arange(n, dtype=np.int64),
            "subject_id": 100 + np.arange(n, dtype=np.int64) % 8,
            "event": "hypotension",
            "vital": "mbp",
            "truth": truth,
            "onset_step": onset.astype(np.int64),
            "ongoing": ongoing,
            "probability": probability,
            "forecast_onset_step": forecast_onset.astype(np.int64),
            "lead_minutes": np.where(detected, (onset - forecast_onset) * 15.0, np.nan),
            "n_observed": np.full(n, 4, np.int64),
            "source": "quantiles",
        }
    )


def write_event_results(root: Path, runs: list, levels: dict[str, float]) -> None:
    """Every replicate's event table and the clinical_events metrics made from them with the
    event_metrics rule's own code."""
    from vitalfm.evaluation.event_metrics import event_tables
    from vitalfm.models.registry import naive_reference_family

    tables = {}
    for split in ("validation", "test"):
        split_levels = _levels(split, levels)
        for k, run in enumerate(runs):
            for seed in run.seeds:
                table = event_window_rows(k * 10 + seed, split_levels[run.run_id], split)
                tables[(split, run.run_id, seed)] = table
                path = root / "events" / split / f"{run.run_id}/seed-{seed}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                table.to_parquet(path)
    frame = event_tables(
        runs, tables, 200, 7, 0.5, ("validation", "test"), naive_reference_family()
    )
    frame.to_parquet(root / "metrics" / "clinical_events.parquet")


def calibration_rows(runs: list, levels: dict[str, float]) -> pd.DataFrame:
    """The calibration table: a normal forecast whose spread is off by a factor that grows with
    the run's error (coverage Phi(z_a / width)); m-b has no outer levels (0.1-0.9 only)."""
    rows = []
    for split in ("validation", "test"):
        for run in runs:
            width = 0.4 + 8 * _levels(split, levels)[run.run_id]  # < 1: overconfident
            for vi, vital in enumerate(("all", *VITALS)):
                for a in QUANTILES:
                    if run.model == "m-b" and not 0.1 <= a <= 0.9:
                        continue
                    coverage = NormalDist().cdf(NormalDist().inv_cdf(a) / width) + 0.01 * vi
                    rows.append(
                        {
                            "run": run.run_id,
                            "model": run.model,
                            "family": run.family,
                            "setting": run.setting,
                            "method": run.method["method"],
                            "kind": run.method["kind"],
                            "rank": float(run.method.get("rank", math.nan)),
                            "baseline": run.baseline,
                            "split": split,
                            "vital": vital,
                            "level": a,
                            "coverage": coverage,
                            "ci_low": coverage - 0.02,
                            "ci_high": coverage + 0.02,
                            "n_seeds": len(run.seeds),
                            "n_patients": 3,
                            "n_points": 400 + 100 * vi,
                        }
                    )
    return pd.DataFrame(rows)


def make_results(
    root: Path,
    cfg: dict[str, Any],
    levels: dict[str, float] = LEVEL,
    sizes: dict[str, int] = BASE_TOTAL,
) -> None:
    """Write a results tree in the workflow's layout for every run of ``cfg`` (``levels``: each
    run's overall test min-max MAE; ``sizes``: each model's parameters)."""
    for i, split in enumerate(("train", "validation", "test")):
        windows = toy_windows(
            split, n_stays=4 if split == "train" else 3, seed=i, vital_names=VITALS
        )
        windows.save(root / "windows" / f"{split}.npz", root / "windows" / f"{split}.parquet")
    test = toy_windows("test", n_stays=3, seed=2, vital_names=VITALS)

    runs = study_runs(cfg)
    metric_rows, paired_rows, replicate_rows, gap_rows = [], [], [], []
    for split in ("validation", "test"):
        split_levels = _levels(split, levels)
        for k, run in enumerate(runs):
            level = split_levels[run.run_id]
            rank = float(run.method.get("rank", math.nan))
            for scale in ("original", "minmax"):
                for vi, vital in enumerate(("all", *VITALS)):
                    for step in range(HORIZON + 1):
                        for metric in METRICS:
                            if metric == "dtw" and step:
                                continue
                            value = _metric_value(level, metric, vi, step, scale)
                            metric_rows.append(
                                {
                                    "run": run.run_id,
                                    "model": run.model,
                                    "family": run.family,
                                    "setting": run.setting,
                                    "method": run.method["method"],
                                    "kind": run.method["kind"],
                                    "rank": rank,
                                    "baseline": run.baseline,
                                    "split": split,
                                    "scale": scale,
                                    "vital": vital,
                                    "step": step,
                                    "metric": metric,
                                    "value": value,
                                    "ci_low": value * 0.9,
                                    "ci_high": value * 1.1,
                                    "n_seeds": len(run.seeds),
                                    "n_patients": 3,
                                    "n_windows": 40 + 10 * vi + k,
                                    "n_points": 400 + 100 * vi + k,
                                }
                            )
                            if step:
                                continue
                            for j, seed in enumerate(run.seeds):  # seeds spread around the mean
                                spread = 0.002 * (j - (len(run.seeds) - 1) / 2)
                                replicate_rows.append(
                                    {
                                        "run": run.run_id,
                                        "model": run.model,
                                        "setting": run.setting,
                                        "split": split,
                                        "seed": seed,
                                        "scale": scale,
                                        "vital": vital,
                                        "metric": metric,
                                        "value": value + spread,
                                    }
                                )
    metrics = pd.DataFrame(metric_rows)
    overall = metrics[(metrics["step"] == 0)].set_index(
        ["split", "run", "scale", "vital", "metric"]
    )["value"]
    baselines = [run.run_id for run in runs if run.baseline]
    validation = _levels("validation", levels)
    best_baseline = min(baselines, key=validation.get) if baselines else None
    persistence = next((r.run_id for r in runs if r.family == "persistence"), None)
    oracle = next((r.run_id for r in runs if r.is_oracle), None)
    for split in ("validation", "test"):
        for run in runs:
            if run.is_oracle:
                continue
            references = []
            if not run.baseline and best_baseline:
                references.append(("best_baseline", best_baseline, "validation"))
            if not run.baseline and run.setting != "zero_shot":
                references.append(("zero_shot", f"{run.model}/zero_shot", ""))
            for reference, ref_run, chosen_on in references:
                for scale in ("original", "minmax"):
                    for vital in ("all", *VITALS):
                        for metric in ("mae", "crps"):
                            value = overall[(split, run.run_id, scale, vital, metric)]
                            ref = overall[(split, ref_run, scale, vital, metric)]
                            paired_rows.append(
                                {
                                    "run": run.run_id,
                                    "model": run.model,
                                    "setting": run.setting,
                                    "split": split,
                                    "reference": reference,
                                    "reference_run": ref_run,
                                    "chosen_on": chosen_on,
                                    "scale": scale,
                                    "vital": vital,
                                    "metric": metric,
                                    "value": value,
                                    "reference_value": ref,
                                    "difference": value - ref,
                                    "ci_low": value - ref - 0.004,
                                    "ci_high": value - ref + 0.004,
                                    "fraction_better": 0.97 if value < ref else 0.2,
                                }
                            )
            if persistence is None or oracle is None:
                continue
            for scale in ("original", "minmax"):
                for vital in ("all", *VITALS):
                    key = (split, scale, vital, "mae")
                    mine = overall[(split, run.run_id, scale, vital, "mae")]
                    base = overall[(split, persistence, scale, vital, "mae")]
                    best = overall[(split, oracle, scale, vital, "mae")]
                    share = (base - mine) / (base - best)
                    gap_rows.append(
                        {
                            "run": run.run_id,
                            "model": run.model,
                            "setting": run.setting,
                            "split": key[0],
                            "persistence_run": persistence,
                            "oracle_run": oracle,
                            "scale": scale,
                            "vital": vital,
                            "metric": "mae",
                            "value": mine,
                            "persistence_value": base,
                            "oracle_value": best,
                            "share_closed": share,
                            "ci_low": share - 0.1,
                            "ci_high": share + 0.1,
                        }
                    )
    (root / "metrics").mkdir(parents=True)
    metrics.to_parquet(root / "metrics" / "metrics.parquet")
    pd.DataFrame(paired_rows).to_parquet(root / "metrics" / "paired.parquet")
    pd.DataFrame(replicate_rows).to_parquet(root / "metrics" / "replicates.parquet")
    gap_columns = ["run", "model", "setting", "split", "persistence_run", "oracle_run", "scale"]
    gap_columns += ["vital", "metric", "value", "persistence_value", "oracle_value"]
    gap_columns += ["share_closed", "ci_low", "ci_high"]
    pd.DataFrame(gap_rows, columns=gap_columns).to_parquet(root / "metrics" / "oracle_gap.parquet")
    calibration_rows(runs, levels).to_parquet(root / "metrics" / "calibration.parquet")
    write_event_results(root, runs, levels)

    bench_columns = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out"]
    for k, run in enumerate(runs):
        base = sizes[run.model]
        trainable = base if run.baseline else 1000 * int(run.method.get("rank", 0))
        params = {
            "trainable": trainable if run.trains else 0,
            "total": base + (0 if run.baseline else trainable),
            "base_total": base,
        }
        device = {"device": "cpu", "gpu_name": None}
        for j, replicate in enumerate(run.replicate_ids):
            for split in ("validation", "test"):
                _json(
                    root / "forecasts" / split / f"{replicate}.json",
                    {
                        "parameters": params,
                        "device": device,
                        "forecast": {"seconds": 1.5 + k + j},
                        "software": {"torch": "2.13.0+cpu", "vitalfm": "0.1.0"},
                        "git_revision": "abc123",
                    },
                )
            # one forecast job per replicate forecasts both splits
            bench = [2.0 + k + j, "0:00:02", 300.0 + k, 1, 1, 1, 0, 0]
            _tsv(
                root / "benchmarks" / "forecast" / f"{replicate}.tsv",
                pd.DataFrame([bench], columns=bench_columns),
            )
            frames = []
            for vital in VITALS:
                rows = usable_rows(test, vital)
                truth = test.horizon(vital, rows)
                observed = test.horizon_observed_mask(vital, rows)
                level = np.nanmean(test.context(vital, rows), axis=1)[:, None] + k
                n = len(rows)
                frame = pd.DataFrame(
                    {
                        "window_id": np.repeat(rows, HORIZON),
                        "subject_id": np.repeat(test.window_subject_ids()[rows], HORIZON),
                        "icustay_id": np.repeat(test.window_icustay_ids()[rows], HORIZON),
                        "vital": vital,
                        "step": np.tile(np.arange(1, HORIZON + 1), n).astype(np.int16),
                        "y_true": np.where(observed, truth, np.nan).ravel().astype(np.float32),
                        "observed": observed.ravel(),
                        "median": np.broadcast_to(level, (n, HORIZON)).ravel().astype(np.float32),
                    }
                )
                for q in QUANTILES:  # a normal forecast with sd 4 around the median
                    normal = 4 * NormalDist().inv_cdf(q)
                    frame[f"q{q}"] = (frame["median"] + normal).astype(np.float32)
                frames.append(frame)
            for split in ("validation", "test"):
                path = root / "forecasts" / split / f"{replicate}.parquet"
                pd.concat(frames).to_parquet(path, index=False)
            if not run.trains:
                continue
            training: dict[str, Any] = {
                "steps": 20,
                "wall_time_s": 10.0 + k + 2 * j,
                "best_step": 15,
            }
            if run.run_id != NO_PEAK_RECORD:
                training["peak_memory_mb"] = {"process_rss_mb": 500.0 + k + j, "device_mb": None}
            run_dir = root / "runs" / replicate
            _json(
                run_dir / "metadata.json",
                {"parameters": params, "training": training, "device": device},
            )
            steps = np.arange(0, 25, 5)
            history = pd.DataFrame(
                {
                    "step": steps,
                    "train_loss": np.r_[np.nan, 2.0 - 0.05 * steps[1:] - 0.01 * k],
                    "validation_loss": 2.1 - 0.04 * steps - 0.01 * k,
                    "validation_crps": 0.05 - 0.001 * steps,
                    "validation_mae": 0.08 - 0.001 * steps,
                    "learning_rate": 0.001,
                    "samples_per_s": 100.0,
                    "selection_metric": "crps",
                    "best_step": 15,
                }
            )
            _tsv(run_dir / "history.tsv", history)
            bench = [30.0 + k, "0:00:30", 600.0 + k + j, 1, 1, 1, 0, 0]
            _tsv(
                root / "benchmarks" / "finetune" / f"{replicate}.tsv",
                pd.DataFrame([bench], columns=bench_columns),
            )

    _tsv(
        root / "cohort" / "cohort_summary.tsv",
        pd.DataFrame(
            {
                "step": ["all_icu_stays", "sepsis_explicit", "adult"],
                "description": ["ICU stays in the database", "sepsis codes", "age >= 18 years"],
                "subjects": [20, 12, 10],
                "admissions": [25, 14, 11],
                "icustays": [30, 15, 10],
            }
        ),
    )
    _tsv(
        root / "splits" / "split_summary.tsv",
        pd.DataFrame(
            {
                "split": ["train", "validation", "test"],
                "n_subjects": [4, 3, 3],
                "n_icustays": [4, 3, 3],
                "fraction_subjects": [0.4, 0.3, 0.3],
            }
        ),
    )
    _tsv(
        root / "grid" / "grid_summary.tsv",
        pd.DataFrame(
            {
                "vital": list(VITALS),
                "readings_used": [500, 480],
                "bins_total": [1000, 1000],
                "bins_observed": [450, 430],
                "bins_missing": [550, 570],
            }
        ),
    )
    _tsv(
        root / "vitals" / "vitals_summary.tsv",
        pd.DataFrame(
            {
                "vital": list(VITALS),
                "rows_fetched": [520, 500],
                "rows_kept": [500, 480],
                "stays_with_data": [10, 10],
                "cohort_stays": [10, 10],
            }
        ),
    )
