"""The study's figures (matplotlib, Agg): error against LoRA rank, error against trainable
parameters with the Pareto front, error by horizon step, example forecasts, loss curves.

Errors are test min-max-scale MAE over all vitals (the mean over a run's seeds) with 95%
intervals over patients and seeds, read from ``metrics.parquet``; nothing is rescored here.
Every "best" a figure picks (of a sweep, a family, the baselines) is chosen on validation. With
the synthetic database the oracle (the generator's own forecast) is drawn as a reference line,
as is persistence. Each figure is written as PNG and PDF. A study without what a figure needs
(no rank sweep, no trained run) gets a figure that says so, so the workflow's outputs do not
depend on which families and methods the config lists.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from vitalfm.errors import DataError
from vitalfm.evaluation.aggregate import REPORT_SPLIT, SELECTION_SPLIT
from vitalfm.io import atomic_path
from vitalfm.reporting import FIGURE_FORMATS, FIGURES
from vitalfm.reporting.inputs import (
    ResultsLayout,
    check_runs_scored,
    load_history,
    load_metrics,
    require,
)
from vitalfm.reporting.tables import RANKED_KINDS, overall, run_info
from vitalfm.study import study_runs

log = logging.getLogger(__name__)

ERROR_LABEL = "MAE (min-max scale, all vitals)"
KIND_MARKERS = {
    "zero_shot": "o",
    "lora": "s",
    "dora": "D",
    "vera": "^",
    "fourierft": "v",
    "bitfit": "P",
    "layernorm": "X",
    "full": "*",
    "scratch": "h",
}
#: Vitals the examples show, in turn (the study's targets); else the first configured vital.
EXAMPLE_VITALS = ("heart_rate", "mbp")
UNITS = {
    "heart_rate": "bpm",
    "sbp": "mmHg",
    "dbp": "mmHg",
    "mbp": "mmHg",
    "resp_rate": "/min",
    "spo2": "%",
    "temperature": "°C",
}


# --- the Pareto front ----------------------------------------------------------------------


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


# --- helpers -------------------------------------------------------------------------------


def _family_colors(families: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {family: cmap(i % 10) for i, family in enumerate(dict.fromkeys(families))}


def _yerr(frame: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars from the intervals (0 where an interval is missing)."""
    low = (frame["value"] - frame["ci_low"]).clip(lower=0).fillna(0)
    high = (frame["ci_high"] - frame["value"]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _grid(n: int, width: float = 4.2, height: float = 3.2, max_cols: int = 3) -> tuple:
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _placeholder(message: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def save_figure(fig: plt.Figure, name: str, out_dir: Path) -> dict[str, Path]:
    """PNG and PDF, each written atomically."""
    paths = {}
    for fmt in FIGURE_FORMATS:
        target = out_dir / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            # Fixed metadata so a rerun on the same numbers gives the same PDF.
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta)
        paths[fmt] = target
    plt.close(fig)
    return paths


def _with_overall(info: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The run table with each run's test MAE (value, ci_low, ci_high) and its validation MAE
    (``chosen_by``, what every "best" is picked on)."""
    mae = overall(metrics, "mae")[["value", "ci_low", "ci_high"]]
    validation = overall(metrics, "mae", split=SELECTION_SPLIT)["value"].rename("chosen_by")
    return info.join(mae, on="run").join(validation, on="run")


def _best(frame: pd.DataFrame) -> pd.Series | None:
    """The row of ``frame`` with the lowest validation MAE (None if none has one)."""
    finite = frame[np.isfinite(frame["chosen_by"])]
    return finite.loc[finite["chosen_by"].idxmin()] if len(finite) else None


def _references(data: pd.DataFrame) -> list[tuple[str, float, dict[str, Any]]]:
    """(label, test MAE, line style) of the oracle and persistence, where the study has them."""
    lines = []
    for _, run in data.iterrows():
        if run.get("oracle") and np.isfinite(run["value"]):
            lines.append(("oracle (bound)", run["value"], {"color": "black", "ls": ":"}))
        elif run["family"] == "persistence" and np.isfinite(run["value"]):
            lines.append(("persistence", run["value"], {"color": "0.45", "ls": "-."}))
    return lines


def _draw_references(ax: Any, data: pd.DataFrame) -> None:
    for label, value, style in _references(data):
        ax.axhline(value, lw=1, alpha=0.9, label=label, **style)


def _models_only(data: pd.DataFrame) -> pd.DataFrame:
    """The runs that are models (the oracle is a reference line, not a point)."""
    return data[~data["oracle"]] if "oracle" in data else data


# --- figures -------------------------------------------------------------------------------


def rank_sweep_figure(data: pd.DataFrame) -> plt.Figure:
    """Error against rank per family: one line per model and ranked method, its zero-shot
    error as a dashed line of the same colour."""
    ranked = data[data["kind"].isin(RANKED_KINDS) & data["rank"].notna()]
    swept = ranked[ranked.groupby(["model", "method"])["rank"].transform("nunique") >= 2]
    if swept.empty:
        return _placeholder("This study ran no rank sweep (no method at two or more ranks).")
    families = list(dict.fromkeys(swept["family"]))
    fig, axes = _grid(len(families))
    cmap = plt.get_cmap("tab10")
    for ax, family in zip(axes, families, strict=True):
        part = swept[swept["family"] == family]
        for i, ((model, method), group) in enumerate(part.groupby(["model", "method"], sort=False)):
            group = group.sort_values("rank")
            color = cmap(i % 10)
            ax.errorbar(
                group["rank"],
                group["value"],
                yerr=_yerr(group),
                marker=KIND_MARKERS.get(group["kind"].iloc[0], "o"),
                color=color,
                capsize=3,
                label=f"{model} {method}",
            )
            zero = data[(data["model"] == model) & (data["kind"] == "zero_shot")]
            if len(zero) and np.isfinite(zero["value"].iloc[0]):
                ax.axhline(zero["value"].iloc[0], color=color, ls="--", lw=1, alpha=0.8)
        _draw_references(ax, data)
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
    references = [r for r in _references(data) if r[0].startswith("oracle")]
    data = _models_only(data)
    data = data[np.isfinite(data["value"])].reset_index(drop=True)
    if data.empty:
        return _placeholder("No run has an overall error to plot.")
    colors = _family_colors(data["family"])
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
            yerr=_yerr(data.loc[[i]]),
            marker=KIND_MARKERS.get(row["kind"], "o"),
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
        for _, value, style in references:
            ax.axhline(value, lw=1, **style)
    handles = [Line2D([], [], color=c, marker="o", ls="none", label=f) for f, c in colors.items()]
    kinds = list(dict.fromkeys(data["kind"]))
    handles += [
        Line2D([], [], color="gray", marker=KIND_MARKERS.get(k, "o"), ls="none", label=k)
        for k in kinds
    ]
    handles.append(Line2D([], [], color="black", alpha=0.6, label="Pareto front"))
    handles += [Line2D([], [], lw=1, label=label, **style) for label, _, style in references]
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
        (metrics["metric"] == "mae")
        & (metrics["scale"] == "minmax")
        & (metrics["vital"] == "all")
        & (metrics["step"] > 0)
        & (metrics["split"] == REPORT_SPLIT)
    ]
    if sel.empty:
        return _placeholder("The metrics hold no per-step errors.")
    oracles = list(data.loc[data["oracle"], "run"]) if "oracle" in data else []
    data = _models_only(data)
    foundation = data[~data["baseline"]]
    models = list(dict.fromkeys(foundation["model"])) or list(dict.fromkeys(data["model"]))
    chosen = _best(data[data["baseline"]])
    best_base = chosen["run"] if chosen is not None else None
    fig, axes = _grid(len(models), height=3.0)
    cmap = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(data.loc[data["kind"] != "zero_shot", "method"]))
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
        for _, run in runs[runs["kind"] == "zero_shot"].iterrows():
            draw(ax, run["run"], "zero-shot", "black")
        picked = []
        for method, group in runs[runs["kind"] != "zero_shot"].groupby("method", sort=False):
            best = group.iloc[0]
            if len(group) > 1 and _best(group) is not None:
                best = _best(group)
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


def _example_runs(data: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per foundation family: [(label, first replicate)] for the zero-shot form of the family's
    best adapted model and that adapted run (chosen on validation MAE); then the oracle."""
    out = []
    models = _models_only(data)
    foundation = models[~models["baseline"]]
    for family, runs in foundation.groupby("family", sort=False):
        best = _best(runs[runs["trains"]])
        chosen: list[tuple[str, str]] = []
        if best is not None:
            zero = runs[(runs["model"] == best["model"]) & (runs["kind"] == "zero_shot")]
            if len(zero):
                chosen.append(("zero-shot", zero["first_replicate"].iloc[0]))
            chosen.append(("best adapted", best["first_replicate"]))
        else:
            zero = _best(runs[runs["kind"] == "zero_shot"])
            if zero is not None:
                chosen.append(("zero-shot", zero["first_replicate"]))
        if chosen:
            out.append((str(family), chosen))
    if "oracle" in data and out:
        for _, run in data[data["oracle"]].iterrows():
            out.append(("oracle", [("bound", run["first_replicate"])]))
    return out


FORECAST_COLUMNS = [
    "window_id",
    "icustay_id",
    "vital",
    "step",
    "y_true",
    "observed",
    "median",
    "q0.025",
    "q0.1",
    "q0.9",
    "q0.975",
]


def pick_examples(
    forecasts: Mapping[str, pd.DataFrame], vitals: Sequence[str], n: int, seed: int
) -> list[tuple[int, str]]:
    """``n`` (window, vital) pairs from distinct test stays, drawn with a fixed seed among the
    windows every run forecast; per stay the window with the most observed horizon points."""
    wanted = [v for v in EXAMPLE_VITALS if v in vitals] or list(vitals[:1])
    common = None
    for frame in forecasts.values():
        keys = frame.loc[frame["vital"].isin(wanted), ["window_id", "icustay_id", "vital"]]
        keys = keys.drop_duplicates()
        common = keys if common is None else common.merge(keys)
    if common is None or common.empty:
        return []
    first = next(iter(forecasts.values()))
    observed = first[first["observed"]].groupby(["window_id", "vital"]).size().rename("n_obs")
    common = common.join(observed, on=["window_id", "vital"]).fillna({"n_obs": 0})
    stays = np.sort(common["icustay_id"].unique())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(stays, size=min(n, len(stays)), replace=False)
    picks = []
    for k, stay in enumerate(chosen):
        vital = wanted[k % len(wanted)]
        part = common[(common["icustay_id"] == stay) & (common["vital"] == vital)]
        if part.empty:
            part = common[common["icustay_id"] == stay]
        best = part.sort_values(["n_obs", "window_id"], ascending=[False, True]).iloc[0]
        picks.append((int(best["window_id"]), str(best["vital"])))
    return picks


def example_figure(
    data: pd.DataFrame, layout: ResultsLayout, n_examples: int = 3, seed: int = 0
) -> plt.Figure:
    from vitalfm.data.windows import WindowSet

    chosen = _example_runs(data)
    if not chosen:
        return _placeholder("No foundation-model run has forecasts to show.")
    forecasts: dict[str, pd.DataFrame] = {}
    for _, runs in chosen:
        for _, run_id in runs:
            path = require(layout.forecast(run_id), layout.root)
            frame = pd.read_parquet(path, columns=FORECAST_COLUMNS)
            frame["vital"] = frame["vital"].astype(str)
            forecasts[run_id] = frame
    windows = WindowSet.load(require(layout.test_windows, layout.root))
    picks = pick_examples(forecasts, windows.vital_names, n_examples, seed)
    if not picks:
        return _placeholder("No test window was forecast by every run shown.")
    columns = [(family, label, run_id) for family, runs in chosen for label, run_id in runs]
    fig, axes = plt.subplots(
        len(picks),
        len(columns),
        figsize=(3.2 * len(columns), 2.5 * len(picks)),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    dt = windows.frequency_minutes / 60
    context_t = (np.arange(windows.context_steps) - (windows.context_steps - 1)) * dt
    for r, (window_id, vital) in enumerate(picks):
        rows = np.array([window_id])
        context = windows.context(vital, rows)[0]
        seen = windows.context_observed(vital, rows)[0]
        stay = int(windows.window_icustay_ids()[window_id])
        for c, (family, label, run_id) in enumerate(columns):
            ax = axes[r, c]
            frame = forecasts[run_id]
            part = frame[(frame["window_id"] == window_id) & (frame["vital"] == vital)]
            part = part.sort_values("step")
            t = part["step"].to_numpy() * dt
            ax.plot(context_t, context, color="0.6", lw=1)
            ax.plot(context_t[seen], context[seen], "o", color="0.4", ms=2.5)
            for lo, hi, alpha in (("q0.025", "q0.975", 0.15), ("q0.1", "q0.9", 0.3)):
                ok = np.isfinite(part[lo]) & np.isfinite(part[hi])
                if ok.any():
                    ax.fill_between(
                        t[ok], part[lo][ok], part[hi][ok], color="tab:blue", alpha=alpha, lw=0
                    )
            ax.plot(t, part["median"], color="tab:blue", lw=1.4)
            truth = part[part["observed"]]
            ax.plot(truth["step"] * dt, truth["y_true"], "o", color="black", ms=3)
            ax.axvline(0, color="0.8", lw=0.8)
            if r == 0:
                ax.set_title(f"{family}, {label}\n{run_id}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"stay {stay}\n{vital} ({UNITS.get(vital, '')})", fontsize=8)
            if r == len(picks) - 1:
                ax.set_xlabel("hours from forecast start")
            ax.tick_params(labelsize=7)
    handles = [
        Line2D([], [], color="0.6", marker="o", ms=3, label="context (dots: readings)"),
        Line2D([], [], color="black", marker="o", ms=3, ls="none", label="observed truth"),
        Line2D([], [], color="tab:blue", label="median forecast"),
        plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.45, label="80% interval"),
        plt.Rectangle((0, 0), 1, 1, color="tab:blue", alpha=0.15, label="95% interval"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=5, fontsize=7)
    fig.suptitle(
        f"Example test forecasts: {len(picks)} stays drawn with seed {seed}; zero-shot against "
        "the best adapted run of each family (chosen on validation; first seed)",
        fontsize=10,
    )
    return fig


#: How the loss-curve figure names each selection metric.
SELECTION_LABELS = {
    "crps": "validation CRPS",
    "mae": "validation MAE",
    "loss": "validation loss",
}


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
        return _placeholder("This study trains no run, so there are no loss curves.")
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
            chosen = {"crps": crps, "mae": mae}.get(metric)
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


# --- everything ----------------------------------------------------------------------------


def build_figures(
    cfg: Mapping[str, Any],
    results_dir: str | Path = "results",
    out_dir: str | Path | None = None,
    n_examples: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Path]]:
    """Write every figure of :data:`vitalfm.reporting.FIGURES`; {name: {format: path}}."""
    layout = ResultsLayout(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else layout.root / "figures"
    runs = study_runs(cfg)
    if not runs:
        raise DataError("the config has no runs", "list models and methods in the config")
    metrics = load_metrics(layout)
    check_runs_scored(runs, metrics, layout)
    data = _with_overall(run_info(runs, layout, metrics), metrics)
    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "vitalfm"})
    makers = {
        "rank_sweep": lambda: rank_sweep_figure(data),
        "pareto": lambda: pareto_figure(data),
        "error_by_horizon": lambda: horizon_figure(
            metrics, data, int(cfg["grid"]["frequency_minutes"])
        ),
        "example_forecasts": lambda: example_figure(data, layout, n_examples, seed),
        "loss_curves": lambda: loss_figure(data, layout),
    }
    assert list(makers) == list(FIGURES), "FIGURES and build_figures disagree"
    written = {}
    for name, make in makers.items():
        written[name] = save_figure(make(), name, out)
        log.info("figure %s written", name)
    return written
