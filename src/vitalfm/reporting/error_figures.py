"""The error figures: error against LoRA rank, error against trainable parameters with the
Pareto front, and error by horizon step.

Errors are test min-max-scale MAE over all vitals (the mean over a run's seeds) with 95%
intervals over patients and seeds, read from ``metrics.parquet``; every "best" a figure picks is
chosen on validation, and the oracle and persistence are reference lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from vitalfm.evaluation.metric_registry import MAE
from vitalfm.evaluation.run_summary import REPORT_SPLIT
from vitalfm.reporting.lookups import RANKED_KINDS, ZERO_SHOT
from vitalfm.reporting.plotting import (
    ERROR_LABEL,
    best_of,
    draw_references,
    family_colors,
    kind_marker,
    models_only,
    panel_grid,
    placeholder,
    references,
    yerr,
)


def pareto_front(cost: Sequence[float], error: Sequence[float]) -> np.ndarray:
    """Which points no other point dominates (as cheap or cheaper and as good or better, one
    of them strictly). Points with a missing coordinate are never on the front."""
    x = np.asarray(cost, dtype=float)
    y = np.asarray(error, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = ok & (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        front[i] = not others.any()
    return front


def rank_sweep_figure(data: pd.DataFrame) -> plt.Figure:
    """Error against rank per family: one line per model and ranked method, its zero-shot
    error as a dashed line of the same colour."""
    ranked = data[data["kind"].isin(RANKED_KINDS) & data["rank"].notna()]
    swept = ranked[ranked.groupby(["model", "method"])["rank"].transform("nunique") >= 2]
    if swept.empty:
        return placeholder("This study ran no rank sweep (no method at two or more ranks).")
    families = list(dict.fromkeys(swept["family"]))
    fig, axes = panel_grid(len(families))
    cmap = plt.get_cmap("tab10")
    for ax, family in zip(axes, families, strict=True):
        part = swept[swept["family"] == family]
        for i, ((model, method), group) in enumerate(part.groupby(["model", "method"], sort=False)):
            group = group.sort_values("rank")
            color = cmap(i % 10)
            ax.errorbar(
                group["rank"],
                group["value"],
                yerr=yerr(group),
                marker=kind_marker(group["kind"].iloc[0]),
                color=color,
                capsize=3,
                label=f"{model} {method}",
            )
            zero = data[(data["model"] == model) & (data["kind"] == ZERO_SHOT)]
            if len(zero) and np.isfinite(zero["value"].iloc[0]):
                ax.axhline(zero["value"].iloc[0], color=color, ls="--", lw=1, alpha=0.8)
        draw_references(ax, data)
        ranks = sorted(part["rank"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [f"{int(r)}" for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("rank")
        ax.set_ylabel(ERROR_LABEL)
        ax.set_title(family)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Test error against adapter rank (dashed: the model's zero-shot error; dotted: the "
        "oracle; dash-dot: persistence)",
        fontsize=10,
    )
    return fig


def pareto_figure(data: pd.DataFrame) -> plt.Figure:
    """Error against trainable parameters. Runs that train nothing (zero-shot, persistence)
    sit on a separate panel at the left, since 0 has no place on a log axis. The oracle is a
    dotted line across both panels."""
    oracle_lines = [r for r in references(data) if r[0].startswith("oracle")]
    data = models_only(data)
    data = data[np.isfinite(data["value"])].reset_index(drop=True)
    if data.empty:
        return placeholder("No run has an overall error to plot.")
    colors = family_colors(data["family"])
    front = pareto_front(data["trainable"], data["value"])
    zero = data["trainable"] <= 0
    fig, (left, right) = plt.subplots(
        1,
        2,
        sharey=True,
        figsize=(10, 5.2),
        width_ratios=[1, 5],
        layout="constrained",
    )
    families = list(dict.fromkeys(data.loc[zero, "family"]))  # the left panel's categories
    for i, row in data.iterrows():
        ax = left if zero[i] else right
        x = families.index(row["family"]) if zero[i] else row["trainable"]
        ax.errorbar(
            x,
            row["value"],
            yerr=yerr(data.loc[[i]]),
            marker=kind_marker(row["kind"]),
            color=colors[row["family"]],
            mfc=colors[row["family"]] if not row["baseline"] else "white",
            ms=7,
            capsize=2,
            ls="none",
            alpha=0.9,
        )
        if front[i]:
            ax.annotate(
                row["run"],
                (x, row["value"]),
                xytext=(4, -10),
                textcoords="offset points",
                fontsize=6,
                in_layout=False,  # a label may overhang; it must not squeeze the panels
            )
    left.set_xlim(-0.7, max(len(families), 1) - 0.3)
    left.set_xticks(range(len(families)), families, rotation=60, fontsize=7)
    left.set_xlabel("0 trainable")
    left.set_ylabel(ERROR_LABEL)
    trained = data[~zero]
    if len(trained):
        right.set_xscale("log")
        lo, hi = trained["trainable"].min(), trained["trainable"].max()
        right.set_xlim(lo / 2, hi * 2)
        points = data[front].sort_values(["trainable", "value"])
        xs = [lo / 2 if t <= 0 else t for t in points["trainable"]]
        ys = list(points["value"])
        right.step([*xs, hi * 2], [*ys, ys[-1]], where="post", color="black", lw=1, alpha=0.6)
    else:
        right.text(0.5, 0.5, "no run trains parameters", transform=right.transAxes, ha="center")
    right.set_xlabel("trainable parameters (log scale)")
    right.set_facecolor("none")  # a label of the left panel may overhang into this one
    right.tick_params(labelleft=False)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        for _, value, style in oracle_lines:
            ax.axhline(value, lw=1, **style)
    handles = [Line2D([], [], color=c, marker="o", ls="none", label=f) for f, c in colors.items()]
    kinds = list(dict.fromkeys(data["kind"]))
    handles += [
        Line2D([], [], color="gray", marker=kind_marker(k), ls="none", label=k) for k in kinds
    ]
    handles.append(Line2D([], [], color="black", alpha=0.6, label="Pareto front"))
    handles += [Line2D([], [], lw=1, label=label, **style) for label, _, style in oracle_lines]
    # below the panels: inside, it would hide the points in its corner
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=9)
    fig.suptitle(
        "Error against trainable parameters (open markers: baselines; labels: the front)",
        fontsize=10,
    )
    return fig


def horizon_figure(metrics: pd.DataFrame, data: pd.DataFrame, frequency_minutes: int) -> plt.Figure:
    """Test error by horizon step, one panel per model: zero-shot, every method (a swept method
    at its best setting on validation, named under the panel's title), the best baseline (on
    validation) and the oracle; one legend."""
    sel = metrics[
        (metrics["metric"] == MAE.name)
        & (metrics["scale"] == "minmax")
        & (metrics["vital"] == "all")
        & (metrics["step"] > 0)
        & (metrics["split"] == REPORT_SPLIT)
    ]
    if sel.empty:
        return placeholder("The metrics hold no per-step errors.")
    oracles = list(data.loc[data["oracle"], "run"]) if "oracle" in data else []
    data = models_only(data)
    foundation = data[~data["baseline"]]
    models = list(dict.fromkeys(foundation["model"])) or list(dict.fromkeys(data["model"]))
    chosen = best_of(data[data["baseline"]])
    best_base = chosen["run"] if chosen is not None else None
    fig, axes = panel_grid(len(models), height=3.0)
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(data.loc[data["kind"] != ZERO_SHOT, "method"]))
    hours = frequency_minutes / 60
    legend: dict[str, Line2D] = {}

    def draw(ax, run_id, label, color, ls="-"):
        part = sel[sel["run"] == run_id].sort_values("step")
        if part.empty:
            return
        x = part["step"] * hours
        (line,) = ax.plot(x, part["value"], color=color, ls=ls, lw=1.4)
        ax.fill_between(x, part["ci_low"], part["ci_high"], color=color, alpha=0.12, lw=0)
        legend.setdefault(label, line)

    for ax, model in zip(axes, models, strict=True):
        runs = data[data["model"] == model]
        for _, run in runs[runs["kind"] == ZERO_SHOT].iterrows():
            draw(ax, run["run"], "zero-shot", "black")
        picked = []
        for method, group in runs[runs["kind"] != ZERO_SHOT].groupby("method", sort=False):
            best = group.iloc[0]
            if len(group) > 1 and best_of(group) is not None:
                best = best_of(group)
                picked.append(str(best["setting"]))
            draw(ax, best["run"], str(method), cmap(methods.index(method) % 10))
        if best_base is not None and best_base not in set(runs["run"]):
            draw(ax, best_base, f"best baseline ({best_base})", "gray", ls="--")
        for oracle in oracles:
            draw(ax, oracle, "oracle (bound)", "black", ls=":")
        title = f"{runs['family'].iloc[0]}: {model}"
        if picked:
            title += "\nbest of each sweep (on validation): " + ", ".join(picked)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("hours ahead")
        ax.set_ylabel(ERROR_LABEL, fontsize=7)
        ax.grid(alpha=0.3)
    fig.legend(
        legend.values(),
        legend.keys(),
        loc="outside lower center",
        ncol=min(len(legend), 6),
        fontsize=7,
    )
    fig.suptitle(
        "Test error by horizon step (bands: 95% intervals over patients and seeds)", fontsize=10
    )
    return fig
