"""Metrics, scoring and the patient bootstrap against independent plain-Python computations."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vitalfm.config import minmax_ranges, validate_config
from vitalfm.errors import ConfigError, DataError
from vitalfm.evaluation import aggregate, bootstrap, metrics, scoring
from vitalfm.evaluation.metrics import METRICS, STATISTICS
from vitalfm.io import write_parquet
from vitalfm.study import Run
from vitalfm.testing import score_rows, toy_windows

REPO = Path(__file__).resolve().parents[1]
LEVELS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975)
CRPS_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RANGES = {"heart_rate": (0.0, 300.0), "mbp": (0.0, 190.0)}


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


# --- the per-point definitions --------------------------------------------------------------


def test_point_terms_against_loops_on_fixed_arrays():
    y = np.array([10.0, 0.0, 7.5, 12.0, 3.0])
    median = np.array([9.0, 1.0, 8.0, 15.0, 3.0])
    q = {a: median + (a - 0.5) * np.array([4.0, 2.0, 1.0, 6.0, 0.5]) for a in LEVELS}
    q[0.975][4] = np.nan  # no 95% interval at this point
    scale = np.array([2.0, np.nan, 0.5, 1.0, 4.0])
    terms = metrics.point_terms(y, median, q, scale)
    sums = {k: v.sum() for k, v in terms.items()} | {"n_points": len(y)}
    points = [
        {
            "y": y[i],
            "median": median[i],
            "q": {a: q[a][i] for a in LEVELS},
            "scale": None if np.isnan(scale[i]) else scale[i],
            "series": i,
            "step": 1,
        }
        for i in range(len(y))
    ]
    expected = reference_metrics(points)
    for metric in METRICS:
        if metric != "dtw":
            assert metrics.metric_value(metric, sums) == pytest.approx(expected[metric]), metric
    assert sums["n_ape"] == 4 and sums["n_ase"] == 4 and sums["n_cov95"] == 4


def test_dtw_matches_dynamic_programming_including_masks():
    rng = np.random.default_rng(1)
    truth = rng.normal(80, 10, (40, 12))
    forecast = truth + rng.normal(0, 5, truth.shape)
    observed = rng.random(truth.shape) < 0.5
    observed[0] = False
    observed[0, 4] = True  # one point
    observed[1] = False
    observed[1, [2, 9]] = True  # two points (dtaidistance's pruning gets these wrong)
    observed[2] = False  # none -> NaN
    got = metrics.dtw_distances(truth, forecast, observed)
    assert np.isnan(got[2])
    for i in [0, 1, *range(3, 40)]:
        keep = observed[i]
        assert got[i] == pytest.approx(dtw_dp(list(forecast[i, keep]), list(truth[i, keep])))


def test_mase_scale_uses_successive_observed_readings_and_rejects_flat_or_short():
    context = np.array(
        [
            [1.0, 3.0, np.nan, 2.0, 6.0],  # readings 1, 3, 2, 6 -> (2 + 1 + 4) / 3
            [5.0, 5.0, 5.0, 5.0, 5.0],  # flat -> NaN
            [1.0, np.nan, np.nan, 4.0, np.nan],  # one pair -> NaN
            [2.0, 9.0, 4.0, 8.0, 4.0],  # 9 is filled (not observed): 2, 4, 8, 4
        ]
    )
    observed = np.isfinite(context)
    observed[3, 1] = False
    got = metrics.mase_scale(context, observed)
    for i in range(4):
        want = naive_scale(list(context[i]), list(observed[i]))
        assert (np.isnan(got[i]) and want is None) or got[i] == pytest.approx(want)
    assert got[0] == pytest.approx(7 / 3) and got[3] == pytest.approx(10 / 3)


def test_minmax_ranges_from_config_and_bad_ranges():
    cfg = validate_config({})
    ranges = minmax_ranges(cfg)
    assert ranges["heart_rate"] == (0, 300) and ranges["mbp"] == (0, 190)
    assert ranges["resp_rate"] == (0, 100) and ranges["temperature"] == (25, 45)
    cfg = validate_config({"evaluation": {"minmax_ranges": {"heart_rate": [0, 250]}}})
    with pytest.raises(ConfigError, match="no range for vital sbp"):
        minmax_ranges(cfg)
    assert minmax_ranges(cfg, ["heart_rate"]) == {"heart_rate": (0, 250)}
    cfg = validate_config({"evaluation": {"minmax_ranges": {"heart_rate": [300, 0]}}})
    with pytest.raises(ConfigError, match="high <= low"):
        minmax_ranges(cfg, ["heart_rate"])


def study(runs: list[Run], scores: dict[str, pd.DataFrame], resamples: int, seed: int):
    """(metrics, paired) on test of runs whose every replicate, on validation and test, has
    the score table ``scores[run id]``."""
    keyed = {
        (split, run.run_id, s): scores[run.run_id]
        for split in ("validation", "test")
        for run in runs
        for s in run.seeds
    }
    tables = aggregate.study_tables(runs, keyed, resamples, seed)
    test = tables.metrics[tables.metrics["split"] == "test"].reset_index(drop=True)
    return test, tables.paired[tables.paired["split"] == "test"].reset_index(drop=True)


class Namespace(dict):
    """Snakemake's named lists: attributes and items()."""

    __getattr__ = dict.__getitem__


# --- scoring a forecast table ---------------------------------------------------------------


def test_scores_give_every_cell_as_the_plain_computation():
    windows = make_windows()
    forecasts = make_forecasts(windows)
    scores = scored(forecasts, windows)
    assert set(scores.columns) == {*scoring.KEYS, *STATISTICS}
    run = make_run("m", "zero_shot", "zero_shot")
    table, _ = study([run], {run.run_id: scores}, resamples=20, seed=0)
    checked = 0
    for scale in ("original", "minmax"):
        points = reference_points(forecasts, windows, scale)
        for vital in ("heart_rate", "mbp", "all"):
            for step in range(0, windows.horizon_steps + 1):
                cell = [
                    p for p in points if vital in ("all", p["vital"]) and step in (0, p["step"])
                ]
                if not cell:
                    continue
                expected = reference_metrics(cell)
                rows = table[
                    (table["scale"] == scale) & (table["vital"] == vital) & (table["step"] == step)
                ].set_index("metric")
                assert set(rows.index) == set(METRICS) - ({"dtw"} if step else set())
                for metric in rows.index:
                    assert rows.loc[metric, "value"] == pytest.approx(
                        expected[metric], nan_ok=True
                    ), (scale, vital, step, metric)
                windows_in = {p["series"][1] for p in cell}
                assert (rows["n_windows"] == len(windows_in)).all()
                assert (rows["n_patients"] == len({p["subject"] for p in cell})).all()
                assert rows.loc["mae", "n_points"] == len(cell)
                assert rows.loc["mape", "n_points"] == sum(p["y"] != 0 for p in cell)
                assert rows.loc["mase", "n_points"] == sum(p["scale"] is not None for p in cell)
                checked += 1
    assert checked == 2 * 3 * (windows.horizon_steps + 1)
    overall = table[(table["vital"] == "all") & (table["step"] == 0)].set_index(["scale", "metric"])
    # the fixtures exercise the exclusions: a zero reading, flat contexts
    counts = overall.loc["original", "n_points"]
    assert counts["mape"] < counts["mae"] and counts["mase"] < counts["mae"]
    # min-max is linear: MAE and DTW shrink by the range, MASE and coverage do not change
    hr = table[(table["vital"] == "heart_rate") & (table["step"] == 0)].set_index(
        ["scale", "metric"]
    )["value"]
    for metric in ("mae", "dtw", "crps"):
        assert hr[("minmax", metric)] == pytest.approx(hr[("original", metric)] / 300)
    for metric in ("mase", "coverage_80", "coverage_95"):
        assert hr[("minmax", metric)] == pytest.approx(hr[("original", metric)])


def test_whole_horizon_pools_the_steps():
    windows = make_windows()
    run = make_run("m", "zero_shot", "zero_shot")
    scores = scored(make_forecasts(windows), windows)
    table, _ = study([run], {run.run_id: scores}, resamples=10, seed=0)
    mse = table[(table["metric"] == "mse") & (table["scale"] == "original")]
    mse = mse[mse["vital"] == "mbp"].set_index("step")
    per_step = mse.drop(index=0)
    pooled = (per_step["value"] * per_step["n_points"]).sum() / per_step["n_points"].sum()
    assert mse.loc[0, "value"] == pytest.approx(pooled)
    assert mse.loc[0, "n_points"] == per_step["n_points"].sum()
    assert not np.isclose(mse.loc[0, "value"], per_step["value"].mean())


def test_models_without_95_quantiles_get_nan_coverage_not_zero():
    windows = make_windows()
    run = make_run("m", "zero_shot", "zero_shot")
    scores = scored(make_forecasts(windows, drop_95=True), windows)
    table, _ = study([run], {run.run_id: scores}, resamples=10, seed=0)
    cov95 = table[table["metric"] == "coverage_95"]
    assert cov95["value"].isna().all() and (cov95["n_points"] == 0).all()
    assert table[table["metric"] == "coverage_80"]["value"].notna().all()


# --- the patient bootstrap ------------------------------------------------------------------


def cell(table: pd.DataFrame, metric: str = "mae") -> pd.Series:
    return table[(table["metric"] == metric) & (table["scale"] == "original")].iloc[0]


def test_patient_weights_resample_patients_reproducibly():
    w = bootstrap.patient_weights(7, 500, seed=4)
    assert w.shape == (500, 7) and (w.sum(axis=1) == 7).all()
    assert np.array_equal(w, bootstrap.patient_weights(7, 500, seed=4))
    assert not np.array_equal(w, bootstrap.patient_weights(7, 500, seed=5))
    # each patient is drawn once per resample on average
    assert w.mean() == pytest.approx(1.0, abs=0.05)


def test_confidence_intervals_are_reproducible_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    errors = {s: list(rng.normal(s % 5, 2, rng.integers(3, 30))) for s in range(30)}
    run = make_run("m", "zero_shot", "zero_shot")
    scores = {run.run_id: score_rows(errors)}
    first = cell(study([run], scores, resamples=400, seed=1)[0])
    again = cell(study([run], scores, resamples=400, seed=1)[0])
    other = cell(study([run], scores, resamples=400, seed=2)[0])
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])
    assert first["ci_low"] < first["value"] < first["ci_high"]
    all_points = [abs(e) for errs in errors.values() for e in errs]
    assert first["value"] == pytest.approx(np.mean(all_points))


def test_bootstrap_resamples_patients_not_windows():
    run = make_run("m", "zero_shot", "zero_shot")
    # a single patient with many windows of varied errors: every resample draws that patient
    # (a window bootstrap would vary), so the interval has no width
    single = cell(study([run], {run.run_id: score_rows({1: [1, 3] * 50})}, 200, 0)[0])
    assert single["ci_low"] == single["ci_high"] == single["value"] == 2.0
    # one patient with many bad windows among patients with few good ones: whether that
    # patient is drawn dominates, so the patient CI is wide; a window bootstrap is narrow
    errors = {1: [10.0] * 60, **{s: [1.0, 2.0] for s in range(2, 8)}}
    wide = cell(study([run], {run.run_id: score_rows(errors)}, 1000, 0)[0])
    points = np.array([e for errs in errors.values() for e in errs])
    rng = np.random.default_rng(0)
    by_window = [rng.choice(points, len(points)).mean() for _ in range(1000)]
    window_low, window_high = np.percentile(by_window, [2.5, 97.5])
    assert wide["ci_high"] - wide["ci_low"] > 3 * (window_high - window_low)
    assert wide["ci_low"] < 2.0 and wide["ci_high"] > 9.0


def test_paired_differences_use_the_same_resampled_patients():
    rng = np.random.default_rng(3)
    base = {s: list(rng.normal(0, 1 + s % 4, 6)) for s in range(12)}
    zero = make_run("m", "zero_shot", "zero_shot")
    lora = make_run("m", "lora-r2", "lora", rank=2)
    persistence = make_run("persistence", "zero_shot", "zero_shot", baseline=True)
    worse = {s: [2 * e for e in errs] for s, errs in base.items()}
    scores = {
        zero.run_id: score_rows(base),
        lora.run_id: score_rows({s: [e / 2 for e in errs] for s, errs in base.items()}),
        persistence.run_id: score_rows(worse),
    }
    table, paired = study([zero, lora, persistence], scores, 300, 0)
    assert table.set_index("run")["baseline"].to_dict() == {
        zero.run_id: False,
        lora.run_id: False,
        persistence.run_id: True,
    }
    row = paired[
        (paired["run"] == lora.run_id)
        & (paired["reference"] == "zero_shot")
        & (paired["metric"] == "mae")
        & (paired["scale"] == "original")
    ].iloc[0]
    zero_row = cell(table[table["run"] == zero.run_id])
    assert row["reference_run"] == zero.run_id
    assert row["difference"] == pytest.approx(row["value"] - row["reference_value"])
    assert row["difference"] < 0
    assert row["fraction_better"] == 1.0
    # lora = zero_shot / 2 per patient, so on the same patients the difference is exactly
    # -1/2 of zero_shot's resample: its CI is -1/2 of zero_shot's CI
    assert row["ci_low"] == pytest.approx(-zero_row["ci_high"] / 2)
    assert row["ci_high"] == pytest.approx(-zero_row["ci_low"] / 2)
    against = paired[(paired["reference"] == "best_baseline") & (paired["metric"] == "mae")]
    assert set(against["run"]) == {zero.run_id, lora.run_id}
    assert (against["reference_run"] == persistence.run_id).all()
    assert (against["difference"] < 0).all() and (against["ci_high"] < 0).all()
    # no zero_shot run for the persistence model's other runs and none against itself
    assert persistence.run_id not in set(paired["run"])
    assert set(paired.columns) == set(aggregate.PAIRED_COLUMNS)


def test_coverage_is_better_nearer_its_nominal_level():
    assert metrics.is_better("coverage_80", np.array(0.78), np.array(0.9))
    assert not metrics.is_better("coverage_80", np.array(0.6), np.array(0.9))
    assert metrics.is_better("mae", np.array(1.0), np.array(2.0))


# --- bad input ------------------------------------------------------------------------------


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


def test_missing_files_name_the_run_and_the_rule(tmp_path):
    cfg = tiny_config()
    with pytest.raises(DataError) as err:
        aggregate.study_metrics(cfg, results_dir=tmp_path)
    message = str(err.value)
    assert "no forecasts for run m/zero_shot/seed-0 (validation)" in message
    assert "(rule forecast)" in message
    assert f"snakemake {tmp_path}/forecasts/validation/m/zero_shot/seed-0.parquet" in message
    (tmp_path / "forecasts" / "validation" / "m" / "zero_shot").mkdir(parents=True)
    (tmp_path / "forecasts" / "validation" / "m" / "zero_shot" / "seed-0.parquet").touch()
    with pytest.raises(
        DataError,
        match=r"(?s)no scores for run m/zero_shot/seed-0 \(validation\): .*\(rule score\)",
    ):
        aggregate.study_metrics(cfg, results_dir=tmp_path)
    with pytest.raises(DataError, match=r"(?s)no forecasts for run m/lora-r2: .*\(rule forecast\)"):
        scoring.read_forecasts(tmp_path / "forecasts/test/m/lora-r2/seed-0.parquet", "m/lora-r2")


def test_study_metrics_reads_a_results_folder(tmp_path):
    cfg = tiny_config()
    windows = make_windows()
    replicates = ("m/zero_shot/seed-0", "m/lora-r2/seed-0")
    for split in ("validation", "test"):
        windows.save(tmp_path / "windows" / f"{split}.npz")
        for seed, replicate in enumerate(replicates):
            path = scoring.forecast_path(tmp_path, split, replicate)
            table = pa.Table.from_pandas(make_forecasts(windows, seed), preserve_index=False)
            write_parquet(table, path)
            scoring.score_run(
                cfg, replicate, path, tmp_path / f"windows/{split}.npz",
                scoring.score_path(tmp_path, split, replicate),
            )  # fmt: skip
    tables = aggregate.study_metrics(cfg, results_dir=tmp_path)
    table, paired = tables.metrics, tables.paired
    assert set(table["run"]) == {"m/zero_shot", "m/lora-r2"}
    assert set(table["split"]) == {"validation", "test"}
    assert set(table.columns) == set(aggregate.METRICS_COLUMNS)
    assert set(paired["run"]) == {"m/lora-r2"} and set(paired["reference"]) == {"zero_shot"}
    assert (table["rank"].isna() == (table["setting"] == "zero_shot")).all()
    # the rule's script writes the same tables as parquet and CSV
    names = ("metrics", "paired", "replicates")
    out = Namespace(
        {
            **{name: tmp_path / "metrics" / f"{name}.parquet" for name in names},
            **{f"{name}_csv": tmp_path / "metrics" / f"{name}.csv" for name in names},
        }
    )
    scored_keys = [
        (split, r.rsplit("/", 1)[0], 0) for split in ("validation", "test") for r in replicates
    ]
    sm = SimpleNamespace(
        config=cfg,
        params=SimpleNamespace(scored=scored_keys),
        input=SimpleNamespace(
            scores=[
                str(scoring.score_path(tmp_path, split, f"{run_id}/seed-0"))
                for split, run_id, _ in scored_keys
            ]
        ),
        output=out,
        log=[str(tmp_path / "metrics.log")],
        rule="metrics",
    )
    run_script("metrics.py", sm)
    pd.testing.assert_frame_equal(pd.read_parquet(out["metrics"]), table)
    pd.testing.assert_frame_equal(pd.read_parquet(out["paired"]), paired)
    assert len(pd.read_csv(out["paired_csv"])) == len(paired)


def test_no_observed_targets_is_an_error_naming_the_run():
    windows = make_windows()
    forecasts = make_forecasts(windows).assign(observed=False)
    with pytest.raises(DataError, match="run m/full has no observed target points"):
        scored(forecasts, windows, "m/full")
    run = make_run("m", "full", "full")
    empty = score_rows({1: []})
    with pytest.raises(DataError, match=r"run m/full/seed-0 \(validation\) has no observed target"):
        study([run], {run.run_id: empty}, 10, 0)


def test_forecast_file_with_other_columns_is_rejected(tmp_path):
    windows = make_windows()
    path = tmp_path / "forecasts.parquet"
    forecasts = make_forecasts(windows).drop(columns=["median", "q0.5"])
    write_parquet(pa.Table.from_pandas(forecasts, preserve_index=False), path)
    with pytest.raises(DataError, match=r"of run m/x lacks column\(s\) median, q0.5"):
        scoring.read_forecasts(path, "m/x")
    path.write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        scoring.read_forecasts(path, "m/x")


def test_forecasts_on_other_windows_or_with_nan_are_rejected():
    windows = make_windows()
    forecasts = make_forecasts(windows)
    moved = forecasts.assign(subject_id=forecasts["subject_id"] + 1)
    with pytest.raises(DataError, match="other patients than the test windows"):
        scored(moved, windows)
    broken = forecasts.copy()
    broken.loc[np.flatnonzero(broken["observed"])[0], "median"] = np.nan
    with pytest.raises(DataError, match="1 observed point"):
        scored(broken, windows)


def run_script(name: str, sm: SimpleNamespace) -> None:
    """Run a rule's script as Snakemake would, with a stand-in ``snakemake`` object."""
    saved = sys.stdout, sys.stderr
    try:
        runpy.run_path(str(REPO / "scripts" / name), init_globals={"snakemake": sm})
    finally:
        sys.stdout, sys.stderr = saved


def test_score_script_exits_non_zero_with_the_message(tmp_path):
    log = tmp_path / "score.log"
    sm = SimpleNamespace(
        config=tiny_config(),
        wildcards=SimpleNamespace(model="m", setting="lora-r2", seed="0", split="test"),
        input=SimpleNamespace(
            forecasts=str(tmp_path / "missing.parquet"), windows=str(tmp_path / "test.npz")
        ),
        output=[str(tmp_path / "scores.parquet")],
        log=[str(log)],
        rule="score",
        threads=1,
    )
    with pytest.raises(SystemExit) as exit_info:
        run_script("score.py", sm)
    assert exit_info.value.code == 1
    assert "no forecasts for run m/lora-r2/seed-0 (test)" in log.read_text()
    assert not (tmp_path / "scores.parquet").exists()
