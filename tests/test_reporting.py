"""Tables and figures from a small hand-made results tree (``tests/reporting_testing.py``):
the rules ``tables`` and ``figures`` run by Snakemake on it, then each table's numbers against
the tree's, and the Python API on edge cases."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from reporting_testing import (
    LEVEL,
    NO_PEAK_RECORD,
    RAW_CONFIG,
    VALIDATION_LEVEL,
    VITALS,
    make_results,
)

from vitalfm.config import validate_config
from vitalfm.errors import DataError
from vitalfm.reporting import CLINICAL_EVENTS, FIGURES, STUDY_CONFIG, TABLE_FORMATS, TABLES
from vitalfm.reporting.error_figures import pareto_front
from vitalfm.reporting.figures import build_figures
from vitalfm.reporting.forecast_figures import pick_examples
from vitalfm.reporting.formatting import MISSING, parse_ci
from vitalfm.reporting.tables import build_tables
from vitalfm.study import study_runs

# --- the rules, run by Snakemake on the hand-made tree ---------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--workflow-profile",
            "none",
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory whose config is the small study and whose results/ holds the
    hand-made tree; Snakemake runs only the report's rules on it."""
    workdir = tmp_path_factory.mktemp("study")
    (workdir / "config.yaml").write_text(yaml.safe_dump(RAW_CONFIG))
    make_results(workdir / "results", validate_config(RAW_CONFIG))
    rules = ("tables", "figures", "clinical_events_report")
    done = _snakemake(workdir, *rules, "--cores", "1", "--allowed-rules", *rules)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def _csv(workflow: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(workflow / "results" / "tables" / f"{name}.csv", dtype=str).fillna("")


def _metrics(workflow: Path) -> pd.DataFrame:
    return pd.read_parquet(workflow / "results" / "metrics" / "metrics.parquet")


def _close(cell: str, expected: tuple[float, float, float], digits: int = 4) -> None:
    """A formatted "value [low, high]" cell against the input numbers (rounded to ``digits``
    significant digits: differences are shown with 3)."""
    got = parse_ci(cell)
    np.testing.assert_allclose(got, expected, rtol=10 ** (1 - digits))


def test_rules_write_every_table_and_figure(workflow: Path) -> None:
    tables = workflow / "results" / "tables"
    for name in TABLES:
        for fmt in TABLE_FORMATS:
            assert (tables / f"{name}.{fmt}").stat().st_size > 0, (name, fmt)
    written = yaml.safe_load((tables / STUDY_CONFIG).read_text())
    assert "tiny_chronos" in (tables / "study_config.html").read_text()
    assert set(written["models"]) == set(RAW_CONFIG["models"])
    assert written["training"]["max_steps"] > 0  # defaults filled in
    figures = workflow / "results" / "figures"
    for name in FIGURES:
        png = plt.imread(figures / f"{name}.png")
        assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100, name
        assert (figures / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    assert "ERROR" not in (workflow / "results" / "logs" / "figures.log").read_text()


def _test(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[metrics["split"] == "test"]


def _run_of(row: pd.Series) -> str:
    model = "oracle" if row["Model"] == "oracle (bound)" else row["Model"]
    return f"{model}/{row['Setting']}"


def test_main_comparison_holds_the_test_metrics_and_marks_the_validation_best(
    workflow: Path,
) -> None:
    metrics = _metrics(workflow)
    for name, scale in (("main_comparison", "minmax"), ("main_comparison_original", "original")):
        table = _csv(workflow, name)
        sel = _test(metrics)
        sel = sel[(sel["scale"] == scale) & (sel["step"] == 0)]
        vitals = {"all", *VITALS} if scale == "minmax" else set(VITALS)
        runs = sel["run"].unique()
        assert len(table) == len(runs) * len(vitals)  # every run x vital once, the oracle too
        assert "oracle (bound)" in set(table["Model"])
        assert set(table["Vital"]) == vitals
        for _, row in table.iterrows():
            part = sel[(sel["run"] == _run_of(row)) & (sel["vital"] == row["Vital"])]
            part = part.set_index("metric")
            shown = (("mae", "MAE"), ("crps", "CRPS"), ("coverage_95", "Cov. 95%"))
            for metric, label in (*shown, ("calibration_error", "Cal. err.")):
                _close(row[label], tuple(part.loc[metric, ["value", "ci_low", "ci_high"]]))
            assert int(row["n windows"]) == part.loc["mae", "n_windows"]
            assert int(row["n points"].replace(",", "")) == part.loc["mae", "n_points"]
            assert int(row["Seeds"]) == part.loc["mae", "n_seeds"]
        # the best setting per model and vital is the one with the lowest validation MAE
        validation = metrics[(metrics["split"] == "validation") & (metrics["scale"] == scale)]
        validation = validation[(validation["step"] == 0) & (validation["metric"] == "mae")]
        for (model, vital), block in table.groupby(["Model", "Vital"]):
            if len(block) < 2:
                assert not block["best"].str.contains("MAE").any()
                continue
            runs = [f"{model}/{s}" for s in block["Setting"]]
            values = validation[validation["vital"] == vital].set_index("run")
            best = values.loc[runs, "value"].idxmin().split("/")[1]
            marked = block.loc[block["best"].str.split(";").apply(lambda b: "MAE" in b), "Setting"]
            assert list(marked) == [best], (model, vital)
    # tiny_chronos: rank 2 is better on test, rank 1 on validation; validation decides
    table = _csv(workflow, "main_comparison")
    pooled = table[(table["Model"] == "tiny_chronos") & (table["Vital"] == "all")]
    marked = pooled[pooled["best"].fillna("").str.contains("MAE")]
    assert list(marked["Setting"]) == ["lora-r1"]


def test_parameter_efficiency_holds_the_run_records(workflow: Path) -> None:
    table = _csv(workflow, "parameter_efficiency").set_index(["Model", "Setting"])
    root = workflow / "results"
    for run in study_runs(validate_config(RAW_CONFIG)):
        if run.is_oracle:
            assert "oracle" not in set(table.index.get_level_values(0))
            continue
        row = table.loc[(run.model, run.setting)]
        first = run.replicate_ids[0]
        meta = json.loads((root / "forecasts" / "test" / f"{first}.json").read_text())
        params = meta["parameters"]
        assert int(row["Trainable"].replace(",", "")) == params["trainable"]
        assert int(row["Total"].replace(",", "")) == params["total"]
        assert int(row["Seeds"]) == len(run.seeds)
        seconds = meta["forecast"]["seconds"]
        assert float(row["Forecast time (s)"]) == pytest.approx(seconds, rel=1e-3, abs=1e-3)
        if not run.trains:
            assert row["Train time (s)"] == MISSING
            continue
        trainings = [
            json.loads((root / "runs" / rep / "metadata.json").read_text())["training"]
            for rep in run.replicate_ids
        ]
        mean_time = np.mean([t["wall_time_s"] for t in trainings])
        assert float(row["Train time (s)"]) == pytest.approx(mean_time, rel=1e-2)
        if run.run_id == NO_PEAK_RECORD:  # falls back to the finetune job's benchmark
            expected = max(
                pd.read_csv(root / "benchmarks" / "finetune" / f"{rep}.tsv", sep="\t")["max_rss"][0]
                for rep in run.replicate_ids
            )
        else:
            expected = max(t["peak_memory_mb"]["process_rss_mb"] for t in trainings)
        assert float(row["Train peak RSS (MB)"]) == pytest.approx(expected, rel=1e-3)


def test_rank_sweep_and_method_comparison_hold_the_paired_differences(workflow: Path) -> None:
    paired = pd.read_parquet(workflow / "results" / "metrics" / "paired.parquet")
    mae = paired[(paired["metric"] == "mae") & (paired["scale"] == "minmax")]
    mae = mae[(mae["vital"] == "all") & (mae["split"] == "test")]
    mae = mae.set_index(["reference", "run"])
    sweep = _csv(workflow, "rank_sweep")
    ranked = sweep[sweep["Family"] != "oracle"]
    assert sorted(zip(ranked["Model"], ranked["Rank"], strict=True)) == [
        ("m-b", "1"),
        ("m-b", "2"),
        ("tiny_chronos", "1"),
        ("tiny_chronos", "2"),
    ]
    assert list(sweep.loc[sweep["Family"] == "oracle", "Model"]) == ["oracle (bound)"]
    for _, row in ranked.iterrows():
        ref = mae.loc[("zero_shot", f"{row['Model']}/lora-r{row['Rank']}")]
        _close(row["ΔMAE vs zero-shot"], (ref["difference"], ref["ci_low"], ref["ci_high"]), 3)
        assert float(row["P(better than zero-shot)"]) == pytest.approx(ref["fraction_better"])
    methods = _csv(workflow, "method_comparison")
    assert len(methods) == len(LEVEL)  # every run, baselines and the oracle included
    calibration = _calibration_errors(workflow)
    for _, row in pd.concat([ranked.assign(Setting="lora-r" + ranked["Rank"]), methods]).iterrows():
        if row["Family"] != "oracle":
            run = f"{row['Model']}/{row['Setting']}"
            _close(row["Cal. err."], tuple(calibration.loc[run]))
    gap = pd.read_parquet(workflow / "results" / "metrics" / "oracle_gap.parquet")
    gap = gap[(gap["split"] == "test") & (gap["scale"] == "minmax") & (gap["vital"] == "all")]
    gap = gap.set_index("run")
    for _, row in methods.iterrows():
        run = f"{row['Model']}/{row['Setting']}"
        if run == "nhits/scratch":
            assert row["ΔMAE vs best baseline"] == "reference"
        elif ("best_baseline", run) in mae.index:
            ref = mae.loc[("best_baseline", run)]
            _close(
                row["ΔMAE vs best baseline"], (ref["difference"], ref["ci_low"], ref["ci_high"]), 3
            )
        else:  # persistence is a baseline and the oracle a bound: not compared with one
            assert row["ΔMAE vs best baseline"] == MISSING
        closed = row["Gap closed (persistence → oracle)"]
        if run in gap.index:
            expected = gap.loc[run, ["share_closed", "ci_low", "ci_high"]].to_numpy() * 100
            _close(closed.removesuffix(" %"), tuple(expected), 3)
        else:
            assert closed == MISSING


def _calibration_errors(workflow: Path) -> pd.DataFrame:
    """Each run's test calibration error (min-max, all vitals, whole horizon) by run."""
    metrics = _test(_metrics(workflow))
    sel = metrics[(metrics["metric"] == "calibration_error") & (metrics["scale"] == "minmax")]
    sel = sel[(sel["vital"] == "all") & (sel["step"] == 0)]
    return sel.set_index("run")[["value", "ci_low", "ci_high"]]


def test_findings_pick_each_models_best_adapted_run_on_validation(workflow: Path) -> None:
    table = _csv(workflow, "findings").set_index("Model")
    calibration = _calibration_errors(workflow)
    assert set(table.index) == {"tiny_chronos", "m-b"}  # baselines and the oracle are not
    for model in table.index:
        adapted = {r: v for r, v in VALIDATION_LEVEL.items() if r.startswith(f"{model}/lora")}
        best = min(adapted, key=adapted.get)  # on validation
        assert table.loc[model, "Best adapted setting (on validation)"] == best.split("/")[1]
        assert parse_ci(table.loc[model, "Its test MAE"])[0] == pytest.approx(LEVEL[best], rel=1e-3)
        assert table.loc[model, "Adapted vs zero-shot"] == "better"  # interval below zero
        _close(table.loc[model, "Its cal. err."], tuple(calibration.loc[best]))
        zero = tuple(calibration.loc[f"{model}/zero_shot"])
        _close(table.loc[model, "Zero-shot cal. err."], zero)
    # rank 2 would have won on test: the table does not pick on test
    assert table.loc["tiny_chronos", "Best adapted setting (on validation)"] == "lora-r1"
    notes = (workflow / "results" / "tables" / "findings.md").read_text()
    assert "validation" in notes and "oracle" in notes.lower()


def test_seed_variance_lists_the_runs_with_several_seeds(workflow: Path) -> None:
    table = _csv(workflow, "seed_variance")
    replicates = pd.read_parquet(workflow / "results" / "metrics" / "replicates.parquet")
    sel = replicates[
        (replicates["split"] == "test")
        & (replicates["metric"] == "mae")
        & (replicates["scale"] == "minmax")
        & (replicates["vital"] == "all")
    ]
    several = {run.run_id for run in study_runs(validate_config(RAW_CONFIG)) if len(run.seeds) > 1}
    assert {f"{m}/{s}" for m, s in zip(table["Model"], table["Setting"], strict=True)} == several
    for _, row in table.iterrows():
        values = sel[sel["run"] == f"{row['Model']}/{row['Setting']}"].sort_values("seed")["value"]
        assert [float(v) for v in row["Test MAE by seed"].split(", ")] == pytest.approx(
            list(values), rel=1e-3
        )
        assert float(row["SD over seeds"]) == pytest.approx(np.std(values, ddof=1), rel=1e-3)
        assert row["What differs between seeds"] == (
            "forecast sampling"
            if row["Setting"] == "zero_shot"
            else "training and forecast sampling"
        )


def test_cohort_tables_hold_the_data_stage_counts(workflow: Path) -> None:
    root = workflow / "results"
    cohort = _csv(workflow, "cohort")
    source = pd.read_csv(root / "cohort" / "cohort_summary.tsv", sep="\t")
    assert list(cohort["Patients"].astype(int)) == list(source["subjects"])
    splits = _csv(workflow, "splits").set_index("Split")
    for split in ("train", "validation", "test"):
        index = pd.read_parquet(root / "windows" / f"{split}.parquet")
        assert int(splits.loc[split, "Windows"]) == len(index)
        points = sum(int(index[f"{v}_horizon_observed"].sum()) for v in VITALS)
        assert int(splits.loc[split, "Observed horizon points"].replace(",", "")) == points
    grid = _csv(workflow, "vitals_grid").set_index("Vital")
    assert grid.loc["mbp", "% observed"] == "43%"  # 430 of 1000 bins
    assert "Filled" not in grid.columns  # nothing is filled on the grid


def test_latex_escapes_names_and_sets_best_in_bold(workflow: Path) -> None:
    tex = (workflow / "results" / "tables" / "main_comparison.tex").read_text()
    assert r"tiny\_chronos" in tex and "tiny_chronos" not in tex
    assert r"zero\_shot" in tex and r"Cov. 95\%" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\textbf{0.08 [0.072, 0.088]}" in tex  # tiny_chronos lora-r1: best on validation
    md = (workflow / "results" / "tables" / "main_comparison.md").read_text()
    assert "**0.08 [0.072, 0.088]**" in md


def test_report_builds_with_captions_config_and_versions(workflow: Path) -> None:
    done = _snakemake(workflow, "--report", "report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    html = (workflow / "report.html").read_text()
    for phrase in (
        "The study's answer",  # a table caption
        "Pareto front",  # a figure caption
        "Effective configuration",  # the configuration's caption
        "standin chronos-t5",  # the front page, filled in from the config
        "Alarms from forecasts",  # the clinical events' captions
    ):
        assert phrase in html, phrase
    # every table, figure, the configuration and the software versions are report items
    listed = re.search(r"var categories = (\{.*?\});\n", html)
    assert listed is not None
    items = {
        path for cat in json.loads(listed.group(1)).values() for sub in cat.values() for path in sub
    }
    expected = {f"results/tables/{name}.html" for name in TABLES}
    expected |= {f"results/figures/{name}.png" for name in FIGURES}
    expected |= {f"results/tables/{STUDY_CONFIG}", "results/tables/study_config.html"}
    expected |= {f"results/tables/{CLINICAL_EVENTS}.html", f"results/figures/{CLINICAL_EVENTS}.png"}
    assert expected <= items


def test_tables_read_the_metrics_rules_own_files(tmp_path: Path) -> None:
    """The contract between the metrics rule and the report, with the metrics rule's code."""
    from vitalfm.evaluation.scoring import score_run
    from vitalfm.evaluation.summary import write_metrics

    cfg = validate_config({**RAW_CONFIG, "evaluation": {"bootstrap": {"resamples": 20}}})
    make_results(tmp_path, cfg)
    scores = {}
    for split in ("validation", "test"):
        for run in study_runs(cfg):
            for seed, replicate in zip(run.seeds, run.replicate_ids, strict=True):
                path = tmp_path / "scores" / split / f"{replicate}.parquet"
                forecasts = tmp_path / "forecasts" / split / f"{replicate}.parquet"
                score_run(cfg, replicate, forecasts, tmp_path / "windows" / "test.npz", path)
                scores[(split, run.run_id, seed)] = path
    out = tmp_path / "metrics"
    for old in out.iterdir():
        old.unlink()
    names = ("metrics", "paired", "replicates", "gap")
    outputs = {name: out / f"{name}.parquet" for name in names}
    outputs |= {f"{name}_csv": out / f"{name}.csv" for name in names}
    outputs["gap"] = out / "oracle_gap.parquet"
    write_metrics(cfg, scores, outputs)
    tables = build_tables(cfg, tmp_path)
    metrics = pd.read_parquet(out / "metrics.parquet")
    mae = metrics[
        (metrics["metric"] == "mae")
        & (metrics["scale"] == "minmax")
        & (metrics["vital"] == "all")
        & (metrics["step"] == 0)
        & (metrics["split"] == "test")
    ].set_index("run")
    methods = pd.read_csv(tables["method_comparison"]["csv"], dtype=str)
    assert len(methods) == len(mae)
    for _, row in methods.iterrows():
        expected = mae.loc[_run_of(row)]
        _close(row["MAE"], tuple(expected[["value", "ci_low", "ci_high"]]))
        assert int(row["n points"].replace(",", "")) == expected["n_points"]


# --- the Python API on edge cases ------------------------------------------------------------


def test_pareto_front_on_hand_made_points() -> None:
    cost = [0, 0, 10, 100, 100, 1000, 50, np.nan]
    error = [0.5, 0.6, 0.4, 0.45, 0.3, 0.3, 0.4, 0.1]
    # 0.6 at 0 and 0.45 at 100 are dominated, so are 0.3 at 1000 (same error, dearer) and 0.4
    # at 50 (same error as 10, dearer); a point with no cost is never on the front.
    assert list(pareto_front(cost, error)) == [True, False, True, False, True, False, False, False]
    assert list(pareto_front([5, 5], [1.0, 1.0])) == [True, True]  # ties dominate neither


def test_a_study_with_one_model_and_no_sweep(tmp_path: Path) -> None:
    models = {"solo": {"family": "chronos", "source": {"standin": "chronos-t5"}}}
    cfg = validate_config(
        {
            "vitals": {"names": list(VITALS)},
            "models": models,
            "methods": {"zero_shot": {"kind": "zero_shot"}, "lora": {"kind": "lora", "rank": 2}},
        }
    )
    levels = {"solo/zero_shot": 0.1, "solo/lora-r2": 0.09, "oracle/oracle": 0.05}
    make_results(tmp_path, cfg, levels, {"solo": 1000, "oracle": 0})
    tables = build_tables(cfg, tmp_path)
    figures = build_figures(cfg, tmp_path, n_examples=2)
    assert all(p.is_file() for formats in tables.values() for p in formats.values())
    assert all(p.is_file() for formats in figures.values() for p in formats.values())
    methods = pd.read_csv(tables["method_comparison"]["csv"], dtype=str)
    assert list(methods["Setting"]) == ["zero_shot", "lora-r2", "oracle"]
    assert "no baseline" in tables["method_comparison"]["md"].read_text()


def test_example_stays_are_drawn_with_a_fixed_seed(workflow: Path) -> None:
    root = workflow / "results"
    forecasts = {
        run: pd.read_parquet(root / "forecasts" / "test" / f"{run}/seed-0.parquet")
        for run in ("tiny_chronos/zero_shot", "m-b/lora-r1")
    }
    for frame in forecasts.values():
        frame["vital"] = frame["vital"].astype(str)
    first = pick_examples(forecasts, VITALS, 3, seed=0)
    assert first == pick_examples(forecasts, VITALS, 3, seed=0)
    stays = {
        int(forecasts["m-b/lora-r1"].set_index("window_id").loc[w, "icustay_id"].iloc[0])
        for w, _ in first
    }
    assert len(stays) == len(first) == 3  # three distinct test stays
    assert [v for _, v in first] == ["heart_rate", "mbp", "heart_rate"]


def test_missing_or_stale_inputs_name_the_file_and_the_rule(tmp_path: Path, workflow: Path) -> None:
    cfg = validate_config(RAW_CONFIG)
    root = tmp_path / "results"
    shutil.copytree(workflow / "results", root)
    (root / "metrics" / "metrics.parquet").unlink()
    with pytest.raises(DataError, match=r"metrics\.parquet.*rule metrics"):
        build_tables(cfg, root)
    shutil.copy(workflow / "results" / "metrics" / "metrics.parquet", root / "metrics")
    (root / "runs" / "m-b" / "lora-r1" / "seed-0" / "metadata.json").unlink()
    with pytest.raises(DataError, match=r"m-b/lora-r1/seed-0/metadata\.json.*rule finetune"):
        build_tables(cfg, root)
    bigger = validate_config(
        {**RAW_CONFIG, "methods": {**RAW_CONFIG["methods"], "bitfit": {"kind": "bitfit"}}}
    )
    with pytest.raises(DataError, match=r"no rows for the configured run.*bitfit"):
        build_figures(bigger, workflow / "results", tmp_path / "figures")
