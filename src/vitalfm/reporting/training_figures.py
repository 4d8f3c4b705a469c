"""The loss-curves figure: per trained model, the family's objective above the validation
forecast metrics the trainer records, with the step whose weights were kept."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from vitalfm.evaluation.metric_registry import CRPS, MAE
from vitalfm.reporting.inputs import ResultsLayout, load_history
from vitalfm.reporting.plotting import placeholder


def _history_column(history: pd.DataFrame, name: str) -> pd.Series | None:
    """A numeric history column, or None if the history lacks it or holds no value of it
    (histories written before validation forecasts were recorded)."""
    if name not in history.columns:
        return None
    values = pd.to_numeric(history[name], errors="coerce")
    return values if values.notna().any() else None


def best_step_of(history: pd.DataFrame) -> tuple[int | None, str]:
    """(the step whose weights training kept, the metric it was chosen on).

    Read from the history's ``best_step`` and ``selection_metric`` columns (their last row);
    an older history without them selected on the validation loss: its first minimum.
    """
    metric = "loss"
    if "selection_metric" in history.columns and history["selection_metric"].notna().any():
        metric = str(history["selection_metric"].dropna().iloc[-1])
    best = _history_column(history, "best_step")
    if best is not None:
        return int(best.dropna().iloc[-1]), metric
    loss = pd.to_numeric(history["validation_loss"], errors="coerce")
    if loss.notna().any():
        return int(history["step"].iloc[int(np.nanargmin(loss.to_numpy()))]), metric
    return None, metric


def _loss_grid(n: int, max_cols: int = 3) -> tuple[plt.Figure, list[tuple[Any, Any]]]:
    """Per model a pair of panels, the objective above the validation forecast metric."""
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        2 * rows,
        cols,
        figsize=(4.2 * cols, 4.6 * rows),
        squeeze=False,
        layout="constrained",
        height_ratios=[3, 2] * rows,
    )
    pairs = []
    for k in range(rows * cols):
        row, col = divmod(k, cols)
        top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
        if k >= n:
            top.set_visible(False)
            bottom.set_visible(False)
            continue
        bottom.sharex(top)
        top.tick_params(labelbottom=False)
        pairs.append((top, bottom))
    return fig, pairs


def _mark_best(ax: Any, x: float, y: float, color: Any) -> None:
    if np.isfinite(y):
        ax.plot([x], [y], marker="*", ms=11, color=color, mec="black", mew=0.6, ls="none")


def loss_figure(data: pd.DataFrame, layout: ResultsLayout) -> plt.Figure:
    """Per trained model: the family's objective (training and validation) above the
    validation forecast metrics the Trainer records (CRPS and MAE on the min-max scale), one
    colour per method setting, a star at the step whose weights were kept, on the curve of
    the metric that chose it."""
    trained = data[data["trains"]]
    if trained.empty:
        return placeholder("This study trains no run, so there are no loss curves.")
    models = list(dict.fromkeys(trained["model"]))
    fig, pairs = _loss_grid(len(models))
    cmap = plt.get_cmap("tab10")
    for (top, bottom), model in zip(pairs, models, strict=True):
        runs = trained[trained["model"] == model]
        forecasts = False
        for i, (_, run) in enumerate(runs.iterrows()):
            history = load_history(layout, run["first_replicate"])
            color = cmap(i % 10)
            val = history.dropna(subset=["validation_loss"])
            train = history.dropna(subset=["train_loss"])
            top.plot(
                val["step"], val["validation_loss"], color=color, marker=".", label=run["setting"]
            )
            top.plot(train["step"], train["train_loss"], color=color, ls=":", alpha=0.7)
            best, metric = best_step_of(history)
            crps = _history_column(history, "validation_crps")
            mae = _history_column(history, "validation_mae")
            if crps is not None:
                forecasts = True
                bottom.plot(history["step"], crps, color=color, marker=".")
            if mae is not None:
                forecasts = True
                bottom.plot(history["step"], mae, color=color, ls="--", alpha=0.7)
            if best is None:
                continue
            at = history["step"] == best
            chosen = {CRPS.name: crps, MAE.name: mae}.get(metric)
            if chosen is not None and at.any():
                _mark_best(bottom, best, float(chosen[at].iloc[-1]), color)
            elif at.any():
                _mark_best(
                    top, best, float(val.loc[val["step"] == best, "validation_loss"].max()), color
                )
        top.set_title(f"{runs['family'].iloc[0]}: {model}", fontsize=9)
        top.set_ylabel("loss (the family's own objective)", fontsize=8)
        top.legend(fontsize=6, ncol=2)
        top.grid(alpha=0.3)
        bottom.set_xlabel("training step")
        bottom.set_ylabel("validation forecast\n(min-max scale)", fontsize=8)
        bottom.grid(alpha=0.3)
        if not forecasts:
            bottom.text(
                0.5,
                0.5,
                "no validation forecasts recorded\n(selected on the validation loss)",
                transform=bottom.transAxes,
                ha="center",
                va="center",
                fontsize=7,
            )
    handles = [
        Line2D([], [], color="gray", marker=".", label="validation loss (top), CRPS (bottom)"),
        Line2D([], [], color="gray", ls=":", label="training loss"),
        Line2D([], [], color="gray", ls="--", label="validation MAE"),
        Line2D(
            [], [], color="gray", marker="*", ms=9, mec="black", ls="none", label="weights kept"
        ),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle(
        "Training: the family's objective (top) and the validation forecast (bottom)\n"
        "star: the step whose weights were kept, on the metric that chose it",
        fontsize=9,
    )
    return fig
