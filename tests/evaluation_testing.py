"""Shared by the evaluation tests: independent plain-Python references for every metric, toy
windows and forecast tables like the forecast rule's, and small study helpers."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from vitalfm.config import validate_config
from vitalfm.evaluation import scoring, summary
from vitalfm.study import Run
from vitalfm.testing import score_rows, toy_windows

REPO = Path(__file__).resolve().parents[1]
LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RANGES = {"heart_rate": (0.0, 300.0), "mbp": (0.0, 190.0)}
SPLITS = ("validation", "test")


# --- independent reference computations ----------------------------------------------------


def pinball2(y: float, forecast: float, level: float) -> float:
    """Twice the pinball loss of one quantile forecast."""
    return 2 * (level * (y - forecast) if y >= forecast else (1 - level) * (forecast - y))


def dtw_dp(a: list[float], b: list[float]) -> float:
    """Textbook DTW: sqrt of the least summed squared difference along a warping path."""
    cost = [[math.inf] * (len(b) + 1) for _ in range(len(a) + 1)]
    cost[0][0] = 0.0
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            step = min(cost[i - 1][j], cost[i][j - 1], cost[i - 1][j - 1])
            cost[i][j] = (a[i - 1] - b[j - 1]) ** 2 + step
    return math.sqrt(cost[len(a)][len(b)])


def naive_scale(values: list[float], observed: list[bool]) -> float | None:
    """MASE scale: mean |difference| of successive observed readings (None if unusable)."""
    readings = [v for v, o in zip(values, observed, strict=True) if o]
    diffs = [abs(readings[i] - readings[i - 1]) for i in range(1, len(readings))]
    if len(diffs) < 2 or sum(diffs) == 0:
        return None
    return sum(diffs) / len(diffs)


def reference_metrics(points: list[dict]) -> dict[str, float]:
    """Every metric of a list of scored points by loops (keys y, median, q, scale, series)."""
    n = len(points)
    out = {
        "mse": sum((p["y"] - p["median"]) ** 2 for p in points) / n,
        "mae": sum(abs(p["y"] - p["median"]) for p in points) / n,
    }
    nonzero = [p for p in points if p["y"] != 0]
    out["mape"] = (
        100 * sum(abs(p["y"] - p["median"]) / abs(p["y"]) for p in nonzero) / len(nonzero)
        if nonzero
        else math.nan
    )
    crps = [sum(pinball2(p["y"], p["q"][a], a) for a in CRPS_LEVELS) / 9 for p in points]
    out["crps"] = sum(crps) / n
    out["wql"] = sum(crps) / sum(abs(p["y"]) for p in points)
    scaled = [p for p in points if p["scale"] is not None]
    out["mase"] = (
        sum(abs(p["y"] - p["median"]) / p["scale"] for p in scaled) / len(scaled)
        if scaled
        else math.nan
    )
    for name, (lo, hi) in {"coverage_80": (0.1, 0.9), "coverage_95": (0.025, 0.975)}.items():
        usable = [p for p in points if not (math.isnan(p["q"][lo]) or math.isnan(p["q"][hi]))]
        inside = [p for p in usable if p["q"][lo] <= p["y"] <= p["q"][hi]]
        out[name] = len(inside) / len(usable) if usable else math.nan
    deviations = []  # calibration: each level that some point has, y <= q_a among those points
    for a in LEVELS:
        usable = [p for p in points if a in p["q"] and not math.isnan(p["q"][a])]
        if usable:
            below = sum(1 for p in usable if p["y"] <= p["q"][a])
            deviations.append(abs(below / len(usable) - a))
    out["calibration_error"] = sum(deviations) / len(deviations) if deviations else math.nan
    series: dict[tuple, list[dict]] = {}
    for p in points:
        series.setdefault(p["series"], []).append(p)
    distances = []
    for members in series.values():
        members = sorted(members, key=lambda p: p["step"])
        distances.append(dtw_dp([p["median"] for p in members], [p["y"] for p in members]))
    out["dtw"] = sum(distances) / len(distances)
    return out


# --- fixtures -------------------------------------------------------------------------------


def make_windows(seed: int = 3):
    """Toy test windows; stay 0 starts with a flat, fully observed stretch (MASE scale 0)."""
    windows = toy_windows("test", n_stays=3, steps_per_stay=48, stride_steps=4, seed=seed)
    flat = slice(0, windows.context_steps)
    windows.values[flat, 0] = 70.0
    windows.observed[flat, 0] = True
    return windows


def make_forecasts(windows, seed: int = 0, drop_95: bool = False) -> pd.DataFrame:
    """A forecast table like the forecast rule's, with noisy medians and normal quantiles."""
    rng = np.random.default_rng(seed)
    z = {0.025: -1.96, 0.05: -1.645, 0.1: -1.2816, 0.2: -0.8416, 0.3: -0.5244, 0.4: -0.2533}
    z.update({1 - a: -v for a, v in list(z.items())})
    z[0.5] = 0.0
    parts = []
    h = windows.horizon_steps
    for vital in windows.vital_names:
        rows = windows.windows_for(vital)
        truth = windows.horizon(vital, rows)
        mask = windows.horizon_observed_mask(vital, rows)
        median = np.nan_to_num(truth, nan=80.0) + rng.normal(0, 4, truth.shape)
        sigma = rng.uniform(1, 8, truth.shape)
        frame = pd.DataFrame(
            {
                "window_id": np.repeat(rows, h),
                "subject_id": np.repeat(windows.window_subject_ids()[rows], h),
                "icustay_id": np.repeat(windows.window_icustay_ids()[rows], h),
                "vital": vital,
                "step": np.tile(np.arange(1, h + 1, dtype=np.int16), len(rows)),
                "y_true": np.where(mask, truth, np.nan).reshape(-1).astype(np.float32),
                "observed": mask.reshape(-1),
                "median": median.reshape(-1).astype(np.float32),
            }
        )
        for level in LEVELS:
            q = median + z[level] * sigma
            if drop_95 and level in (0.025, 0.05, 0.95, 0.975):
                q = np.full_like(q, np.nan)
            frame[f"q{level:g}"] = q.reshape(-1).astype(np.float32)
        parts.append(frame)
    forecasts = pd.concat(parts, ignore_index=True)
    # a reading of exactly 0 (MAPE must leave it out) and the 0 of the min-max scale
    first = np.flatnonzero(forecasts["observed"].to_numpy())[3]
    forecasts.loc[first, "y_true"] = 0.0
    # a filled point: a value, but not observed -> never scored, however wrong the forecast
    filled = np.flatnonzero(~forecasts["observed"].to_numpy())[0]
    forecasts.loc[filled, ["y_true", "median"]] = [50.0, 5000.0]
    return forecasts


def make_run(model: str, setting: str, kind: str, **extra) -> Run:
    source = {"scratch": True} if extra.pop("baseline", False) else {"standin": "chronos-t5"}
    method = {"kind": kind, "method": kind, **extra}
    return Run(model, "persistence" if "scratch" in source else "chronos", source, setting, method)


def reference_points(forecasts: pd.DataFrame, windows, scale: str) -> list[dict]:
    """The scored points of a forecast table, transformed to ``scale``, with MASE scales."""
    points = []
    for row in forecasts[forecasts["observed"]].to_dict("records"):
        vital, window = row["vital"], int(row["window_id"])
        context = windows.context(vital, np.array([window]))[0]
        seen = windows.context_observed(vital, np.array([window]))[0]
        s = naive_scale([float(v) for v in context], [bool(o) for o in seen])
        lo, hi = RANGES[vital] if scale == "minmax" else (0.0, 1.0)
        points.append(
            {
                "y": (float(row["y_true"]) - lo) / (hi - lo),
                "median": (float(row["median"]) - lo) / (hi - lo),
                "q": {a: (float(row[f"q{a:g}"]) - lo) / (hi - lo) for a in LEVELS},
                "scale": None if s is None else s / (hi - lo),
                "series": (vital, window),
                "step": int(row["step"]),
                "vital": vital,
                "subject": int(row["subject_id"]),
            }
        )
    return points


def scored(forecasts, windows, run_id="m/zero_shot") -> pd.DataFrame:
    return scoring.score_forecasts(forecasts, windows, RANGES, run_id)


def study(runs: list[Run], scores: dict[str, pd.DataFrame], resamples: int, seed: int):
    """(metrics, paired) on test of runs whose every replicate, on validation and test, has
    the score table ``scores[run id]``."""
    keyed = {
        (split, run.run_id, s): scores[run.run_id]
        for split in ("validation", "test")
        for run in runs
        for s in run.seeds
    }
    tables = summary.study_tables(runs, keyed, resamples, seed)
    test = tables.metrics[tables.metrics["split"] == "test"].reset_index(drop=True)
    return test, tables.paired[tables.paired["split"] == "test"].reset_index(drop=True)


class Namespace(dict):
    """Snakemake's named lists: attributes and items()."""

    __getattr__ = dict.__getitem__


def tiny_config(**evaluation):
    return validate_config(
        {
            "vitals": {"names": ["heart_rate", "mbp"]},
            "models": {"m": {"family": "chronos", "source": {"standin": "chronos-t5"}}},
            "methods": {"zero_shot": {"kind": "zero_shot"}, "lora": {"kind": "lora", "rank": 2}},
            "evaluation": {
                "bootstrap": {"resamples": 50, "seed": 0},
                "oracle": False,
                **evaluation,
            },
        }
    )


def run_script(name: str, sm: SimpleNamespace) -> None:
    """Run a rule's script as Snakemake would, with a stand-in ``snakemake`` object."""
    saved = sys.stdout, sys.stderr
    try:
        runpy.run_path(str(REPO / "scripts" / name), init_globals={"snakemake": sm})
    finally:
        sys.stdout, sys.stderr = saved


def one_point_scores(errors: dict[int, float]) -> pd.DataFrame:
    """A score table with one whole-horizon point per patient of absolute error ``errors[p]``."""
    return score_rows({subject: [error] for subject, error in errors.items()})


def study_run(
    model: str, setting: str, kind: str, seeds=(0,), family: str = "chronos", **source
) -> Run:
    """A run of a chronos stand-in (or ``source``) with ``seeds``."""
    return Run(
        model,
        family,
        source or {"standin": "chronos-t5"},
        setting,
        {"kind": kind, "method": setting},
        {},
        tuple(seeds),
    )
