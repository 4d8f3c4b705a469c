"""Rule ``clinical_events_report``: the alarm table and figure, from the event metrics
(:mod:`vitalfm.evaluation.event_metrics`) and the test windows' event tables.

Shown runs: each model's zero-shot run and its **validation-best** setting (the registry's
selection metric, min-max MAE over all vitals on validation, as every "best" of the study), so
the table and ROC curves compare what the study would pick, not the best on test. The whole
grid of runs is in ``results/metrics/clinical_events.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vitalfm.errors import DataError
from vitalfm.evaluation.event_metrics import roc_points
from vitalfm.evaluation.events import NEW_ONSET, parse_events
from vitalfm.evaluation.run_summary import REPORT_SPLIT
from vitalfm.reporting import CLINICAL_EVENTS
from vitalfm.reporting.formatting import Table, fmt_ci, fmt_int, fmt_number
from vitalfm.reporting.lookups import chosen_on_validation
from vitalfm.reporting.plotting import family_colors, placeholder

TITLE = "Alarms from forecasts: clinical events on test windows"
GROUP_LABELS = {"new_onset": "new onset", "ongoing": "ongoing"}


def best_runs(runs: Sequence[Any], metrics: pd.DataFrame) -> dict[str, str]:
    """{model: its run chosen on validation} (a model's only run when it has one)."""
    chosen = {}
    for model in dict.fromkeys(r.model for r in runs):
        ids = [r.run_id for r in runs if r.model == model]
        chosen[model] = (chosen_on_validation(metrics, ids) if len(ids) > 1 else None) or ids[0]
    return chosen


def shown_runs(runs: Sequence[Any], metrics: pd.DataFrame) -> list[str]:
    """Each model's zero-shot run and its validation-best run, in the config's order."""
    best = set(best_runs(runs, metrics).values())
    return [r.run_id for r in runs if r.is_zero_shot or r.run_id in best]


def _cell(frame: pd.DataFrame, metric: str, digits: int = 3) -> tuple[str, float]:
    row = frame[frame["metric"] == metric]
    if row.empty:
        return "–", np.nan
    r = row.iloc[0]
    return fmt_ci(r["value"], r["ci_low"], r["ci_high"], digits), float(r["value"])


def _difference(frame: pd.DataFrame, ref: str) -> str:
    row = frame[frame["metric"] == "auroc"]
    if row.empty or not row.iloc[0][f"{ref}_run"]:
        return "–"
    r = row.iloc[0]
    return fmt_ci(r[f"{ref}_difference"], r[f"{ref}_ci_low"], r[f"{ref}_ci_high"], 2)


def events_table(
    events: pd.DataFrame, runs: Sequence[Any], metrics: pd.DataFrame, cfg: Mapping[str, Any]
) -> Table:
    """One row per (event, window group, shown run) on test; AUROC's best per (event, group)
    in bold."""
    order = {e.name: e for e in parse_events(cfg)}
    shown = shown_runs(runs, metrics)
    test = events[(events["split"] == REPORT_SPLIT) & events["run"].isin(shown)]
    rows, bold = [], []
    for name, event in order.items():
        for group in ("new_onset", "ongoing"):
            cells = test[(test["event"] == name) & (test["group"] == group)]
            aurocs = []
            for run in shown:
                frame = cells[cells["run"] == run]
                if frame.empty:
                    continue
                first = frame.iloc[0]
                n_windows = first["n_windows"]
                auroc, auroc_value = _cell(frame, "auroc")
                aurocs.append(auroc_value)
                rows.append(
                    {
                        "event": f"{name} ({event.describe()})",
                        "windows": GROUP_LABELS[group],
                        "run": run,
                        "n (events)": f"{fmt_int(n_windows)} ({fmt_int(first['n_positive'])})",
                        "prevalence": _cell(frame, "prevalence")[0].split(" [")[0],
                        "AUROC": auroc,
                        "AUPRC": _cell(frame, "auprc")[0],
                        "Brier": _cell(frame, "brier")[0],
                        "sensitivity": _cell(frame, "sensitivity", 2)[0],
                        "false alarms": _cell(frame, "false_alarm_rate", 2)[0],
                        "lead (min)": _cell(frame, "lead_minutes", 3)[0],
                        "ΔAUROC vs zero-shot": _difference(frame, "zero_shot"),
                        "ΔAUROC vs persistence": _difference(frame, "persistence"),
                    }
                )
            values = np.asarray(aurocs, dtype=float)
            top = (
                np.isfinite(values) & (values == np.nanmax(values))
                if np.isfinite(values).sum() > 1
                else np.zeros(len(values), bool)
            )
            bold.extend(bool(t) for t in top)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame({"event": [], "windows": [], "run": []})
        mask = None
    else:
        mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
        mask["AUROC"] = bold
    alarm = cfg["evaluation"]["event_alarm_probability"]
    return Table(
        CLINICAL_EVENTS,
        TITLE,
        frame,
        notes=[
            "Each model's zero-shot run and its setting chosen on validation (min-max MAE).",
            "Probability of the event among the horizon's observed points: from sample paths "
            "where the model has them, else from its quantiles (interpolated, comonotone "
            "across steps).",
            f"Sensitivity, false alarms and lead time at alarm probability {alarm:g}; lead "
            "time (minutes the forecast's alarm step precedes the first observed event step) "
            "over detected new-onset events.",
            "Ongoing: the context already shows the event. 95% intervals over test patients "
            "(and seeds); differences are paired on the same resamples.",
            f"–: fewer than {cfg['evaluation']['event_min_windows']} windows with the event or "
            "without it (evaluation.event_min_windows): AUROC, AUPRC, sensitivity and lead time "
            "are not estimated from so few events.",
        ],
        bold=mask,
    )


def events_figure(
    events: pd.DataFrame,
    runs: Sequence[Any],
    metrics: pd.DataFrame,
    cfg: Mapping[str, Any],
    window_tables: Mapping[str, pd.DataFrame],
) -> plt.Figure:
    """Per event (a row): test AUROC of every run on new-onset windows with its 95% interval,
    and the ROC curves of each model's validation-best run (``window_tables``: run id -> its
    first replicate's test event table)."""
    order = [e for e in parse_events(cfg) if e.name in set(events["event"])]
    if not order:
        return placeholder("No clinical event was scored (evaluation.events is empty).")
    test = events[
        (events["split"] == REPORT_SPLIT)
        & (events["group"] == NEW_ONSET)
        & (events["metric"] == "auroc")
    ]
    run_ids = [r.run_id for r in runs]
    minimum = int(cfg["evaluation"]["event_min_windows"])
    best = best_runs(runs, metrics)
    colors = family_colors([r.model for r in runs])
    model_of = {r.run_id: r.model for r in runs}
    fig, axes = plt.subplots(
        len(order),
        2,
        figsize=(10, 0.6 + max(2.4, 0.22 * len(run_ids)) * len(order)),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [1.6, 1]},
    )
    for (left, right), event in zip(axes, order, strict=True):
        cells = test[test["event"] == event.name].set_index("run")
        ids = [r for r in run_ids if r in cells.index]
        y = np.arange(len(ids))[::-1]
        for yi, run in zip(y, ids, strict=True):
            r = cells.loc[run]
            low = max(0.0, r["value"] - r["ci_low"]) if np.isfinite(r["ci_low"]) else 0.0
            high = max(0.0, r["ci_high"] - r["value"]) if np.isfinite(r["ci_high"]) else 0.0
            left.errorbar(
                r["value"],
                yi,
                xerr=[[low], [high]],
                fmt="o" if run in best.values() else "s",
                ms=4,
                color=colors[model_of[run]],
                capsize=2,
            )
        if not np.isfinite(cells.loc[ids, "value"].to_numpy(float)).any():
            left.text(
                0.5,
                0.5,
                f"fewer than {minimum} new-onset test windows with the event or without it:\n"
                "AUROC not estimated (evaluation.event_min_windows)",
                ha="center",
                va="center",
                fontsize=7,
                transform=left.transAxes,
            )
        left.axvline(0.5, color="0.6", lw=0.8, ls=":")
        left.set_yticks(y, ids, fontsize=6)
        left.set_xlim(0.0, 1.0)
        left.set_xlabel("AUROC (new-onset test windows, 95% CI)")
        left.set_title(f"{event.name}: {event.describe()}", fontsize=8, loc="left")
        right.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        drawn = 0
        for model, run in best.items():
            table = window_tables.get(run)
            if table is None:
                continue
            part = table[(table["event"] == event.name) & ~table["ongoing"]]
            y_true = part["truth"].to_numpy(bool)
            if min(y_true.sum(), (~y_true).sum()) < minimum:
                continue
            fpr, tpr = roc_points(y_true, part["probability"].to_numpy(float))
            auc = cells.loc[run, "value"] if run in cells.index else np.nan
            # straight segments between distinct scores: tied scores trace the diagonal the
            # Mann-Whitney half-count integrates
            right.plot(fpr, tpr, color=colors[model], lw=1.1, label=f"{run} ({fmt_number(auc, 2)})")
            drawn += 1
        if drawn:
            right.legend(fontsize=5.5, loc="lower right", frameon=False)
        else:
            right.text(
                0.5,
                0.5,
                f"fewer than {minimum} windows with or without the event",
                ha="center",
                fontsize=7,
            )
        right.set_xlim(0, 1)
        right.set_ylim(0, 1.01)
        right.set_xlabel("false-alarm rate")
        right.set_ylabel("sensitivity")
        right.set_title("ROC, each model's validation-best run", fontsize=8, loc="left")
    return fig


def build_clinical_events(
    cfg: Mapping[str, Any],
    events_path: str | Path,
    metrics_path: str | Path,
    window_tables: Mapping[str, str | Path],
    table_dir: str | Path,
    figure_dir: str | Path,
) -> None:
    """Write the ``clinical_events`` table (CSV, Markdown, LaTeX, HTML) and figure (PNG, PDF)."""
    from vitalfm.reporting.formatting import write_table
    from vitalfm.reporting.plotting import save_figure
    from vitalfm.study import study_runs

    runs = study_runs(cfg)
    if not runs:
        raise DataError("the config has no runs", "list models and methods in the config")
    events = pd.read_parquet(events_path)
    metrics = pd.read_parquet(metrics_path)
    write_table(events_table(events, runs, metrics, cfg), table_dir)
    best = set(best_runs(runs, metrics).values())
    tables = {run: pd.read_parquet(path) for run, path in window_tables.items() if run in best}
    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "vitalfm"})
    save_figure(
        events_figure(events, runs, metrics, cfg, tables), CLINICAL_EVENTS, Path(figure_dir)
    )
