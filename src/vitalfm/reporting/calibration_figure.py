"""The calibration figure: observed coverage against each quantile level, per model and vital.

For every forecast level a, the coverage is the share of observed test points with y <= q_a
(the metrics rule's calibration table, with its patient and seed bootstrap interval). The
figure plots coverage - a against a, so that perfect calibration is the zero line and a few
points of miscalibration stay visible (against the diagonal they would not be): a falling
curve is an overconfident forecast (intervals too narrow), a rising one an underconfident
forecast, a curve above or below zero throughout a forecast biased high or low. One row per
foundation model (zero-shot, each method, a swept method at its best setting on validation,
the best baseline dashed and the oracle dotted), a row for the baselines, and one column per
vital (all vitals pooled first). Each legend gives the run's calibration error (all vitals;
the same on both scales), the column of the main tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vitalfm.evaluation.metric_registry import CALIBRATION_ERROR
from vitalfm.evaluation.run_summary import REPORT_SPLIT
from vitalfm.reporting.lookups import ZERO_SHOT, overall, value_of
from vitalfm.reporting.plotting import best_of, models_only, placeholder

#: The y axis: observed coverage minus the nominal level.
DEVIATION_LABEL = "coverage − level"


def _lines(data: pd.DataFrame, model: str | None) -> list[tuple[str, str, dict]]:
    """(run, label, style) of one row: a foundation model's zero-shot run, each method (a swept
    method at its best setting on validation) and the best baseline; ``model`` None: every
    baseline run."""
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(data.loc[data["kind"] != ZERO_SHOT, "method"]))
    if model is None:
        base = data[data["baseline"]]
        return [
            (r["run"], str(r["run"]), {"color": cmap(i % 10)})
            for i, (_, r) in enumerate(base.iterrows())
        ]
    runs = data[data["model"] == model]
    lines = [
        (r["run"], "zero-shot", {"color": "black"})
        for _, r in runs[runs["kind"] == ZERO_SHOT].iterrows()
    ]
    for method, group in runs[runs["kind"] != ZERO_SHOT].groupby("method", sort=False):
        best = best_of(group) if len(group) > 1 else None
        chosen = best if best is not None else group.iloc[0]
        label = str(chosen["setting"]) if len(group) > 1 else str(method)
        lines.append((chosen["run"], label, {"color": cmap(methods.index(method) % 10)}))
    chosen = best_of(data[data["baseline"]])
    if chosen is not None:
        style = {"color": "gray", "ls": "--"}
        lines.append((chosen["run"], f"best baseline ({chosen['run']})", style))
    return lines


def calibration_figure(
    calibration: pd.DataFrame,
    metrics: pd.DataFrame,
    data: pd.DataFrame,
    vitals: Sequence[str],
) -> plt.Figure:
    """Coverage - level against the level on test: rows are models, columns vitals."""
    test = calibration[calibration["split"] == REPORT_SPLIT]
    if test.empty:
        return placeholder("The metrics hold no calibration table (rerun rule metrics).")
    vitals = [v for v in vitals if v in set(test["vital"])]
    oracles = list(data.loc[data["oracle"], "run"]) if "oracle" in data else []
    models = models_only(data)
    rows: list[tuple[str, list[tuple[str, str, dict]]]] = [
        (f"{group['family'].iloc[0]}: {model}", _lines(models, model))
        for model, group in models[~models["baseline"]].groupby("model", sort=False)
    ]
    if models["baseline"].any():
        rows.append(("baselines", _lines(models, None)))
    errors = overall(metrics, CALIBRATION_ERROR.name)
    by_run = {run: part for run, part in test.groupby("run", sort=False)}
    fig, axes = plt.subplots(
        len(rows),
        len(vitals),
        figsize=(2.3 * len(vitals) + 1.6, 1.9 * len(rows) + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for r, (title, lines) in enumerate(rows):
        drawn = [*lines, *((o, "oracle (bound)", {"color": "black", "ls": ":"}) for o in oracles)]
        handles, labels = [], []
        for c, vital in enumerate(vitals):
            ax = axes[r, c]
            ax.axhline(0, color="0.6", lw=0.8)
            for run, label, style in drawn:
                part = by_run.get(run)
                if part is None:
                    continue
                part = part[part["vital"] == vital].sort_values("level")
                if part.empty:
                    continue
                x = part["level"].to_numpy(float)
                (line,) = ax.plot(
                    x, part["coverage"] - x, lw=1.2, marker=".", ms=3, **{"ls": "-", **style}
                )
                low, high = part["ci_low"] - x, part["ci_high"] - x
                ax.fill_between(x, low, high, color=style["color"], alpha=0.12, lw=0)
                if c == 0:
                    error = value_of(errors, run)
                    shown = f"{label} ({error:.3f})" if np.isfinite(error) else label
                    handles.append(line)
                    labels.append(shown)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title("all vitals" if vital == "all" else vital, fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("quantile level")
            if c == 0:
                ax.set_ylabel(f"{title}\n{DEVIATION_LABEL}", fontsize=7)
        axes[r, -1].legend(
            handles,
            labels,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize=6,
            frameon=False,
            title=f"{CALIBRATION_ERROR.label}, all vitals",
            title_fontsize=6,
        )
    axes[0, 0].set_xlim(0, 1)
    fig.suptitle(
        "Calibration on test: observed coverage of each quantile level minus the level "
        "(0 = calibrated; falling = intervals too narrow)",
        fontsize=8,
    )
    return fig
