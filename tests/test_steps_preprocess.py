"""The preprocessing steps (vitalfm.steps.preprocess) called with their rules' settings on a
small hand-made cohort: grid -> split -> windows, and each step's refusal of settings that lack
what it computes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.data.grid import read_grid
from vitalfm.data.splits import read_manifest
from vitalfm.data.windows import WindowSet
from vitalfm.steps import SettingsError
from vitalfm.steps.preprocess import grid, split, windows

T0 = pd.Timestamp("2150-03-01 00:00:00")
STAYS = 10
HOURS = 16


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return validate_config({"vitals": {"names": ["mbp", "heart_rate"]}})  # not the files' order


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Cohort and vitals files as rules cohort and vitals write them: ten 16-hour stays of ten
    patients, heart rate and MAP every 15 minutes."""
    work = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    intimes = [T0 + pd.Timedelta(hours=30 * k) for k in range(STAYS)]
    cohort = pd.DataFrame(
        {
            "subject_id": pd.array(range(1, STAYS + 1), dtype="int32"),
            "hadm_id": pd.array(range(1001, 1001 + STAYS), dtype="int32"),
            "icustay_id": pd.array(range(100, 100 + STAYS), dtype="int32"),
            "dbsource": "metavision",
            "intime": intimes,
            "outtime": [t + pd.Timedelta(hours=HOURS) for t in intimes],
            "age_years": 60.0,
            "gender": "F",
        }
    )
    rows = []
    for stay, intime in zip(cohort["icustay_id"], intimes, strict=True):
        for minutes in range(0, HOURS * 60, 15):
            for vital, level, item in (("heart_rate", 90.0, 220045), ("mbp", 75.0, 220052)):
                value = level + rng.normal(0, 3)
                rows.append((stay, intime + pd.Timedelta(minutes=minutes), vital, item, value))
    vitals = pd.DataFrame(rows, columns=["icustay_id", "charttime", "vital", "itemid", "value"])
    vitals["icustay_id"] = vitals["icustay_id"].astype("int32")
    vitals["itemid"] = vitals["itemid"].astype("int32")
    vitals["vital"] = pd.Categorical(vitals["vital"])
    files = {"cohort": work / "cohort.parquet", "vitals": work / "vitals.parquet"}
    pq.write_table(pa.Table.from_pandas(cohort, preserve_index=False), files["cohort"])
    pq.write_table(pa.Table.from_pandas(vitals, preserve_index=False), files["vitals"])
    return files


@pytest.fixture(scope="module")
def made(
    cfg: dict[str, Any], raw: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The three steps run in order, as the DAG runs them."""
    out = tmp_path_factory.mktemp("preprocess")
    grid(job_settings.grid(cfg), raw["vitals"], raw["cohort"], out / "grid.parquet", out / "g.tsv")
    split(job_settings.split(cfg), out / "grid.parquet", out / "manifest.parquet", out / "s.tsv")
    for name in ("train", "validation", "test"):
        windows(
            job_settings.windows(cfg),
            name,
            out / "grid.parquet",
            out / "manifest.parquet",
            out / f"{name}.npz",
            out / f"{name}.parquet",
        )
    return out


def test_the_grid_holds_the_configured_vitals_in_the_files_order(made: Path) -> None:
    table = read_grid(made / "grid.parquet", ["heart_rate", "mbp"])
    assert table.num_rows == STAYS * (HOURS * 4 + 1)  # every 15-minute bin, both ends
    assert "resp_rate" not in table.column_names  # only the configured vitals
    summary = pd.read_csv(made / "g.tsv", sep="\t")
    assert len(summary) > 0


def test_every_patient_lands_in_one_split(made: Path) -> None:
    manifest = read_manifest(made / "manifest.parquet")
    assert manifest["subject_id"].nunique() == STAYS == len(manifest)
    assert set(manifest["split"]) == {"train", "validation", "test"}


def test_windows_follow_the_settings(cfg: dict[str, Any], made: Path) -> None:
    manifest = read_manifest(made / "manifest.parquet")
    per_stay = set()
    for name in ("train", "validation", "test"):
        built = WindowSet.load(made / f"{name}.npz")
        assert built.split == name and built.vital_names == ("heart_rate", "mbp")
        assert (built.context_steps, built.horizon_steps) == (24, 12)  # 6 h, 3 h of 15 min
        subjects = set(manifest.loc[manifest["split"] == name, "subject_id"])
        assert set(built.subject_ids) == subjects
        assert set(built.stay_ids) == {99 + s for s in subjects}  # one stay per patient
        per_stay.add(len(built) / len(built.stay_ids))
    assert len(per_stay) == 1 and per_stay.pop() >= 1  # alike stays, alike windows


def test_each_step_refuses_settings_of_another_rule(
    cfg: dict[str, Any], raw: dict[str, Path], made: Path, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="step grid lack grid"):
        grid(job_settings.split(cfg), raw["vitals"], raw["cohort"], tmp_path / "g", "s")
    with pytest.raises(SettingsError, match="step split lack split"):
        split(job_settings.grid(cfg), made / "grid.parquet", tmp_path / "m", tmp_path / "s")
    with pytest.raises(SettingsError, match="step windows lack windows"):
        windows(
            job_settings.grid(cfg),
            "test",
            made / "grid.parquet",
            made / "manifest.parquet",
            tmp_path / "w.npz",
            tmp_path / "w.parquet",
        )
    assert not list(tmp_path.iterdir())
