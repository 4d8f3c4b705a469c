"""The example-forecasts figure: test windows of a few stays drawn with a fixed seed, each
family's zero-shot form against its best adapted run (chosen on validation), with the truth,
the median and the 80% and 95% intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from vitalfm.evaluation.quantiles import CENTRAL_INTERVALS, quantile_column
from vitalfm.reporting.inputs import ResultsLayout, require
from vitalfm.reporting.lookups import ZERO_SHOT
from vitalfm.reporting.plotting import best_of, models_only, placeholder

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


def _example_runs(data: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per foundation family: [(label, first replicate)] for the zero-shot form of the family's
    best adapted model and that adapted run (chosen on validation MAE); then the oracle."""
    out = []
    models = models_only(data)
    foundation = models[~models["baseline"]]
    for family, runs in foundation.groupby("family", sort=False):
        best = best_of(runs[runs["trains"]])
        chosen: list[tuple[str, str]] = []
        if best is not None:
            zero = runs[(runs["model"] == best["model"]) & (runs["kind"] == ZERO_SHOT)]
            if len(zero):
                chosen.append(("zero-shot", zero["first_replicate"].iloc[0]))
            chosen.append(("best adapted", best["first_replicate"]))
        else:
            zero = best_of(runs[runs["kind"] == ZERO_SHOT])
            if zero is not None:
                chosen.append(("zero-shot", zero["first_replicate"]))
        if chosen:
            out.append((str(family), chosen))
    if "oracle" in data and out:
        for _, run in data[data["oracle"]].iterrows():
            out.append(("oracle", [("bound", run["first_replicate"])]))
    return out


#: The intervals drawn as bands, widest first: (nominal coverage, fill alpha).
BANDS = ((0.95, 0.15), (0.8, 0.3))
FORECAST_COLUMNS = [
    "window_id",
    "icustay_id",
    "vital",
    "step",
    "y_true",
    "observed",
    "median",
    *(
        quantile_column(level)
        for level in sorted({level for nominal, _ in BANDS for level in CENTRAL_INTERVALS[nominal]})
    ),
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
        return placeholder("No foundation-model run has forecasts to show.")
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
        return placeholder("No test window was forecast by every run shown.")
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
            for nominal, alpha in BANDS:
                lo, hi = (quantile_column(level) for level in CENTRAL_INTERVALS[nominal])
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
