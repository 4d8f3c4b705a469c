"""The DAG, run by Snakemake from a fresh copy of the repository (a small study)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from vitalfm.config import validate_config
from vitalfm.data.windows import WindowSet
from vitalfm.job_timing import read_log_timing
from vitalfm.study import study_runs
from vitalfm.testing import assert_strict_json_tree, copy_checkout
from vitalfm.testing_workflow import (
    STUDY_CONFIGS,
    load_study_config,
    run_snakemake,
    study_config_file,
)

REPO = Path(__file__).resolve().parents[1]
#: The default study reduced for CI (.test/config/config.yaml): every family and the baselines,
#: a rank sweep, two seeds for the headline settings, validation and test, the oracle; fewer
#: patients and steps. The README's command runs the full default study.
STUDY = str(study_config_file("config"))
MODEL = "chronos-2-standin"
SETTINGS = ("zero_shot", "lora-r1", "lora-r2", "full")
FAMILY_MODELS = {"moirai-standin": "moirai", "lag-llama-standin": "lag-llama"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole (reduced) default study, from a fresh clone: data to tables and figures."""
    workdir = copy_checkout(REPO, tmp_path_factory.mktemp("clone"))
    done = run_snakemake(workdir, "--cores", "2", "--configfile", STUDY, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_data_dag_runs_from_a_fresh_clone(study: Path) -> None:
    results = study / "results"
    summary = pd.read_csv(results / "cohort/cohort_summary.tsv", sep="\t")
    assert summary["icustays"].is_monotonic_decreasing
    cohort = pd.read_parquet(results / "cohort/cohort.parquet")
    assert len(cohort) == summary["icustays"].iloc[-1] > 0
    manifest = pd.read_parquet(results / "splits/manifest.parquet")
    assert manifest["subject_id"].is_unique  # no patient in two splits
    seen: set[int] = set()
    for split in ("train", "validation", "test"):
        windows = WindowSet.load(results / f"windows/{split}.npz")
        assert len(windows) > 0
        subjects = set(np.unique(windows.subject_ids).tolist())
        assert subjects <= set(manifest.loc[manifest["split"] == split, "subject_id"])
        assert not subjects & seen
        seen |= subjects
        hr = windows.context("heart_rate")
        assert hr.shape == (len(windows), 24)  # 6 h at 15 min
        assert windows.horizon("heart_rate").shape[1] == 12
        assert np.nanmean(hr) == pytest.approx(90, abs=30)  # plausible adult ICU heart rates
    for log in ("synthetic_mimic", "cohort", "vitals", "grid", "split"):
        assert (results / "logs" / f"{log}.log").exists()
    assert (results / "benchmarks/vitals.tsv").exists()
    # nothing is left running or lying around from the embedded servers
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(study) not in ps


@pytest.mark.slow
def test_model_jobs_adapt_a_pretrained_standin(study: Path) -> None:
    results = study / "results"
    standin = json.loads((results / "models/standins/chronos-2/standin.json").read_text())
    assert standin["standin"] is True and standin["variant"] == "chronos-2"
    assert "no vital signs" in standin["note"]
    pretrain = standin["training"]
    assert pretrain["best_validation_loss"] < pretrain["initial_validation_loss"]
    assert (results / "models/standins/chronos-2/model.safetensors").is_file()
    for setting in ("lora-r2", "full"):
        for seed in (0, 1):
            replicate = f"{MODEL}/{setting}/seed-{seed}"
            meta = json.loads((results / f"runs/{replicate}/metadata.json").read_text())
            training = meta["training"]
            assert meta["seed"] == seed
            # the weights kept are chosen on the validation forecast (CRPS), and what was
            # kept is that step's score
            assert training["selection_metric"] == "crps"
            history = pd.read_csv(results / f"runs/{replicate}/history.tsv", sep="\t")
            kept = history[history["step"] == training["best_step"]]["validation_crps"]
            assert kept.iloc[-1] == pytest.approx(training["best_validation_score"])
            assert meta["parameters"]["trainable"] > 0 and meta["device"]["device"] == "cpu"
            assert meta["software"]["torch"] and meta["git_revision"]
            assert (results / f"benchmarks/finetune/{replicate}.tsv").is_file()
        # two seeds are two different trainings (initialisation, data order, dropout)
        histories = [
            pd.read_csv(results / f"runs/{MODEL}/{setting}/seed-{seed}/history.tsv", sep="\t")
            for seed in (0, 1)
        ]
        assert not np.array_equal(
            histories[0]["train_loss"].to_numpy(), histories[1]["train_loss"].to_numpy(),
            equal_nan=True,
        )  # fmt: skip
    lora = json.loads((results / f"runs/{MODEL}/lora-r2/seed-0/metadata.json").read_text())
    assert lora["parameters"]["trainable"] < lora["parameters"]["total"] / 10
    assert (results / f"runs/{MODEL}/lora-r2/seed-0/model/adapter_model.safetensors").is_file()
    assert not (results / f"runs/{MODEL}/lora-r1/seed-1").exists()  # one seed off the headline
    for setting in SETTINGS:
        for split in ("validation", "test"):
            forecasts = pd.read_parquet(
                results / f"forecasts/{split}/{MODEL}/{setting}/seed-0.parquet"
            )
            assert len(forecasts) > 0 and forecasts["median"].notna().all()
            assert set(forecasts["vital"]) <= {
                "heart_rate",
                "sbp",
                "dbp",
                "mbp",
                "resp_rate",
                "spo2",
                "temperature",
            }


@pytest.mark.slow
@pytest.mark.parametrize("model", FAMILY_MODELS)
def test_every_family_adapts_its_pretrained_standin(study: Path, model: str) -> None:
    results = study / "results"
    standin = json.loads(
        (results / f"models/standins/{FAMILY_MODELS[model]}/standin.json").read_text()
    )
    assert standin["standin"] is True
    assert (
        standin["training"]["best_validation_loss"] < standin["training"]["initial_validation_loss"]
    )
    totals = set()
    for setting in ("zero_shot", "lora-r1", "lora-r2", "bitfit", "full"):
        for split in ("validation", "test"):
            path = results / f"forecasts/{split}/{model}/{setting}/seed-0"
            forecast = json.loads(path.with_suffix(".json").read_text())
            assert forecast["median_finite_fraction"] == 1.0 and forecast["standin"] is True
            assert forecast["split"] == split
            table = pd.read_parquet(path.with_suffix(".parquet"))
            assert len(table) == forecast["forecast"]["rows"] > 0
            assert (table["q0.1"] <= table["q0.9"]).all()
            # sample paths at the observed points (none from a quantile model)
            paths = pd.read_parquet(path.with_suffix(".paths.parquet"))
            assert len(paths) == forecast["forecast"]["path_rows"]
            assert len(paths) in (0, int(table["observed"].sum()))
            totals.add(forecast["parameters"]["base_total"])
        if setting == "zero_shot":
            continue
        meta = json.loads((results / f"runs/{model}/{setting}/seed-0/metadata.json").read_text())
        params, training = meta["parameters"], meta["training"]
        assert 0 < params["trainable"] <= params["total"]
        assert (params["trainable"] == params["total"]) == (setting == "full")
        assert training["peak_memory_mb"]["process_rss_mb"] > 0
        # training moved the weights: the objective on the validation windows changed
        final = [row for row in training["history"] if row["step"] == training["steps"]][-1]
        assert final["validation_loss"] != training["initial_validation_loss"], setting
    assert len(totals) == 1  # every run starts from the same stand-in


@pytest.mark.slow
def test_metrics_cover_every_run_on_both_splits_with_intervals(study: Path) -> None:
    config = validate_config(load_study_config(study, "config"))
    runs = {run.run_id: run for run in study_runs(config)}
    assert "oracle/oracle" in runs  # the synthetic study's bound
    metrics = pd.read_parquet(study / "results/metrics/metrics.parquet")
    assert set(metrics["run"]) == set(runs)
    assert set(metrics["split"]) == {"validation", "test"}
    overall = metrics[(metrics["vital"] == "all") & (metrics["step"] == 0)]
    for split in ("validation", "test"):
        for metric in (
            "mse",
            "mae",
            "mape",
            "dtw",
            "crps",
            "wql",
            "mase",
            "coverage_80",
            "calibration_error",
        ):
            cells = overall[
                (overall["metric"] == metric)
                & (overall["scale"] == "minmax")
                & (overall["split"] == split)
            ]
            assert len(cells) == len(runs), metric
            assert cells["value"].notna().all(), metric
            assert (cells["ci_low"] <= cells["value"] + 1e-9).all(), metric
            assert (cells["value"] <= cells["ci_high"] + 1e-9).all(), metric
            seeds = cells.set_index("run")["n_seeds"]
            assert all(seeds[r] == len(runs[r].seeds) for r in runs)
    assert (overall["n_points"] > 0).any() and (overall["n_patients"] > 1).all()
    # per horizon step, every step of the 3 h horizon is scored
    steps = metrics[(metrics["metric"] == "mae") & (metrics["run"] == f"{MODEL}/zero_shot")]
    assert set(steps["step"]) == set(range(13))
    # the oracle is the bound: no model beats it on test
    mae = overall[
        (overall["metric"] == "mae") & (overall["scale"] == "minmax") & (overall["split"] == "test")
    ].set_index("run")["value"]
    assert mae["oracle/oracle"] < mae.drop("oracle/oracle").min()

    paired = pd.read_parquet(study / "results/metrics/paired.parquet")
    assert set(paired["reference"]) == {"zero_shot", "best_baseline"}
    vs_zero = paired[paired["reference"] == "zero_shot"]
    adapted = {r for r, run in runs.items() if run.trains and not run.baseline}
    assert set(vs_zero["run"]) == adapted
    vs_baseline = paired[paired["reference"] == "best_baseline"]
    assert vs_baseline["reference_run"].nunique() == 1
    assert set(vs_baseline["chosen_on"]) == {"validation"}
    assert vs_baseline["reference_run"].iloc[0].split("/")[0] in ("persistence", "nhits", "dlinear")
    gap = pd.read_parquet(study / "results/metrics/oracle_gap.parquet")
    assert set(gap["run"]) == set(runs) - {"oracle/oracle"}
    assert (gap[gap["run"] == "persistence/zero_shot"]["share_closed"].abs() < 1e-9).all()
    calibration = pd.read_parquet(study / "results/metrics/calibration.parquet")
    assert set(calibration["run"]) == set(runs)
    assert calibration["coverage"].between(0, 1).all()
    assert (calibration["ci_low"] <= calibration["coverage"] + 1e-9).all()


@pytest.mark.slow
def test_the_answer_is_visible_in_the_tables(study: Path) -> None:
    """findings names each model's setting chosen on validation and scores it on test."""
    findings = pd.read_csv(study / "results/tables/findings.csv", dtype=str).set_index("Model")
    metrics = pd.read_parquet(study / "results/metrics/metrics.parquet")
    validation = metrics[
        (metrics["split"] == "validation")
        & (metrics["metric"] == "mae")
        & (metrics["scale"] == "minmax")
        & (metrics["vital"] == "all")
        & (metrics["step"] == 0)
    ]
    for model in ("chronos-2-standin", *FAMILY_MODELS):
        adapted = validation[(validation["model"] == model) & (validation["kind"] != "zero_shot")]
        chosen = adapted.loc[adapted["value"].idxmin(), "setting"]
        assert findings.loc[model, "Best adapted setting (on validation)"] == chosen
        assert findings.loc[model, "Adapted vs zero-shot"] in (
            "better",
            "worse",
            "no clear difference",
        )


@pytest.mark.slow
def test_tables_figures_and_report(study: Path) -> None:
    tables = sorted((study / "results/tables").glob("*.csv"))
    figures = sorted((study / "results/figures").glob("*.png"))
    assert len(tables) >= 5 and len(figures) >= 5
    for table in tables:
        for suffix in (".md", ".tex"):
            assert table.with_suffix(suffix).is_file()
        assert len(pd.read_csv(table)) > 0, table.name
    for figure in figures:
        assert figure.with_suffix(".pdf").stat().st_size > 0
    done = run_snakemake(study, "--report", "report.html", "--configfile", STUDY, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    html = (study / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "Results" in html


@pytest.mark.slow
def test_every_json_output_is_strict_json(study: Path) -> None:
    """jq and browsers refuse NaN: every JSON file the study wrote parses with a strict parser."""
    assert assert_strict_json_tree(study / "results") > 50


@pytest.mark.slow
def test_every_job_log_says_where_its_time_went(study: Path) -> None:
    """Each job of a real Snakemake run ends its log with its time per phase (issue 15)."""
    logs = sorted((study / "results/logs").rglob("*.log"))
    timings = {log.relative_to(study).as_posix(): read_log_timing(log.read_text()) for log in logs}
    assert not [path for path, timing in timings.items() if timing is None]
    for path, timing in timings.items():
        parts = sum(value for key, value in timing.items() if key not in ("total_s", "overhead_s"))
        assert parts == pytest.approx(timing["total_s"], abs=0.01), path
        assert timing["interpreter and imports_s"] > 0, path
    forecasts = [t for path, t in timings.items() if "/forecast/" in path and "oracle" not in path]
    assert forecasts and all(t["compute_s"] > 0 and t["model loading_s"] > 0 for t in forecasts)


@pytest.mark.slow
def test_model_jobs_declare_one_gpu(study: Path) -> None:
    done = run_snakemake(
        study,
        "results/forecasts/test/moirai-standin/lora-r4/seed-0.parquet",
        "--cores",
        "2",
        "--resources",
        "gpu=2",
        "-n",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    for rule in ("finetune", "forecast"):
        block = output.split(f"rule {rule}:")[1].split("rule ")[0]
        assert "gpu=1" in block


@pytest.mark.slow
def test_rerun_has_nothing_to_do(study: Path) -> None:
    done = run_snakemake(study, "--cores", "1", "--configfile", STUDY, "-n")
    assert done.returncode == 0
    assert "Nothing to be done" in done.stdout + done.stderr


@pytest.mark.slow
def test_empty_cohort_fails_cleanly(study: Path) -> None:
    """A user error inside a job: one clear message, non-zero exit, no finished-looking output."""
    (study / "empty.yaml").write_text(yaml.safe_dump({"cohort": {"icd9_codes": ["0010"]}}))
    done = run_snakemake(study, "cohort", "--cores", "1", "--configfile", STUDY, "empty.yaml")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "cohort is empty" in output and "How to fix" in output
    assert not (study / "results/cohort/cohort.parquet").exists()
    assert not (study / "results/cohort/cohort_summary.tsv").exists()


def _dry_run(tmp_path: Path, config: dict, *targets: str) -> subprocess.CompletedProcess:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    configfile = str(tmp_path / "study.yaml")
    return run_snakemake(REPO, "-n", *targets, "--configfile", configfile, timeout=120)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / STUDY_CONFIGS).glob("*.yaml")))
def test_every_test_study_plans_its_jobs(name: str) -> None:
    """Each .test/config study parses and plans in the fast suite too (the slow tests run them)."""
    path = REPO / study_config_file(name)
    assert path.read_text().startswith("# "), f"{path}: say on its first line what it is for"
    done = run_snakemake(REPO, "-n", "--configfile", str(path), timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_invalid_config_is_refused_before_any_job(tmp_path: Path) -> None:
    done = _dry_run(tmp_path, {"grid": {"frequency_minutes": 7}})
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "grid.frequency_minutes = 7" in output
    assert "one of 5, 10, 15, 20, 30, 60" in output


def test_lint_is_clean() -> None:
    done = run_snakemake(REPO, "--lint", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"models": {"moirai-standin": {"methods": ["zero_shot", "lorra"]}}},
            "models.moirai-standin.methods names unknown method(s) ['lorra']",
        ),
        (
            {"models": {"moirai-standin": {"family": "moira"}}},
            "models.moirai-standin.family = 'moira' is an unknown model family",
        ),
        ({"methods": {"lora": {"kind": "lowrank"}}}, "lowrank"),
    ],
)
def test_unknown_method_or_model_in_config_is_refused(
    tmp_path: Path, change: dict, message: str
) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for section, entries in change.items():
        for name, values in entries.items():
            config[section][name] = {**config[section][name], **values}
    done = _dry_run(tmp_path, config)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert message in output and "Traceback" not in output, output[-2000:]


def test_a_target_for_a_run_the_config_lacks_is_refused(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    done = _dry_run(
        tmp_path, config, "results/forecasts/test/no-such-model/zero_shot/seed-0.parquet"
    )
    assert done.returncode != 0
    assert "no run no-such-model/zero_shot in this config" in done.stdout + done.stderr
    # a seed the run does not replicate (lora-r1 runs the first seed only)
    done = _dry_run(
        tmp_path, config, "results/forecasts/test/moirai-standin/lora-r1/seed-2.parquet"
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "run moirai-standin/lora-r1 has no replicate with seed '2'" in output
    assert "training.all_seeds_for" in output
