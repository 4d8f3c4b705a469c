"""The comparison tables: the study's answer (findings), the rank sweep and the PEFT method
comparison, each run set against its zero-shot form, the best baseline and the oracle gap.

Values are test scores; every "best" is chosen on validation (:mod:`vitalfm.reporting.lookups`)
and differences are the metrics rule's paired ones, over the same resampled patients and seeds.
"""

from __future__ import annotations

import pandas as pd

from vitalfm.evaluation.metric_registry import CALIBRATION_ERROR, CRPS, MAE
from vitalfm.models.registry import naive_reference_family
from vitalfm.reporting import TABLES
from vitalfm.reporting.formatting import MISSING, Table, fmt_count, fmt_int, fmt_percent
from vitalfm.reporting.lookups import (
    RANKED_KINDS,
    ZERO_SHOT,
    best_baseline_run,
    chosen_on_validation,
    gap_for,
    model_order,
    models_in_order,
    oracle_runs,
    overall,
    paired_for,
    validation_best_mask,
)
from vitalfm.reporting.result_tables import (
    CAL_NOTE,
    CHOSEN_NOTE,
    CI_NOTE,
    ORACLE_LABEL,
    ORACLE_NOTE,
    SCALE_NOTE,
    SCORED_NOTE,
    count_cell,
    difference_cell,
    fraction_cell,
    gap_cell,
    value_cell,
)

#: The calibration error's column.
CAL = CALIBRATION_ERROR.label


def _swept(info: pd.DataFrame) -> pd.DataFrame:
    """Runs of ranked methods (LoRA, DoRA, VeRA) swept over at least two ranks for a model;
    all ranked runs when nothing is swept."""
    ranked = info[info["kind"].isin(RANKED_KINDS) & info["rank"].notna()]
    counts = ranked.groupby(["model", "method"])["rank"].transform("nunique")
    swept = ranked[counts >= 2]
    return swept if len(swept) else ranked


def rank_sweep(metrics: pd.DataFrame, paired: pd.DataFrame, info: pd.DataFrame) -> Table:
    mae, crps = overall(metrics, MAE.name), overall(metrics, CRPS.name)
    calibration = overall(metrics, CALIBRATION_ERROR.name)
    d_mae = paired_for(paired, ZERO_SHOT, MAE.name)
    d_crps = paired_for(paired, ZERO_SHOT, CRPS.name)
    swept = _swept(info)
    rows, bold_rows = [], []
    for model in model_order(swept):
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
                        "MAE": value_cell(mae, rid),
                        "CRPS": value_cell(crps, rid),
                        CAL: value_cell(calibration, rid),
                        "ΔMAE vs zero-shot": difference_cell(d_mae, rid),
                        "P(better than zero-shot)": fraction_cell(d_mae, rid),
                        "ΔCRPS vs zero-shot": difference_cell(d_crps, rid),
                        "n windows": count_cell(mae, rid, "n_windows"),
                        "n points": count_cell(mae, rid, "n_points"),
                    }
                )
                bold_rows.append({"MAE": bool(flag)})
    for rid in oracle_runs(info) if rows else []:
        reference = {"Family": "oracle", "Model": ORACLE_LABEL}
        rows.append(
            {
                **reference,
                "MAE": value_cell(mae, rid),
                "CRPS": value_cell(crps, rid),
                CAL: value_cell(calibration, rid),
            }
        )
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
        CAL_NOTE,
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
        CAL,
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
    mae, crps = overall(metrics, MAE.name), overall(metrics, CRPS.name)
    calibration = overall(metrics, CALIBRATION_ERROR.name)
    vs_zero = paired_for(paired, ZERO_SHOT, MAE.name)
    vs_base = paired_for(paired, "best_baseline", MAE.name)
    closed = gap_for(gap)
    baseline = best_baseline_run(paired)
    rows, bold_rows = [], []
    for model in model_order(info):
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
                    "MAE": value_cell(mae, rid),
                    "CRPS": value_cell(crps, rid),
                    CAL: value_cell(calibration, rid),
                    "ΔMAE vs zero-shot": difference_cell(vs_zero, rid),
                    "P(better than zero-shot)": fraction_cell(vs_zero, rid),
                    "ΔMAE vs best baseline": "reference"
                    if rid == baseline
                    else difference_cell(vs_base, rid),
                    "P(better than best baseline)": fraction_cell(vs_base, rid),
                    "Gap closed (persistence → oracle)": gap_cell(closed, rid),
                    "n windows": count_cell(mae, rid, "n_windows"),
                    "n points": count_cell(mae, rid, "n_points"),
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
        CAL_NOTE,
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
    mae = overall(metrics, MAE.name)
    calibration = overall(metrics, CALIBRATION_ERROR.name)
    vs_zero = paired_for(paired, ZERO_SHOT, MAE.name)
    cal_vs_zero = paired_for(paired, ZERO_SHOT, CALIBRATION_ERROR.name)
    vs_base = paired_for(paired, "best_baseline", MAE.name)
    closed = gap_for(gap)
    baseline = best_baseline_run(paired)
    by_run = info.set_index("run")
    rows = []
    for model in models_in_order(info, oracle=False):
        runs = info[info["model"] == model]
        if runs["baseline"].any():
            continue
        zero = runs.loc[runs["kind"] == ZERO_SHOT, "run"]
        zero_id = zero.iloc[0] if len(zero) else None
        adapted = runs[runs["trains"]]
        best = chosen_on_validation(metrics, list(adapted["run"])) if len(adapted) else None
        rows.append(
            {
                "Family": runs["family"].iloc[0],
                "Model": model,
                "Zero-shot MAE": value_cell(mae, zero_id) if zero_id else MISSING,
                "Best adapted setting (on validation)": best.split("/", 1)[1] if best else MISSING,
                "Its test MAE": value_cell(mae, best) if best else MISSING,
                "Seeds": fmt_int(by_run.loc[best, "seeds"]) if best else MISSING,
                "Trainable": fmt_count(by_run.loc[best, "trainable"]) if best else MISSING,
                "ΔMAE vs zero-shot": difference_cell(vs_zero, best) if best else MISSING,
                "P(better than zero-shot)": fraction_cell(vs_zero, best) if best else MISSING,
                "Adapted vs zero-shot": _verdict(vs_zero, best) if best else MISSING,
                "ΔMAE vs best baseline": difference_cell(vs_base, best) if best else MISSING,
                "Zero-shot cal. err.": value_cell(calibration, zero_id) if zero_id else MISSING,
                "Its cal. err.": value_cell(calibration, best) if best else MISSING,
                "ΔCal. err. vs zero-shot": difference_cell(cal_vs_zero, best) if best else MISSING,
                "Gap closed (persistence → oracle)": gap_cell(closed, best) if best else MISSING,
                "Zero-shot gap closed": gap_cell(closed, zero_id) if zero_id else MISSING,
                "n windows": count_cell(mae, best or zero_id or "", "n_windows"),
                "n points": count_cell(mae, best or zero_id or "", "n_points"),
            }
        )
    oracles = oracle_runs(info)
    persistence = info.loc[info["family"] == naive_reference_family(), "run"]
    notes = [
        "For each foundation model, its adapted setting with the lowest validation min-max MAE "
        "(all vitals and horizon steps, mean over seeds) set against its zero-shot forecast on "
        "the test set. All settings' test scores are in the method comparison table.",
        "Adapted vs zero-shot: better / worse only when the paired 95% interval of the "
        "difference, over test patients and seeds, excludes zero. A chosen setting with one "
        "seed (training.all_seeds_for) has an interval over patients only; the seed_variance "
        "table shows how far seeds move the settings that ran several.",
        (
            f"Best baseline (chosen on validation): {baseline}, test MAE "
            f"{value_cell(mae, baseline)}."
            if baseline
            else "This study ran no baseline."
        ),
        *(
            [f"Persistence: test MAE {value_cell(mae, persistence.iloc[0])}."]
            if len(persistence)
            else []
        ),
        *[f"{ORACLE_NOTE} Its test MAE {value_cell(mae, rid)}." for rid in oracles],
        "Gap closed: (persistence - run) / (persistence - oracle) of the test MAE: how far the "
        "run gets from persistence toward the best possible forecast.",
        CAL_NOTE,
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
        "Zero-shot cal. err.",
        "Its cal. err.",
        "ΔCal. err. vs zero-shot",
        "Gap closed (persistence → oracle)",
        "Zero-shot gap closed",
        "n windows",
        "n points",
    ]
    return Table("findings", TABLES["findings"], pd.DataFrame(rows, columns=columns), notes)
