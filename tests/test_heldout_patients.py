"""No test patient's data reaches training: not through the splits, the stand-ins' pretraining
corpus, any normalisation statistic, the trained weights or early stopping.

The test acts as a user would find out: it runs the workflow's steps (grid, split, windows,
pretrain, finetune; :mod:`vitalfm.steps`) on two sets of raw vital signs that differ only in
the test patients' readings (every value moved by tens of units, a third of them dropped), and
requires everything training produces to be bit-identical: the split manifest, the train and
validation windows, the trained weights (CPU, one thread), the loss and validation-forecast
history that early stopping and the best-checkpoint choice read, the best step, and the
normalisation ranges training records. The normalisation statistics a model computes are per
series, from each series' own context (tests/test_objectives.py: never from its target;
tests/test_patient_isolation_training.py: never from other series), and the min-max ranges
are the config's constants: no statistic is computed over a split, which the identical weights
confirm whatever channel one might have overlooked.

The stand-ins' pretraining corpus is synthetic: the ``pretrain`` rule has no input files (the
workflow's own dry run shows a stand-in built from nothing else), its settings hold no data
setting, and the step opens no file of a results folder that holds every patient file.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.data.windows import WindowSet
from vitalfm.steps import models, preprocess
from vitalfm.study import find_replicate
from vitalfm.testing import TINY_BASELINES, copy_checkout
from vitalfm.testing_workflow import run_snakemake, study_config_file

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
T0 = pd.Timestamp("2150-03-01 00:00:00")
VITALS = ("heart_rate", "mbp")
N_SUBJECTS = 12
STAY_HOURS = 30
SPLITS = ("train", "validation", "test")
#: What differs between two trainings on the same data: clocks and memory.
TIMING = {"samples_per_s", "validation_forecast_s"}


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return validate_config(
        {
            "vitals": {"names": list(VITALS)},
            "grid": {"frequency_minutes": 15},
            "split": {"train": 0.5, "validation": 0.25, "test": 0.25, "seed": 3},
            "windows": {
                "context_hours": 6,
                "horizon_hours": 3,
                "stride_hours": 1,
                "min_horizon_observed": 1,
            },
            "models": {
                "nhits": TINY_BASELINES["nhits"],
                "bolt": {
                    "family": "chronos",
                    "source": {"standin": "chronos-bolt"},
                    "methods": ["lora"],
                },
            },
            "methods": {
                "scratch": {"kind": "scratch", "learning_rate": 0.2},
                "lora": {"kind": "lora", "rank": 2, "learning_rate": 0.1},
            },
            "pretrain": {
                "corpus": {"n_series": 64, "length": 96},
                "max_steps": 2,
                "eval_every": 1,
                "batch_size": 8,
                "min_context_steps": 16,
                "max_context_steps": 24,
            },
            "training": {
                "max_steps": 12,
                "batch_size": 16,
                "eval_every": 1,
                "patience": 2,
                "checkpoint_every": 100,
                "validation_max_series": 32,
                "validation_forecast_series": 16,
                "validation_num_samples": 8,
                "seeds": [0],
            },
            "forecast": {"num_samples": 8, "batch_size": 32},
            "evaluation": {"oracle": False},
            "device": {"preference": "cpu"},
        }
    )


def raw_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(vitals, cohort) as the cohort and vitals rules write them: one stay per patient,
    readings every 15-75 minutes with noise and gaps."""
    rng = np.random.default_rng(0)
    rows = []
    for stay in range(N_SUBJECTS):
        start = T0 + pd.Timedelta(days=3 * stay)
        for vital, level in zip(VITALS, (85.0, 75.0), strict=True):
            level += rng.normal(0, 8)
            minute = float(rng.uniform(0, 20))
            while minute < STAY_HOURS * 60:
                value = level + 7 * np.sin(minute / 200) + rng.normal(0, 3)
                rows.append((300001 + stay, start + pd.Timedelta(minutes=minute), vital, value))
                minute += float(rng.choice([15, 30, 45, 60, 75]))
    vitals = pd.DataFrame(rows, columns=["icustay_id", "charttime", "vital", "value"])
    cohort = pd.DataFrame(
        {
            "subject_id": np.arange(5001, 5001 + N_SUBJECTS),
            "icustay_id": np.arange(300001, 300001 + N_SUBJECTS),
            "intime": [T0 + pd.Timedelta(days=3 * s) for s in range(N_SUBJECTS)],
            "outtime": [T0 + pd.Timedelta(days=3 * s, hours=STAY_HOURS) for s in range(N_SUBJECTS)],
        }
    )
    return vitals, cohort


def perturb_patients(vitals: pd.DataFrame, stays: set[int]) -> pd.DataFrame:
    """The readings of ``stays`` changed drastically: values x 3 + 40 and noise, a third of
    the readings dropped (each stay keeps most of them, so it stays in the grid)."""
    rng = np.random.default_rng(1)
    chosen = vitals["icustay_id"].isin(stays).to_numpy()
    changed = vitals.copy()
    values = changed.loc[chosen, "value"].to_numpy()
    changed.loc[chosen, "value"] = values * 3 + 40 + rng.normal(0, 15, values.size)
    dropped = chosen & (rng.random(len(changed)) < 1 / 3)
    return changed.loc[~dropped].reset_index(drop=True)


def preprocess_study(cfg: dict[str, Any], root: Path, vitals: pd.DataFrame) -> Path:
    """The data half of the workflow from the vitals and cohort tables, as its rules run it."""
    _, cohort = raw_data()
    root.mkdir(parents=True)
    vitals.to_parquet(root / "vitals.parquet")
    cohort.to_parquet(root / "cohort.parquet")
    preprocess.grid(
        job_settings.grid(cfg),
        root / "vitals.parquet",
        root / "cohort.parquet",
        root / "grid.parquet",
        root / "grid_summary.tsv",
    )
    preprocess.split(
        job_settings.split(cfg),
        root / "cohort.parquet",
        root / "manifest.parquet",
        root / "split_summary.tsv",
    )
    for split in SPLITS:
        preprocess.windows(
            job_settings.windows(cfg),
            split,
            root / "grid.parquet",
            root / "manifest.parquet",
            root / f"{split}.npz",
            root / f"{split}.parquet",
        )
    return root


@pytest.fixture(scope="module")
def studies(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The original data, and the same data with the test patients' readings perturbed."""
    vitals, _ = raw_data()
    work = tmp_path_factory.mktemp("heldout")
    original = preprocess_study(cfg, work / "original", vitals)
    manifest = pq.read_table(original / "manifest.parquet").to_pandas()
    test_subjects = set(manifest.loc[manifest["split"] == "test", "subject_id"])
    assert 0 < len(test_subjects) < N_SUBJECTS
    test_stays = {300001 + int(s) - 5001 for s in test_subjects}
    perturbed = preprocess_study(cfg, work / "perturbed", perturb_patients(vitals, test_stays))
    return {"original": original, "perturbed": perturbed}


def same_windows(a: WindowSet, b: WindowSet) -> bool:
    return a.metadata() == b.metadata() and all(
        np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)
        for name in WindowSet.ARRAYS
    )


def test_test_patients_data_reach_no_training_input(studies: dict[str, Path]) -> None:
    original, perturbed = studies["original"], studies["perturbed"]
    # the split is the same patients', whatever the test patients' readings
    manifests = [pq.read_table(s / "manifest.parquet").to_pandas() for s in studies.values()]
    pd.testing.assert_frame_equal(*manifests)
    test_subjects = set(manifests[0].loc[manifests[0]["split"] == "test", "subject_id"])
    # the perturbation reached the grid and the test windows ...
    grids = [pq.read_table(s / "grid.parquet").to_pandas() for s in (original, perturbed)]
    in_test = [g["subject_id"].isin(test_subjects) for g in grids]
    assert (
        not grids[0][in_test[0]]
        .reset_index(drop=True)
        .equals(grids[1][in_test[1]].reset_index(drop=True))
    )
    changed = same_windows(
        WindowSet.load(original / "test.npz"), WindowSet.load(perturbed / "test.npz")
    )
    assert not changed, "the test windows did not change"
    # ... and nothing else: other patients' grid rows, the train and validation windows
    pd.testing.assert_frame_equal(
        grids[0][~in_test[0]].reset_index(drop=True), grids[1][~in_test[1]].reset_index(drop=True)
    )
    for split in ("train", "validation"):
        windows = WindowSet.load(original / f"{split}.npz")
        assert len(windows) > 0 and not set(windows.subject_ids) & test_subjects
        same = same_windows(windows, WindowSet.load(perturbed / f"{split}.npz"))
        assert same, f"the {split} windows changed with the test patients' readings"


def test_a_test_patient_without_usable_readings_leaves_the_other_splits_as_they_are(
    cfg: dict[str, Any], studies: dict[str, Path], tmp_path: Path
) -> None:
    original = pq.read_table(studies["original"] / "manifest.parquet").to_pandas()
    gone = int(original.loc[original["split"] == "test", "subject_id"].iloc[0])
    vitals, _ = raw_data()
    vitals = vitals[vitals["icustay_id"] != 300001 + gone - 5001]  # none of its readings left
    changed = preprocess_study(cfg, tmp_path / "without", vitals)
    manifest = pq.read_table(changed / "manifest.parquet").to_pandas()
    others = [m[m["subject_id"] != gone].reset_index(drop=True) for m in (manifest, original)]
    pd.testing.assert_frame_equal(*others)


@pytest.fixture(scope="module")
def standin(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("pretrain")
    models.pretrain(
        job_settings.pretrain(cfg, "chronos-bolt"),
        job_settings.operations(cfg),
        work / "chronos-bolt",
        work / "ck",
    )
    return work / "chronos-bolt"


def finetuned(
    cfg: dict[str, Any], study: Path, model: str, setting: str, standin: Path, out: Path
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(saved weights, metadata) of one fine-tuning of ``study``'s train and validation."""
    from safetensors.torch import load_file

    run = find_replicate(cfg, model, setting, 0)
    meta = models.finetune(
        job_settings.finetune(cfg, run, 0),
        job_settings.operations(cfg),
        study / "train.npz",
        study / "validation.npz",
        out / "run",
        out / "ck",
        standin_dir=str(standin) if run.standin else None,
    )
    (weights,) = (out / "run" / "model").glob("*.safetensors")
    return load_file(weights), meta


@pytest.mark.parametrize(("model", "setting"), [("nhits", "scratch"), ("bolt", "lora-r2")])
def test_fine_tuning_is_bit_identical_whatever_the_test_patients_readings(
    cfg: dict[str, Any],
    studies: dict[str, Path],
    standin: Path,
    tmp_path: Path,
    model: str,
    setting: str,
) -> None:
    """The weights, the early-stopping history (validation loss and forecast scores at every
    evaluation, the best step) and the normalisation ranges training used."""
    runs = [
        finetuned(cfg, study, model, setting, standin, tmp_path / name)
        for name, study in studies.items()
    ]
    (weights, meta), (weights_perturbed, meta_perturbed) = runs
    assert weights.keys() == weights_perturbed.keys() and weights
    for name, tensor in weights.items():
        assert torch.equal(tensor, weights_perturbed[name]), name
    training, training_perturbed = meta["training"], meta_perturbed["training"]
    # early stopping had a choice to make: it stopped, and not at the last step
    assert training["stopped_early"] and training["steps"] > training["best_step"] > 0
    for key in ("best_step", "steps", "stopped_early", "best_validation_score"):
        assert training[key] == training_perturbed[key], key
    for row, row_perturbed in zip(training["history"], training_perturbed["history"], strict=True):
        for key in row.keys() - TIMING:
            assert json.dumps(row[key]) == json.dumps(row_perturbed[key]), (row["step"], key)
    # the min-max ranges of the validation forecast scores: the config's, not the data's
    assert meta["data"] == meta_perturbed["data"]
    assert meta["data"]["minmax_ranges"] == {v: list(r) for v, r in cfg_ranges(cfg).items()}


def cfg_ranges(cfg: dict[str, Any]) -> dict[str, Any]:
    return {v: cfg["evaluation"]["minmax_ranges"][v] for v in VITALS}


# --- the pretraining corpus ----------------------------------------------------------------------


@pytest.fixture
def patient_files(tmp_path: Path, studies: dict[str, Path]) -> Iterator[Path]:
    """A working folder whose results/ holds every patient file of a study (as a user's has
    when a stand-in is pretrained again), the step run from there."""
    import os
    import shutil

    results = tmp_path / "results"
    shutil.copytree(studies["original"], results / "data")
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield results
    finally:
        os.chdir(before)


_OPENED: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _OPENED is not None and event in ("open", "socket.connect", "sqlite3.connect"):
        _OPENED.append(f"{event} {args[0]}")


def test_pretraining_opens_no_patient_file_and_no_database(
    cfg: dict[str, Any], patient_files: Path
) -> None:
    global _OPENED
    sys.addaudithook(_audit)  # audit hooks stay; it records only while _OPENED is a list
    _OPENED = []
    try:
        models.pretrain(
            job_settings.pretrain(cfg, "chronos-bolt"),
            job_settings.operations(cfg),
            Path("standin"),
            Path("ck"),
        )
        opened = list(_OPENED)
    finally:
        _OPENED = None
    assert (Path("standin") / "standin.json").is_file()
    data = str(patient_files.resolve())
    touched = [e for e in opened if data in str(Path(e.split(" ", 1)[1]).resolve())]
    assert not touched, touched
    assert not [e for e in opened if not e.startswith("open")], "pretraining connected somewhere"


def test_pretraining_settings_hold_no_data_setting(cfg: dict[str, Any]) -> None:
    """Other patients, another database, another split or windows: the same pretrain job
    (its settings are its rerun trigger and all it computes from)."""
    other = validate_config(
        {
            **{k: v for k, v in cfg.items() if k not in ("synthetic", "database", "split")},
            "synthetic": {
                **cfg["synthetic"],
                "seed": cfg["synthetic"]["seed"] + 1,
                "n_patients": 7,
            },
            "split": {**cfg["split"], "seed": cfg["split"]["seed"] + 1},
            "windows": {**cfg["windows"], "stride_hours": 2, "min_horizon_observed": 3},
            "cohort": {**cfg["cohort"], "min_age_years": 40},
        }
    )
    settings = json.loads(job_settings.pretrain(cfg, "chronos-bolt"))
    assert set(settings) == {"standin", "family", "pretrain", "horizon_steps", "frequency_minutes"}
    assert job_settings.pretrain(other, "chronos-bolt") == job_settings.pretrain(
        cfg, "chronos-bolt"
    )


# --- what the workflow runs before a stand-in and a fine-tuning ----------------------------------


def dry_run_jobs(checkout: Path, target: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job ``snakemake -n --forceall target`` plans."""
    done = run_snakemake(
        checkout,
        "-n",
        "--forceall",
        "--configfile",
        str(study_config_file("tiny")),
        "--",
        target,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    jobs = []
    for block in re.split(r"\n(?=rule \w+:)", out)[1:]:
        rule = block.split(":", 1)[0].removeprefix("rule ")
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        jobs.append((rule, wildcards.group(1) if wildcards else ""))
    return jobs


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(REPO, tmp_path_factory.mktemp("checkout"))


def test_the_workflow_builds_a_standin_from_no_data(checkout: Path) -> None:
    assert dry_run_jobs(checkout, "results/models/standins/chronos-bolt") == [
        ("pretrain", "standin=chronos-bolt")
    ]


def test_the_workflow_fine_tunes_on_train_and_validation_windows_only(checkout: Path) -> None:
    jobs = dry_run_jobs(checkout, "results/runs/chronos-bolt-standin/lora-r2/seed-0")
    windows = sorted(w for rule, w in jobs if rule == "windows")
    assert windows == ["split=train", "split=validation"], jobs
    assert {rule for rule, _ in jobs} == {
        "synthetic_mimic",
        "cohort",
        "vitals",
        "grid",
        "split",
        "windows",
        "pretrain",
        "finetune",
    }
