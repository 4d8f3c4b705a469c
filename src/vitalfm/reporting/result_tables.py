"""The result tables of one subject each: the main comparison (every metric), parameter
efficiency, and the variance over seeds; with the cells and notes the result tables share.

Every number comes from the metrics rule's tables (metrics, paired differences, per-seed values,
the oracle gap), the runs' metadata and the data stage's summaries; nothing is recomputed here.
Results are **test** scores; every "best" (setting, rank, baseline) is **chosen on validation**
and the tables say so. Errors are overall (all vitals pooled, all horizon steps) on the min-max
scale unless a table says otherwise, each the mean over a run's seeds with its 95% interval
over patients and seeds, and every result table counts the windows and points behind it. With
the synthetic database, the oracle (the generator's own forecasts) is a reference row. The main
comparison has a column for every metric of the registry
(:mod:`vitalfm.evaluation.metric_registry`), the selection metric first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.evaluation.metric_registry import CALIBRATION_ERROR, CRPS, MAE, SELECTION_METRIC
from vitalfm.evaluation.run_summary import REPORT_SPLIT
from vitalfm.reporting import TABLES
from vitalfm.reporting.formatting import (
    MISSING,
    Table,
    fmt_ci,
    fmt_count,
    fmt_int,
    fmt_number,
    fmt_percent,
    fmt_size,
)
from vitalfm.reporting.lookups import (
    model_order,
    models_in_order,
    overall,
    reported_metrics,
    validation_best_mask,
    vitals_in,
)

SCALE_NOTE = {
    "minmax": (
        "Min-max scale: each vital mapped to [0, 1] with fixed clinical ranges (the authors' "
        "group's HR 0-300, RR 0-100, MAP 0-190; evaluation.minmax_ranges), so errors of different "
        "vitals can be pooled and set beside the papers'."
    ),
    "original": "Original units (bpm, mmHg, breaths/min, %, °C).",
}


def scale_note(cfg: Mapping[str, Any], scale: str) -> str:
    """The scale's note, with the configured min-max ranges spelled out."""
    ranges = (cfg.get("evaluation") or {}).get("minmax_ranges") or {}
    if scale != "minmax" or not ranges:
        return SCALE_NOTE[scale]
    wanted = set(cfg["vitals"]["names"]) if "vitals" in cfg else set(ranges)
    spelled = ", ".join(f"{v} {lo:g}-{hi:g}" for v, (lo, hi) in ranges.items() if v in wanted)
    return (
        f"Min-max scale: each vital mapped to [0, 1] with fixed ranges ({spelled}; HR, RR and "
        "MAP as in the authors' group), so errors of different vitals can be pooled and set "
        "beside the papers'."
    )


CI_NOTE = (
    "Test scores: point estimates (the mean over a run's seeds) with 95% intervals [low, high] "
    "from a bootstrap that resamples test patients (not windows) and, for runs with several "
    "seeds, the seeds; a run with one seed has a patient-only interval."
)
SCORED_NOTE = (
    "Only observed target points are scored (never filled ones); n windows and n points are the "
    "test windows and observed horizon points behind each row."
)
CHOSEN_NOTE = (
    "Every 'best' (setting, rank, baseline) is chosen on the validation split (lowest "
    "validation min-max MAE, mean over seeds) and its test score reported: choosing on the "
    "test set would report the best of several draws."
)
CAL_NOTE = (
    f"{CALIBRATION_ERROR.label}: the calibration error, the mean over the forecast's quantile "
    "levels a (0.025 ... 0.975; a model without the outer ones on those it has) of "
    "|coverage(a) - a|, coverage(a) the share of test points at or below the a-quantile; 0 is "
    "calibrated (the same on both scales). The calibration figure shows which levels are off "
    "and in which direction."
)
ORACLE_LABEL = "oracle (bound)"
ORACLE_NOTE = (
    "Oracle: the synthetic generator's own forecast from each stay's latent state at the "
    "forecast origin, the best any model could do on these data; a bound, not a model."
)


# --- cells ---------------------------------------------------------------------------------


def gap_cell(gap: pd.DataFrame, run: str) -> str:
    """The share of the gap closed, in percent, with its interval."""
    if gap.empty or run not in gap.index:
        return MISSING
    row = gap.loc[run]
    return fmt_ci(100 * row["share_closed"], 100 * row["ci_low"], 100 * row["ci_high"], 3) + " %"


def value_cell(frame: pd.DataFrame, run: str, digits: int = 4) -> str:
    """``"value [low, high]"`` of a run in an :func:`overall` lookup."""
    if run not in frame.index:
        return MISSING
    row = frame.loc[run]
    return fmt_ci(row["value"], row["ci_low"], row["ci_high"], digits)


def difference_cell(frame: pd.DataFrame, run: str) -> str:
    """A paired difference with its interval."""
    if run not in frame.index:
        return MISSING
    row = frame.loc[run]
    return fmt_ci(row["difference"], row["ci_low"], row["ci_high"], 3)


def fraction_cell(frame: pd.DataFrame, run: str) -> str:
    """The share of resamples in which the run is better."""
    if run not in frame.index:
        return MISSING
    value = frame.loc[run, "fraction_better"]
    return f"{value:.2f}" if np.isfinite(value) else MISSING


def count_cell(frame: pd.DataFrame, run: str, column: str) -> str:
    return fmt_count(frame.loc[run, column]) if run in frame.index else MISSING


# --- tables --------------------------------------------------------------------------------


def main_comparison(
    metrics: pd.DataFrame, info: pd.DataFrame, cfg: Mapping[str, Any], scale: str = "minmax"
) -> Table:
    """Model (family, size) x method setting x vital, every metric with its interval (test)."""
    shown = reported_metrics(metrics)
    vitals = vitals_in(metrics, cfg)
    if scale == "original":
        vitals = [v for v in vitals if v != "all"]
    scaled = metrics[
        (metrics["scale"] == scale) & (metrics["step"] == 0) & (metrics["split"] == REPORT_SPLIT)
    ]
    lookup = {
        (m, v): part.drop_duplicates("run").set_index("run")
        for (m, v), part in scaled.groupby(["metric", "vital"], sort=False)
    }
    rows, bold_rows = [], []
    for model in model_order(info):
        runs = info[info["model"] == model]
        for vital in vitals:
            block = []
            for _, run in runs.iterrows():
                counts = lookup.get((shown[0].name, vital))
                if counts is None or run["run"] not in counts.index:
                    continue
                row = {
                    "Family": run["family"],
                    "Model": ORACLE_LABEL if run["oracle"] else model,
                    "Size": fmt_size(run["base_total"]) if not run["oracle"] else MISSING,
                    "Setting": run["setting"],
                    "Seeds": fmt_int(run["seeds"]),
                    "Vital": vital,
                    "n windows": count_cell(counts, run["run"], "n_windows"),
                    "n points": count_cell(counts, run["run"], "n_points"),
                }
                for metric in shown:
                    frame = lookup.get((metric.name, vital), pd.DataFrame())
                    row[metric.label] = value_cell(frame, run["run"])
                block.append((row, run["run"]))
            chosen = validation_best_mask(metrics, [r for _, r in block], vital)
            for (row, _), flag in zip(block, chosen, strict=True):
                rows.append(row)
                bold_rows.append({SELECTION_METRIC.label: bool(flag)})
    frame = pd.DataFrame(rows)
    notes = [
        scale_note(cfg, scale),
        CI_NOTE,
        SCORED_NOTE + " Counts are those of MAE; a metric may count fewer (e.g. MAPE).",
        "Bold (CSV: the `best` column): the model's best method setting for that vital, chosen "
        "on validation MAE; the values shown are test scores.",
        "Size: the base model's parameters. Seeds: replicates averaged in each value.",
        CAL_NOTE,
        ORACLE_NOTE,
    ]
    if scale == "original":
        notes.append("The pooled row (all vitals) is left out: it would add different units.")
    name = "main_comparison" if scale == "minmax" else "main_comparison_original"
    return Table(name, TABLES[name], frame, notes, pd.DataFrame(bold_rows))


def parameter_efficiency(metrics: pd.DataFrame, info: pd.DataFrame) -> Table:
    mae = overall(metrics, MAE.name)
    crps = overall(metrics, CRPS.name)
    rows = []
    for model in models_in_order(info, oracle=False):
        for _, run in info[info["model"] == model].iterrows():
            rid = run["run"]
            rows.append(
                {
                    "Family": run["family"],
                    "Model": model,
                    "Setting": run["setting"],
                    "Seeds": fmt_int(run["seeds"]),
                    "Trainable": fmt_count(run["trainable"]),
                    "Total": fmt_count(run["total"]),
                    "% trainable": fmt_percent(run["percent_trainable"]),
                    "Train time (s)": fmt_number(run["train_s"], 3),
                    "Steps": fmt_number(run["steps"], 3),
                    "Train peak RSS (MB)": fmt_number(run["train_rss_mb"], 4),
                    "Train peak device (MB)": fmt_number(run["train_device_mb"], 4),
                    "Device": run["device"],
                    "Forecast time (s)": fmt_number(run["forecast_s"], 3),
                    "Forecast peak RSS (MB)": fmt_number(run["forecast_rss_mb"], 4),
                    "MAE": value_cell(mae, rid),
                    "CRPS": value_cell(crps, rid),
                    "n windows": count_cell(mae, rid, "n_windows"),
                    "n points": count_cell(mae, rid, "n_points"),
                }
            )
    oracles = info[info["oracle"]] if "oracle" in info else info.iloc[:0]
    sources = set(info["memory_source"]) - {""}
    notes = [
        "Trainable and total parameters as counted by the run (total includes adapter weights; "
        "zero-shot and persistence train nothing).",
        "Train time and steps: the training loop's wall time and steps, mean over the run's "
        "seeds (from each replicate's metadata, else the finetune job's Snakemake benchmark); "
        "forecast time: the first seed's forecast of the test windows (model loading excluded); "
        "forecast peak RSS: its forecast job's benchmark (validation and test in one job).",
        "Train peak RSS: "
        + (
            "the trainer's own record of the process' peak RSS"
            if sources == {"trainer"}
            else "the trainer's record where present, else the finetune job's benchmark max_rss"
        )
        + " (the largest over seeds); peak device memory: torch's peak allocation on a GPU "
        "(– on CPU).",
        "MAE and CRPS: min-max scale, all vitals and horizon steps pooled.",
        CI_NOTE,
        SCORED_NOTE,
    ]
    for _, run in oracles.iterrows():
        rid = run["run"]
        notes.append(f"{ORACLE_NOTE} Its MAE {value_cell(mae, rid)}, CRPS {value_cell(crps, rid)}.")
    return Table("parameter_efficiency", TABLES["parameter_efficiency"], pd.DataFrame(rows), notes)


def seed_variance(replicates: pd.DataFrame, info: pd.DataFrame) -> Table:
    """Per run with several seeds: its test MAE per seed, their spread, and what varies."""
    test = replicates[
        (replicates["split"] == REPORT_SPLIT)
        & (replicates["metric"] == MAE.name)
        & (replicates["scale"] == "minmax")
        & (replicates["vital"] == "all")
    ]
    rows = []
    floors = []
    for model in models_in_order(info, oracle=False):
        for _, run in info[info["model"] == model].iterrows():
            part = test[test["run"] == run["run"]].sort_values("seed")
            if len(part) < 2:
                continue
            values = part["value"].to_numpy(float)
            pairs = np.abs(values[:, None] - values[None, :])[np.triu_indices(len(values), 1)]
            mean = float(np.mean(values))
            sampling_only = not run["trains"]
            if sampling_only and np.ptp(values) > 0:
                share = 100 * np.mean(pairs) / mean
                floors.append(f"{model} {np.mean(pairs):.2g} ({share:.2g} %)")
            rows.append(
                {
                    "Family": run["family"],
                    "Model": model,
                    "Setting": run["setting"],
                    "What differs between seeds": "forecast sampling"
                    if sampling_only
                    else "training and forecast sampling",
                    "Seeds": ", ".join(str(s) for s in part["seed"]),
                    "Test MAE by seed": ", ".join(fmt_number(v) for v in values),
                    "Mean": fmt_number(mean),
                    "SD over seeds": fmt_number(float(np.std(values, ddof=1))),
                    "Mean |difference| between two seeds": fmt_number(float(np.mean(pairs))),
                    "% of the mean": fmt_percent(100 * float(np.mean(pairs)) / mean)
                    if mean
                    else MISSING,
                }
            )
    notes = [
        "Runs with several seeds (training.seeds; training.all_seeds_for chooses which "
        "settings run them). Test min-max MAE, all vitals and steps.",
        "Zero-shot runs of sampling models (sample paths) differ between seeds only in their "
        "forecast sampling: the mean difference between two of their seeds is the sampling-noise "
        "floor, the smallest difference between two settings of that model the study can "
        "resolve from one seed each. Models with quantile outputs have none (differences 0).",
        ("Sampling-noise floor: " + "; ".join(floors) + ".")
        if floors
        else "No sampling model ran several zero-shot seeds.",
        "Trained runs differ in initialisation, data order, dropout and sampling: their spread "
        "is the training variance that the intervals of the other tables include.",
    ]
    return Table("seed_variance", TABLES["seed_variance"], pd.DataFrame(rows), notes)
