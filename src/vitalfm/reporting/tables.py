"""The study's tables: the answer in one table, the main comparison, parameter efficiency, the
rank sweep, the PEFT method comparison, the variance over seeds, the cohort, and the software
versions.

Every number comes from the metrics rule's tables (metrics, paired differences, per-seed values,
the oracle gap), the runs' metadata and the data stage's summaries; nothing is recomputed here.
Results are **test** scores; every "best" (setting, rank, baseline) is **chosen on validation**
and the tables say so. Errors are overall (all vitals pooled, all horizon steps) on the min-max
scale unless a table says otherwise, each the mean over a run's seeds with its 95% interval
over patients and seeds, and every result table counts the windows and points behind it. With
the synthetic database, the oracle (the generator's own forecasts) is a reference row.
"""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from vitalfm.db.dsn import redact_dsn
from vitalfm.errors import DataError
from vitalfm.evaluation.aggregate import REPORT_SPLIT, SELECTION_SPLIT
from vitalfm.io import write_text
from vitalfm.provenance import git_revision, package_versions
from vitalfm.reporting import STUDY_CONFIG, STUDY_CONFIG_HTML, TABLES
from vitalfm.reporting.formatting import (
    MISSING,
    Table,
    fmt_ci,
    fmt_count,
    fmt_int,
    fmt_number,
    fmt_percent,
    fmt_size,
    write_table,
)
from vitalfm.reporting.inputs import (
    ResultsLayout,
    check_runs_scored,
    load_gap,
    load_metrics,
    load_paired,
    load_replicates,
    read_json,
    require,
    run_table,
)
from vitalfm.study import Run, study_runs

log = logging.getLogger(__name__)

METRIC_LABELS = {
    "mae": "MAE",
    "mse": "MSE",
    "mape": "MAPE",
    "dtw": "DTW",
    "crps": "CRPS",
    "wql": "WQL",
    "mase": "MASE",
    "coverage_80": "Cov. 80%",
    "coverage_95": "Cov. 95%",
}
#: Coverage is best when closest to its nominal level; every other metric when lowest.
NOMINAL = {"coverage_80": 0.80, "coverage_95": 0.95}
RANKED_KINDS = ("lora", "dora", "vera")

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
ORACLE_LABEL = "oracle (bound)"
ORACLE_NOTE = (
    "Oracle: the synthetic generator's own forecast from each stay's latent state at the "
    "forecast origin, the best any model could do on these data; a bound, not a model."
)


# --- lookups -------------------------------------------------------------------------------


def overall(
    metrics: pd.DataFrame,
    metric: str,
    scale: str = "minmax",
    vital: str = "all",
    step: int = 0,
    split: str = REPORT_SPLIT,
) -> pd.DataFrame:
    """One metric per run on one split (value, ci_low, ci_high, counts), indexed by run."""
    sel = metrics[
        (metrics["metric"] == metric)
        & (metrics["scale"] == scale)
        & (metrics["vital"] == vital)
        & (metrics["step"] == step)
        & (metrics["split"] == split)
    ]
    return sel.drop_duplicates("run").set_index("run")


def paired_for(
    paired: pd.DataFrame,
    reference: str,
    metric: str,
    scale: str = "minmax",
    vital: str = "all",
    split: str = REPORT_SPLIT,
) -> pd.DataFrame:
    """Paired differences against one reference ("zero_shot" or "best_baseline"), by run."""
    sel = paired[
        (paired["reference"] == reference)
        & (paired["metric"] == metric)
        & (paired["scale"] == scale)
        & (paired["vital"] == vital)
        & (paired["split"] == split)
    ]
    return sel.drop_duplicates("run").set_index("run")


def gap_for(gap: pd.DataFrame, metric: str = "mae", scale: str = "minmax") -> pd.DataFrame:
    """The share of the persistence-to-oracle gap each run closes on test, by run."""
    if gap.empty:
        return gap
    sel = gap[
        (gap["metric"] == metric)
        & (gap["scale"] == scale)
        & (gap["vital"] == "all")
        & (gap["split"] == REPORT_SPLIT)
    ]
    return sel.drop_duplicates("run").set_index("run")


def chosen_on_validation(metrics: pd.DataFrame, runs: Sequence[str]) -> str | None:
    """Of ``runs``, the one with the lowest validation min-max MAE (mean over seeds)."""
    validation = overall(metrics, "mae", split=SELECTION_SPLIT)
    values = [_value(validation, r) for r in runs]
    if not np.isfinite(values).any():
        return None
    return list(runs)[int(np.nanargmin(values))]


def validation_best_mask(
    metrics: pd.DataFrame, runs: Sequence[str], vital: str = "all"
) -> np.ndarray:
    """Which of ``runs`` is best on validation MAE (a lone run is not "best" of anything)."""
    validation = overall(metrics, "mae", vital=vital, split=SELECTION_SPLIT)
    return best_mask([_value(validation, r) for r in runs], "mae")


def _gap_cell(gap: pd.DataFrame, run: str) -> str:
    if gap.empty or run not in gap.index:
        return MISSING
    row = gap.loc[run]
    return fmt_ci(100 * row["share_closed"], 100 * row["ci_low"], 100 * row["ci_high"], 3) + " %"


def _cell(frame: pd.DataFrame, run: str, digits: int = 4) -> str:
    if run not in frame.index:
        return MISSING
    row = frame.loc[run]
    return fmt_ci(row["value"], row["ci_low"], row["ci_high"], digits)


def _diff_cell(frame: pd.DataFrame, run: str) -> str:
    if run not in frame.index:
        return MISSING
    row = frame.loc[run]
    return fmt_ci(row["difference"], row["ci_low"], row["ci_high"], 3)


def _fraction_cell(frame: pd.DataFrame, run: str) -> str:
    if run not in frame.index:
        return MISSING
    value = frame.loc[run, "fraction_better"]
    return f"{value:.2f}" if np.isfinite(value) else MISSING


def _count(frame: pd.DataFrame, run: str, column: str) -> str:
    return fmt_count(frame.loc[run, column]) if run in frame.index else MISSING


def _value(frame: pd.DataFrame, run: str, column: str = "value") -> float:
    return float(frame.loc[run, column]) if run in frame.index else math.nan


def best_mask(values: Sequence[float], metric: str) -> np.ndarray:
    """Which entries are best (ties all marked): lowest error, or coverage nearest nominal."""
    array = np.asarray(values, dtype=float)
    if metric in NOMINAL:
        array = np.abs(array - NOMINAL[metric])
    finite = np.isfinite(array)
    if finite.sum() < 2:  # a lone setting is not "best" of anything
        return np.zeros(len(array), dtype=bool)
    return finite & (array == np.nanmin(array))


def best_baseline_run(paired: pd.DataFrame) -> str | None:
    """The baseline the metrics rule paired against, if the study has one."""
    refs = paired.loc[paired["reference"] == "best_baseline", "reference_run"].dropna().unique()
    return str(refs[0]) if len(refs) else None


def _metrics_present(metrics: pd.DataFrame) -> list[str]:
    present = set(metrics["metric"].unique())
    return [m for m in METRIC_LABELS if m in present]


def _vitals(metrics: pd.DataFrame, cfg: Mapping[str, Any]) -> list[str]:
    from vitalfm.data.vitals import vital_names_from_config

    present = set(metrics["vital"].unique())
    ordered = [v for v in vital_names_from_config(cfg["vitals"]) if v in present]
    extra = sorted(present - set(ordered) - {"all"})
    return (["all"] if "all" in present else []) + ordered + extra


def _model_order(info: pd.DataFrame) -> list[str]:
    """Foundation models in config order, then the baselines, then the oracle."""
    columns = ["order", "baseline", "oracle"] if "oracle" in info else ["order", "baseline"]
    firsts = info.groupby("model", sort=False)[columns].first()
    keys = ["oracle", "baseline", "order"] if "oracle" in firsts else ["baseline", "order"]
    return list(firsts.sort_values(keys, kind="stable").index)


def _models(info: pd.DataFrame, oracle: bool = True) -> list[str]:
    order = _model_order(info)
    if oracle or "oracle" not in info:
        return order
    oracles = set(info.loc[info["oracle"], "model"])
    return [m for m in order if m not in oracles]


# --- tables --------------------------------------------------------------------------------


def main_comparison(
    metrics: pd.DataFrame, info: pd.DataFrame, cfg: Mapping[str, Any], scale: str = "minmax"
) -> Table:
    """Model (family, size) x method setting x vital, every metric with its interval (test)."""
    names = _metrics_present(metrics)
    vitals = _vitals(metrics, cfg)
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
    for model in _model_order(info):
        runs = info[info["model"] == model]
        for vital in vitals:
            block = []
            for _, run in runs.iterrows():
                counts = lookup.get((names[0], vital))
                if counts is None or run["run"] not in counts.index:
                    continue
                row = {
                    "Family": run["family"],
                    "Model": ORACLE_LABEL if run["oracle"] else model,
                    "Size": fmt_size(run["base_total"]) if not run["oracle"] else MISSING,
                    "Setting": run["setting"],
                    "Seeds": fmt_int(run["seeds"]),
                    "Vital": vital,
                    "n windows": _count(counts, run["run"], "n_windows"),
                    "n points": _count(counts, run["run"], "n_points"),
                }
                for name in names:
                    frame = lookup.get((name, vital), pd.DataFrame())
                    row[METRIC_LABELS[name]] = _cell(frame, run["run"])
                block.append((row, run["run"]))
            chosen = validation_best_mask(metrics, [r for _, r in block], vital)
            for (row, _), flag in zip(block, chosen, strict=True):
                rows.append(row)
                bold_rows.append({METRIC_LABELS["mae"]: bool(flag)})
    frame = pd.DataFrame(rows)
    notes = [
        scale_note(cfg, scale),
        CI_NOTE,
        SCORED_NOTE + " Counts are those of MAE; a metric may count fewer (e.g. MAPE).",
        "Bold (CSV: the `best` column): the model's best method setting for that vital, chosen "
        "on validation MAE; the values shown are test scores.",
        "Size: the base model's parameters. Seeds: replicates averaged in each value.",
        ORACLE_NOTE,
    ]
    if scale == "original":
        notes.append("The pooled row (all vitals) is left out: it would add different units.")
    name = "main_comparison" if scale == "minmax" else "main_comparison_original"
    return Table(name, TABLES[name], frame, notes, pd.DataFrame(bold_rows))


def parameter_efficiency(metrics: pd.DataFrame, info: pd.DataFrame) -> Table:
    mae = overall(metrics, "mae")
    crps = overall(metrics, "crps")
    rows = []
    for model in _models(info, oracle=False):
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
                    "MAE": _cell(mae, rid),
                    "CRPS": _cell(crps, rid),
                    "n windows": _count(mae, rid, "n_windows"),
                    "n points": _count(mae, rid, "n_points"),
                }
            )
    oracles = info[info["oracle"]] if "oracle" in info else info.iloc[:0]
    sources = set(info["memory_source"]) - {""}
    notes = [
        "Trainable and total parameters as counted by the run (total includes adapter weights; "
        "zero-shot and persistence train nothing).",
        "Train time and steps: the training loop's wall time and steps, mean over the run's "
        "seeds (from each replicate's metadata, else the finetune job's Snakemake benchmark); "
        "forecast time and forecast peak RSS: the first seed's test forecast job's benchmark.",
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
        notes.append(
            f"{ORACLE_NOTE} Its MAE {_cell(mae, run['run'])}, CRPS {_cell(crps, run['run'])}."
        )
    return Table("parameter_efficiency", TABLES["parameter_efficiency"], pd.DataFrame(rows), notes)


def _swept(info: pd.DataFrame) -> pd.DataFrame:
    """Runs of ranked methods (LoRA, DoRA, VeRA) swept over at least two ranks for a model;
    all ranked runs when nothing is swept."""
    ranked = info[info["kind"].isin(RANKED_KINDS) & info["rank"].notna()]
    counts = ranked.groupby(["model", "method"])["rank"].transform("nunique")
    swept = ranked[counts >= 2]
    return swept if len(swept) else ranked


def _oracle_runs(info: pd.DataFrame) -> list[str]:
    return list(info.loc[info["oracle"], "run"]) if "oracle" in info else []


def rank_sweep(metrics: pd.DataFrame, paired: pd.DataFrame, info: pd.DataFrame) -> Table:
    mae, crps = overall(metrics, "mae"), overall(metrics, "crps")
    d_mae, d_crps = paired_for(paired, "zero_shot", "mae"), paired_for(paired, "zero_shot", "crps")
    swept = _swept(info)
    rows, bold_rows = [], []
    for model in _model_order(swept):
        for _, group in swept[swept["model"] == model].groupby("method", sort=False):
            group = group.sort_values("rank")
            mask = validation_best_mask(metrics, list(group["run"]))
            for flag, (_, run) in zip(mask, group.iterrows(), strict=True):
                rid = run["run"]
                rows.append(
                    {
                        "Family": run["family"],
                        "Model": model,
                        "Method": run["method"],
                        "Rank": fmt_int(run["rank"]),
                        "Seeds": fmt_int(run["seeds"]),
                        "Trainable": fmt_count(run["trainable"]),
                        "MAE": _cell(mae, rid),
                        "CRPS": _cell(crps, rid),
                        "ΔMAE vs zero-shot": _diff_cell(d_mae, rid),
                        "P(better than zero-shot)": _fraction_cell(d_mae, rid),
                        "ΔCRPS vs zero-shot": _diff_cell(d_crps, rid),
                        "n windows": _count(mae, rid, "n_windows"),
                        "n points": _count(mae, rid, "n_points"),
                    }
                )
                bold_rows.append({"MAE": bool(flag)})
    for rid in _oracle_runs(info) if rows else []:
        reference = {"Family": "oracle", "Model": ORACLE_LABEL}
        rows.append({**reference, "MAE": _cell(mae, rid), "CRPS": _cell(crps, rid)})
        bold_rows.append({"MAE": False})
    notes = [
        "Runs of each ranked method (LoRA, and DoRA/VeRA where swept) at every rank the study "
        "ran; bold: the model's best rank of that method, chosen on validation MAE (the values "
        "are test scores).",
        SCALE_NOTE["minmax"],
        CI_NOTE,
        "Δ: the run minus the same model's zero-shot forecast on the same patients and seeds "
        "(negative = better), with a paired bootstrap interval; P(better): the share of "
        "bootstrap resamples in which the run has the lower error.",
        SCORED_NOTE,
    ]
    if not rows:
        notes.insert(0, "This study ran no ranked method (LoRA, DoRA or VeRA).")
    columns = [
        "Family",
        "Model",
        "Method",
        "Rank",
        "Seeds",
        "Trainable",
        "MAE",
        "CRPS",
        "ΔMAE vs zero-shot",
        "P(better than zero-shot)",
        "ΔCRPS vs zero-shot",
        "n windows",
        "n points",
    ]
    frame = pd.DataFrame(rows, columns=columns).fillna("")
    return Table("rank_sweep", TABLES["rank_sweep"], frame, notes, pd.DataFrame(bold_rows))


def method_comparison(
    metrics: pd.DataFrame, paired: pd.DataFrame, info: pd.DataFrame, gap: pd.DataFrame
) -> Table:
    mae, crps = overall(metrics, "mae"), overall(metrics, "crps")
    vs_zero = paired_for(paired, "zero_shot", "mae")
    vs_base = paired_for(paired, "best_baseline", "mae")
    closed = gap_for(gap)
    baseline = best_baseline_run(paired)
    rows, bold_rows = [], []
    for model in _model_order(info):
        runs = info[info["model"] == model]
        mask = validation_best_mask(metrics, list(runs["run"]))
        for flag, (_, run) in zip(mask, runs.iterrows(), strict=True):
            rid = run["run"]
            method = run["method"]
            if run["baseline"]:
                method = "baseline: " + method
            if run["oracle"]:
                method = ORACLE_LABEL
            rows.append(
                {
                    "Family": run["family"],
                    "Model": model,
                    "Setting": run["setting"],
                    "Method": method,
                    "Seeds": fmt_int(run["seeds"]),
                    "Trainable": fmt_count(run["trainable"]),
                    "% trainable": fmt_percent(run["percent_trainable"]),
                    "MAE": _cell(mae, rid),
                    "CRPS": _cell(crps, rid),
                    "ΔMAE vs zero-shot": _diff_cell(vs_zero, rid),
                    "P(better than zero-shot)": _fraction_cell(vs_zero, rid),
                    "ΔMAE vs best baseline": "reference"
                    if rid == baseline
                    else _diff_cell(vs_base, rid),
                    "P(better than best baseline)": _fraction_cell(vs_base, rid),
                    "Gap closed (persistence → oracle)": _gap_cell(closed, rid),
                    "n windows": _count(mae, rid, "n_windows"),
                    "n points": _count(mae, rid, "n_points"),
                }
            )
            bold_rows.append({"MAE": bool(flag)})
    notes = [
        "Every method setting of every model, test scores; bold: the model's best setting, "
        "chosen on validation MAE.",
        SCALE_NOTE["minmax"],
        CI_NOTE,
        "Δ: the run minus its reference on the same patients and seeds (negative = better), "
        "with a paired bootstrap interval; P(better): the share of resamples in which the run "
        "has the lower error.",
        (
            f"Best baseline: {baseline}, the from-scratch or persistence baseline with the lowest "
            "validation min-max MAE."
            if baseline
            else "This study ran no baseline, so there is no comparison against one."
        ),
        "Gap closed: (persistence - run) / (persistence - oracle) of the test MAE, with its "
        "bootstrap interval: 0 % is persistence, 100 % the oracle, below 0 worse than "
        "persistence."
        if not gap.empty
        else "No gap closed: the study has no oracle (an external database) or no persistence.",
        ORACLE_NOTE,
        SCORED_NOTE,
    ]
    return Table(
        "method_comparison",
        TABLES["method_comparison"],
        pd.DataFrame(rows),
        notes,
        pd.DataFrame(bold_rows),
    )


def _verdict(frame: pd.DataFrame, run: str) -> str:
    if run not in frame.index:
        return MISSING
    low, high = frame.loc[run, "ci_low"], frame.loc[run, "ci_high"]
    if high < 0:
        return "better"
    if low > 0:
        return "worse"
    return "no clear difference"


def findings(
    metrics: pd.DataFrame, paired: pd.DataFrame, info: pd.DataFrame, gap: pd.DataFrame
) -> Table:
    """Per foundation model: zero-shot against its best adapted setting (chosen on validation,
    scored on test), the best baseline, and the share of the persistence-to-oracle gap."""
    mae = overall(metrics, "mae")
    vs_zero = paired_for(paired, "zero_shot", "mae")
    vs_base = paired_for(paired, "best_baseline", "mae")
    closed = gap_for(gap)
    baseline = best_baseline_run(paired)
    by_run = info.set_index("run")
    rows = []
    for model in _models(info, oracle=False):
        runs = info[info["model"] == model]
        if runs["baseline"].any():
            continue
        zero = runs.loc[runs["kind"] == "zero_shot", "run"]
        zero_id = zero.iloc[0] if len(zero) else None
        adapted = runs[runs["trains"]]
        best = chosen_on_validation(metrics, list(adapted["run"])) if len(adapted) else None
        rows.append(
            {
                "Family": runs["family"].iloc[0],
                "Model": model,
                "Zero-shot MAE": _cell(mae, zero_id) if zero_id else MISSING,
                "Best adapted setting (on validation)": best.split("/", 1)[1] if best else MISSING,
                "Its test MAE": _cell(mae, best) if best else MISSING,
                "Seeds": fmt_int(by_run.loc[best, "seeds"]) if best else MISSING,
                "Trainable": fmt_count(by_run.loc[best, "trainable"]) if best else MISSING,
                "ΔMAE vs zero-shot": _diff_cell(vs_zero, best) if best else MISSING,
                "P(better than zero-shot)": _fraction_cell(vs_zero, best) if best else MISSING,
                "Adapted vs zero-shot": _verdict(vs_zero, best) if best else MISSING,
                "ΔMAE vs best baseline": _diff_cell(vs_base, best) if best else MISSING,
                "Gap closed (persistence → oracle)": _gap_cell(closed, best) if best else MISSING,
                "Zero-shot gap closed": _gap_cell(closed, zero_id) if zero_id else MISSING,
                "n windows": _count(mae, best or zero_id or "", "n_windows"),
                "n points": _count(mae, best or zero_id or "", "n_points"),
            }
        )
    oracle_runs = _oracle_runs(info)
    persistence = info.loc[info["family"] == "persistence", "run"]
    notes = [
        "For each foundation model, its adapted setting with the lowest validation min-max MAE "
        "(all vitals and horizon steps, mean over seeds) set against its zero-shot forecast on "
        "the test set. All settings' test scores are in the method comparison table.",
        "Adapted vs zero-shot: better / worse only when the paired 95% interval of the "
        "difference, over test patients and seeds, excludes zero. A chosen setting with one "
        "seed (training.all_seeds_for) has an interval over patients only; the seed_variance "
        "table shows how far seeds move the settings that ran several.",
        (
            f"Best baseline (chosen on validation): {baseline}, test MAE {_cell(mae, baseline)}."
            if baseline
            else "This study ran no baseline."
        ),
        *(
            [f"Persistence: test MAE {_cell(mae, persistence.iloc[0])}."]
            if len(persistence)
            else []
        ),
        *[f"{ORACLE_NOTE} Its test MAE {_cell(mae, rid)}." for rid in oracle_runs],
        "Gap closed: (persistence - run) / (persistence - oracle) of the test MAE: how far the "
        "run gets from persistence toward the best possible forecast.",
        CHOSEN_NOTE,
        CI_NOTE,
        SCORED_NOTE,
    ]
    columns = [
        "Family",
        "Model",
        "Zero-shot MAE",
        "Best adapted setting (on validation)",
        "Its test MAE",
        "Seeds",
        "Trainable",
        "ΔMAE vs zero-shot",
        "P(better than zero-shot)",
        "Adapted vs zero-shot",
        "ΔMAE vs best baseline",
        "Gap closed (persistence → oracle)",
        "Zero-shot gap closed",
        "n windows",
        "n points",
    ]
    return Table("findings", TABLES["findings"], pd.DataFrame(rows, columns=columns), notes)


def seed_variance(replicates: pd.DataFrame, info: pd.DataFrame) -> Table:
    """Per run with several seeds: its test MAE per seed, their spread, and what varies."""
    test = replicates[
        (replicates["split"] == REPORT_SPLIT)
        & (replicates["metric"] == "mae")
        & (replicates["scale"] == "minmax")
        & (replicates["vital"] == "all")
    ]
    rows = []
    floors = []
    for model in _models(info, oracle=False):
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


# --- the data stage ------------------------------------------------------------------------


def _tsv(layout: ResultsLayout, stage: str) -> pd.DataFrame:
    return pd.read_csv(require(layout.summary(stage), layout.root), sep="\t")


def _window_counts(layout: ResultsLayout, vitals: Sequence[str]) -> pd.DataFrame:
    """Windows and observed horizon points per split, from the window index files."""
    rows = []
    for split in ("train", "validation", "test"):
        index = pd.read_parquet(require(layout.window_index(split), layout.root))
        row: dict[str, Any] = {"split": split, "windows": len(index)}
        for vital in vitals:
            col = f"{vital}_horizon_observed"
            if col in index.columns:
                row[f"{vital}_windows"] = int((index[col] > 0).sum())
                row[f"{vital}_points"] = int(index[col].sum())
        row["points"] = sum(v for k, v in row.items() if k.endswith("_points"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def cohort_tables(layout: ResultsLayout, cfg: Mapping[str, Any]) -> list[Table]:
    from vitalfm.data.vitals import vital_names_from_config

    vitals = vital_names_from_config(cfg["vitals"])
    windows = _window_counts(layout, vitals)
    total_windows, total_points = int(windows["windows"].sum()), int(windows["points"].sum())

    cohort = _tsv(layout, "cohort").rename(
        columns={
            "step": "Step",
            "description": "Criterion",
            "subjects": "Patients",
            "admissions": "Admissions",
            "icustays": "ICU stays",
        }
    )
    cohort_table = Table(
        "cohort",
        TABLES["cohort"],
        cohort.map(lambda v: fmt_count(v) if isinstance(v, (int, np.integer)) else str(v)),
        [
            "Patients, admissions and ICU stays left after each inclusion step, in order.",
            f"The cohort's stays give {total_windows:,d} forecasting windows with "
            f"{total_points:,d} observed horizon points over all vitals and splits (see the "
            "splits table).",
        ],
    )

    splits = _tsv(layout, "splits").set_index("split")
    rows = []
    for split, row in splits.iterrows():
        counted = windows.loc[split] if split in windows.index else None
        rows.append(
            {
                "Split": split,
                "Patients": fmt_count(row["n_subjects"]),
                "ICU stays": fmt_count(row["n_icustays"]),
                "Share of patients": fmt_percent(100 * row["fraction_subjects"]),
                "Windows": fmt_count(counted["windows"]) if counted is not None else MISSING,
                "Observed horizon points": fmt_count(counted["points"])
                if counted is not None
                else MISSING,
            }
        )
    w = cfg["windows"]
    splits_table = Table(
        "splits",
        TABLES["splits"],
        pd.DataFrame(rows),
        [
            "Patients are split, so no patient appears in two sets.",
            f"Windows: {w['context_hours']} h context -> {w['horizon_hours']} h horizon every "
            f"{w['stride_hours']} h on a {cfg['grid']['frequency_minutes']}-minute grid; "
            "observed horizon points summed over vitals (filled points are not counted).",
        ],
    )

    vit = _tsv(layout, "vitals").set_index("vital")
    grid = _tsv(layout, "grid").set_index("vital")
    rows = []
    for vital in [v for v in vitals if v in grid.index]:
        g = grid.loc[vital]
        v = vit.loc[vital] if vital in vit.index else None
        test = windows.loc["test"] if "test" in windows.index else None
        rows.append(
            {
                "Vital": vital,
                "Rows kept": fmt_count(v["rows_kept"]) if v is not None else MISSING,
                "Stays with data": fmt_count(v["stays_with_data"]) if v is not None else MISSING,
                "Grid bins": fmt_count(g["bins_total"]),
                "Observed": fmt_count(g["bins_observed"]),
                "Missing": fmt_count(g["bins_missing"]),
                "% observed": fmt_percent(100 * g["bins_observed"] / g["bins_total"])
                if g["bins_total"]
                else MISSING,
                "Test windows": fmt_count(test.get(f"{vital}_windows", math.nan))
                if test is not None
                else MISSING,
                "Test points": fmt_count(test.get(f"{vital}_points", math.nan))
                if test is not None
                else MISSING,
            }
        )
    vitals_table = Table(
        "vitals_grid",
        TABLES["vitals_grid"],
        pd.DataFrame(rows),
        [
            "Rows kept: chartevents rows after the error flag, NULL and plausibility filters.",
            "Grid bins: observed (holding the mean of their readings) or empty; nothing is filled "
            "on the grid (what models see of a context's gaps: windows.fill, causal per window).",
            "Test windows / points: test windows with an observed horizon for the vital, and "
            "their observed horizon points (what the metrics score).",
        ],
    )
    return [cohort_table, splits_table, vitals_table]


# --- software ------------------------------------------------------------------------------

#: The report's own stack, beside the packages the runs recorded.
REPORT_PACKAGES = (
    "vitalfm",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "tabulate",
    "snakemake",
    "torch",
)


def software_table(layout: ResultsLayout, runs: Sequence[Run]) -> Table:
    """This environment's versions of the packages the runs recorded (and of the report's own
    stack) beside the versions the runs recorded; they should agree."""
    recorded: dict[str, set[str]] = {}
    revisions: set[str] = set()
    for run in runs:
        meta = read_json(layout.forecast_json(run.replicate_ids[0]), layout.root)
        for name, version in (meta.get("software") or {}).items():
            recorded.setdefault(name, set()).add(str(version))
        if meta.get("git_revision"):
            revisions.add(str(meta["git_revision"]))
    current = package_versions(sorted(set(REPORT_PACKAGES) | set(recorded)))
    rows = [
        {"Software": "python", "Report": platform.python_version(), "Runs": MISSING},
        {"Software": "platform", "Report": platform.platform(), "Runs": MISSING},
        {
            "Software": "vitalfm git revision",
            "Report": git_revision(),
            "Runs": "; ".join(sorted(revisions)) or MISSING,
        },
    ]
    for name in sorted(set(current) | set(recorded)):
        rows.append(
            {
                "Software": name,
                "Report": current.get(name, MISSING),
                "Runs": "; ".join(sorted(recorded.get(name, ()))) or MISSING,
            }
        )
    return Table(
        "software_versions",
        TABLES["software_versions"],
        pd.DataFrame(rows),
        [
            "Report: the environment that built these tables; Runs: the versions the forecast "
            "jobs recorded (several values mean the runs were made with different versions).",
            f"{len(runs)} runs.",
        ],
    )


# --- everything ----------------------------------------------------------------------------


def run_info(runs: Sequence[Run], layout: ResultsLayout, metrics: pd.DataFrame) -> pd.DataFrame:
    """:func:`run_table`, with a run counted as a baseline when its config or the metrics
    say so."""
    info = run_table(runs, layout)
    flagged = metrics.groupby("run")["baseline"].any()
    info["baseline"] = info["baseline"] | info["run"].map(flagged).eq(True)
    return info


def build_tables(
    cfg: Mapping[str, Any], results_dir: str | Path = "results", out_dir: str | Path | None = None
) -> dict[str, dict[str, Path]]:
    """Write every table of :data:`vitalfm.reporting.TABLES` (and the effective config).

    Returns {table name: {format: path}}.
    """
    layout = ResultsLayout(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else layout.root / "tables"
    runs = study_runs(cfg)
    if not runs:
        raise DataError("the config has no runs", "list models and methods in the config")
    metrics = load_metrics(layout)
    paired = load_paired(layout)
    replicates = load_replicates(layout)
    gap = load_gap(layout)
    check_runs_scored(runs, metrics, layout)
    info = run_info(runs, layout, metrics)
    tables = [
        findings(metrics, paired, info, gap),
        main_comparison(metrics, info, cfg, "minmax"),
        main_comparison(metrics, info, cfg, "original"),
        parameter_efficiency(metrics, info),
        rank_sweep(metrics, paired, info),
        method_comparison(metrics, paired, info, gap),
        seed_variance(replicates, info),
        *cohort_tables(layout, cfg),
        software_table(layout, runs),
    ]
    assert [t.name for t in tables] == list(TABLES), "TABLES and build_tables disagree"
    written = {}
    for table in tables:
        written[table.name] = write_table(table, out)
        log.info("table %s: %d rows", table.name, len(table.frame))
    text = "# The study's configuration with every default filled in (as validated).\n"
    shown = _plain(dict(cfg))
    if isinstance(shown.get("database"), dict) and "dsn" in shown["database"]:
        shown["database"]["dsn"] = redact_dsn(shown["database"]["dsn"])
    text += yaml.safe_dump(shown, sort_keys=False)
    write_text(text, out / STUDY_CONFIG)
    write_text(_config_html(text), out / STUDY_CONFIG_HTML)
    return written


def _config_html(text: str) -> str:
    """The YAML as a standalone highlighted page (the report shows HTML inline)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import YamlLexer

    return highlight(text, YamlLexer(), HtmlFormatter(full=True, title="Effective configuration"))


def _plain(obj: Any) -> Any:
    """Snakemake hands over its own mapping types; YAML wants plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
