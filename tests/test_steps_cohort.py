"""The cohort steps (vitalfm.steps.cohort) called with their rules' settings on a small
synthetic MIMIC-III, served by an embedded server for the length of each step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.steps import SettingsError
from vitalfm.steps.cohort import cohort, vitals
from vitalfm.steps.database import synthetic_mimic


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return validate_config(
        {"synthetic": {"n_patients": 16, "seed": 5}, "vitals": {"names": ["mbp", "heart_rate"]}}
    )


@pytest.fixture(scope="module")
def made(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic database, the cohort and its vitals, as the DAG makes them."""
    out = tmp_path_factory.mktemp("cohort")
    operations = job_settings.operations(cfg)
    synthetic_mimic(job_settings.synthetic_mimic(cfg), out / "mimic")
    cohort(
        job_settings.cohort(cfg),
        operations,
        out / "mimic",
        out / "cohort.parquet",
        out / "cohort_summary.tsv",
    )
    vitals(
        job_settings.vitals(cfg),
        operations,
        out / "mimic",
        out / "cohort.parquet",
        out / "vitals.parquet",
        out / "vitals_summary.tsv",
    )
    return out


def test_the_cohort_holds_septic_stays_long_enough_for_a_window(
    cfg: dict[str, Any], made: Path
) -> None:
    table = pq.read_table(made / "cohort.parquet").to_pandas()
    assert len(table) > 0
    hours = (table["outtime"] - table["intime"]).dt.total_seconds() / 3600
    settings = job_settings.cohort(cfg)
    assert '"min_stay_hours":9' in settings  # 6 h context + 3 h horizon, resolved
    assert (hours >= 9).all()
    assert len(pd.read_csv(made / "cohort_summary.tsv", sep="\t")) > 0


def test_vitals_are_the_configured_ones_of_the_cohorts_stays(made: Path) -> None:
    readings = pq.read_table(made / "vitals.parquet").to_pandas()
    assert set(readings["vital"].astype(str)) == {"heart_rate", "mbp"}
    stays = set(pq.read_table(made / "cohort.parquet").column("icustay_id").to_pylist())
    assert set(readings["icustay_id"]) <= stays


def test_query_batching_is_an_operation_that_changes_nothing(
    cfg: dict[str, Any], made: Path, tmp_path: Path
) -> None:
    one_stay_per_query = replace(job_settings.operations(cfg), stays_per_query=1)
    vitals(
        job_settings.vitals(cfg),
        one_stay_per_query,
        made / "mimic",
        made / "cohort.parquet",
        tmp_path / "vitals.parquet",
        tmp_path / "vitals_summary.tsv",
    )
    keys = ["icustay_id", "charttime", "itemid", "value"]

    def rows(path: Path) -> pd.DataFrame:  # batches arrive in another order
        frame = pq.read_table(path).to_pandas().astype({"vital": str})
        return frame.sort_values(keys, kind="stable").reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(tmp_path / "vitals.parquet"), rows(made / "vitals.parquet"))


def test_each_step_refuses_settings_of_another_rule(
    cfg: dict[str, Any], made: Path, tmp_path: Path
) -> None:
    operations = job_settings.operations(cfg)
    with pytest.raises(SettingsError, match="step cohort lack cohort, min_stay_hours"):
        cohort(job_settings.vitals(cfg), operations, made / "mimic", tmp_path / "c", tmp_path / "s")
    with pytest.raises(SettingsError, match="step vitals lack database, vitals"):
        vitals(
            job_settings.synthetic_mimic(cfg),
            operations,
            made / "mimic",
            made / "cohort.parquet",
            tmp_path / "v",
            tmp_path / "s",
        )
    assert not list(tmp_path.iterdir())
