"""Rule score (vitalfm.evaluation.scoring): per-patient sums that give every cell of the
metrics table as the plain computation, and forecast tables that are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from evaluation_testing import (
    make_forecasts,
    make_run,
    make_windows,
    reference_metrics,
    reference_points,
    run_script,
    scored,
    study,
    tiny_config,
)

from vitalfm import job_settings
from vitalfm.errors import DataError
from vitalfm.evaluation import scoring
from vitalfm.evaluation.metric_registry import METRICS, STATISTICS
from vitalfm.io import write_parquet


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


def test_no_observed_targets_is_an_error_naming_the_run():
    windows = make_windows()
    forecasts = make_forecasts(windows).assign(observed=False)
    with pytest.raises(DataError, match="run m/full has no observed target points"):
        scored(forecasts, windows, "m/full")


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


def test_score_script_exits_non_zero_with_the_message(tmp_path):
    log = tmp_path / "score.log"
    sm = SimpleNamespace(
        config=tiny_config(),
        params=SimpleNamespace(settings=job_settings.score(tiny_config()), splits=["test"]),
        wildcards=SimpleNamespace(model="m", setting="lora-r2", seed="0"),
        input=SimpleNamespace(
            forecasts=[str(tmp_path / "missing.parquet")], windows=[str(tmp_path / "test.npz")]
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
