"""Rule metrics (vitalfm.evaluation.summary): a results folder's score files -> the study's
tables, written by the rule's script; missing inputs name the run and the rule."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest
from evaluation_testing import (
    Namespace,
    make_forecasts,
    make_run,
    make_windows,
    run_script,
    study,
    tiny_config,
)

from vitalfm import job_settings
from vitalfm.errors import DataError
from vitalfm.evaluation import run_summary, scoring, summary
from vitalfm.io import write_parquet
from vitalfm.testing import score_rows


def test_missing_files_name_the_run_and_the_rule(tmp_path):
    cfg = tiny_config()
    with pytest.raises(DataError) as err:
        summary.study_metrics(cfg, results_dir=tmp_path)
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
        summary.study_metrics(cfg, results_dir=tmp_path)
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
    tables = summary.study_metrics(cfg, results_dir=tmp_path)
    table, paired = tables.metrics, tables.paired
    assert set(table["run"]) == {"m/zero_shot", "m/lora-r2"}
    assert set(table["split"]) == {"validation", "test"}
    assert set(table.columns) == set(run_summary.METRICS_COLUMNS)
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
        params=SimpleNamespace(settings=job_settings.metrics(cfg), scored=scored_keys),
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


def test_a_replicate_without_observed_targets_is_an_error_naming_it():
    run = make_run("m", "full", "full")
    empty = score_rows({1: []})
    with pytest.raises(DataError, match=r"run m/full/seed-0 \(validation\) has no observed target"):
        study([run], {run.run_id: empty}, 10, 0)
