"""Resampling onto the regular grid: bin means, drops, masks, no filling, errors, schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitalfm.data.grid import (
    SUMMARY_COLUMNS,
    GridResult,
    grid_frequency_minutes,
    grid_schema,
    grid_vital_names,
    read_grid,
    resample_stays,
    write_grid,
)
from vitalfm.errors import ConfigError, DataError

T0 = pd.Timestamp("2150-03-01 00:00:00")
FREQ = 15


def at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def cohort(*stays: tuple[int, int, float, float]) -> pd.DataFrame:
    """Stays as (icustay_id, subject_id, intime minutes, outtime minutes) after T0."""
    return pd.DataFrame(
        {
            "subject_id": pd.array([s[1] for s in stays], dtype="int32"),
            "hadm_id": pd.array([s[0] + 1000 for s in stays], dtype="int32"),
            "icustay_id": pd.array([s[0] for s in stays], dtype="int32"),
            "dbsource": "metavision",
            "intime": [at(s[2]) for s in stays],
            "outtime": [at(s[3]) for s in stays],
            "age_years": 60.0,
            "gender": "F",
        }
    )


def vitals(*rows: tuple[int, float, str, float]) -> pd.DataFrame:
    """Readings as (icustay_id, charttime minutes after T0, vital, value)."""
    return pd.DataFrame(
        {
            "icustay_id": pd.array([r[0] for r in rows], dtype="int32"),
            "charttime": [at(r[1]) for r in rows],
            "vital": pd.Categorical([r[2] for r in rows]),
            "itemid": pd.array([220045] * len(rows), dtype="int32"),
            "value": [float(r[3]) for r in rows],
        }
    )


def grid(
    readings: pd.DataFrame, stays: pd.DataFrame, names: tuple[str, ...] = ("heart_rate",)
) -> GridResult:
    return resample_stays(readings, stays, vital_names=names, frequency_minutes=FREQ)


def column(result: GridResult, name: str, icustay_id: int | None = None) -> np.ndarray:
    frame = result.table.to_pandas()
    if icustay_id is not None:
        frame = frame[frame["icustay_id"] == icustay_id]
    return frame[name].to_numpy()


def hr_at_steps(steps_values: dict[int, float], stay: int = 1) -> pd.DataFrame:
    """Heart-rate readings at the start of the given steps of a stay starting at T0."""
    return vitals(*[(stay, step * FREQ, "heart_rate", v) for step, v in steps_values.items()])


def test_grid_bins_follow_intime_floor_and_outtime() -> None:
    # intime 00:07 floors to 00:00; outtime 03:00 lies in the bin [03:00, 03:15): 13 bins.
    result = grid(vitals((1, 30, "heart_rate", 70)), cohort((1, 10, 7, 180)))
    steps = column(result, "step")
    times = pd.to_datetime(column(result, "time"))
    assert steps.tolist() == list(range(13))
    assert times[0] == T0
    assert times[-1] == at(180)
    assert np.all(np.diff(times) == pd.Timedelta(minutes=FREQ))


def test_bin_mean_of_two_readings_and_duplicate_charttimes() -> None:
    readings = vitals(
        (1, 1, "heart_rate", 80),
        (1, 14, "heart_rate", 90),  # same bin [00:00, 00:15): mean 85
        (1, 20, "heart_rate", 100),
        (1, 20, "heart_rate", 111),  # duplicate charttime: both count, mean 105.5
        (1, 15, "sbp", 120),  # bin edge belongs to the later bin
    )
    result = grid(readings, cohort((1, 10, 0, 60)), names=("heart_rate", "sbp"))
    hr = column(result, "heart_rate")
    assert hr[0] == pytest.approx(85.0)
    assert hr[1] == pytest.approx(105.5)
    assert column(result, "sbp_observed").tolist() == [False, True, False, False, False]
    summary = result.summary.set_index("vital")
    assert summary.loc["heart_rate", "readings_used"] == 4
    assert summary.loc["heart_rate", "bins_observed"] == 2


def test_readings_outside_the_stay_are_dropped_and_counted() -> None:
    readings = vitals(
        (1, 5, "heart_rate", 300),  # before intime 00:07, though inside the first bin
        (1, 10, "heart_rate", 70),
        (1, 61, "heart_rate", 250),  # after outtime 01:00, inside the last bin
        (1, 60, "heart_rate", 72),  # exactly at outtime: kept
        (99, 10, "heart_rate", 70),  # stay not in the cohort
    )
    result = grid(readings, cohort((1, 10, 7, 60)))
    hr = column(result, "heart_rate")
    assert hr[0] == pytest.approx(70.0)
    assert hr[4] == pytest.approx(72.0)
    row = result.summary.set_index("vital").loc["heart_rate"]
    assert row["readings_input"] == 5
    assert row["readings_outside_stay"] == 2
    assert row["readings_unknown_stay"] == 1
    assert row["readings_used"] == 2


def test_observed_mask_and_missing_is_nan() -> None:
    result = grid(hr_at_steps({0: 60, 2: 70}), cohort((1, 10, 0, 75)))
    assert column(result, "heart_rate_observed").tolist() == [1, 0, 1, 0, 0, 0]
    hr = column(result, "heart_rate")
    assert np.isnan(hr[[1, 3, 4, 5]]).all()


def test_the_grid_fills_nothing_even_short_interior_gaps() -> None:
    # A one-bin gap between two readings stays empty: filling over the stay would carry the
    # later reading into the context of a window whose origin lies inside the gap.
    result = grid(hr_at_steps({0: 60, 2: 100, 3: 90}), cohort((1, 10, 0, 60)))
    hr = column(result, "heart_rate")
    assert hr[0] == 60 and np.isnan(hr[1]) and hr[2] == 100 and hr[3] == 90
    assert not any(name.endswith("_filled") for name in result.table.column_names)
    row = result.summary.set_index("vital").loc["heart_rate"]
    assert (row["bins_observed"], row["bins_missing"]) == (3, 2)


def test_stays_are_sorted_and_stays_without_readings_dropped() -> None:
    stays = cohort((30, 3, 0, 30), (10, 1, 0, 15), (20, 2, 0, 15))
    readings = vitals((30, 1, "heart_rate", 70), (10, 1, "heart_rate", 80))
    result = grid(readings, stays)
    assert column(result, "icustay_id").tolist() == [10, 10, 30, 30, 30]
    assert column(result, "step").tolist() == [0, 1, 0, 1, 2]
    assert column(result, "subject_id").tolist() == [1, 1, 3, 3, 3]
    assert result.n_stays_in_cohort == 3
    assert result.n_stays_kept == 2
    assert result.n_stays_without_readings == 1


def test_vital_with_zero_rows_is_an_error() -> None:
    with pytest.raises(DataError, match="spo2") as err:
        grid(hr_at_steps({0: 60}), cohort((1, 10, 0, 30)), names=("heart_rate", "spo2"))
    assert "vitals.names" in err.value.fix


def test_vital_with_rows_only_outside_stays_is_an_error() -> None:
    readings = vitals((1, 1, "heart_rate", 60), (1, 500, "spo2", 97))
    with pytest.raises(DataError, match=r"spo2 \(1 row"):
        grid(readings, cohort((1, 10, 0, 30)), names=("heart_rate", "spo2"))


def test_duplicate_stay_in_cohort_is_an_error() -> None:
    with pytest.raises(DataError, match="more than once"):
        grid(hr_at_steps({0: 60}), cohort((1, 10, 0, 30), (1, 10, 0, 30)))


def test_bad_frequency_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"grid\.frequency_minutes"):
        resample_stays(
            hr_at_steps({0: 60}),
            cohort((1, 10, 0, 30)),
            vital_names=("heart_rate",),
            frequency_minutes=0,
        )


def test_schema_exactly_as_declared() -> None:
    names = ("heart_rate", "sbp", "temperature")
    readings = vitals((1, 1, "heart_rate", 60), (1, 2, "sbp", 110), (1, 3, "temperature", 37))
    table = grid(readings, cohort((1, 10, 0, 30)), names=names).table
    assert table.schema.equals(grid_schema(names))
    assert table.column_names == [
        "icustay_id",
        "subject_id",
        "time",
        "step",
        "heart_rate",
        "heart_rate_observed",
        "sbp",
        "sbp_observed",
        "temperature",
        "temperature_observed",
    ]
    assert table.schema.field("heart_rate").type == pa.float32()
    assert table.schema.field("time").type == pa.timestamp("us")
    assert grid_vital_names(table) == names
    assert grid_frequency_minutes(table) == FREQ


def test_arrow_input_with_dictionary_vitals_matches_pandas_input() -> None:
    readings = vitals(
        (1, 1, "heart_rate", 60),
        (1, 40, "heart_rate", 90),
        (1, 2, "spo2", 95),
        (1, 3, "mbp", 70),  # a vital that is not studied: ignored
    )
    stays = cohort((1, 10, 0, 60))
    arrow_readings = pa.Table.from_arrays(
        [
            pa.array(readings["icustay_id"].to_numpy(), pa.int32()),
            pa.array(readings["charttime"].to_numpy().astype("datetime64[us]")),
            pa.array(readings["vital"].astype(str))
            .dictionary_encode()
            .cast(pa.dictionary(pa.int8(), pa.string())),
            pa.array(readings["itemid"].to_numpy(), pa.int32()),
            pa.array(readings["value"].to_numpy()),
        ],
        names=["icustay_id", "charttime", "vital", "itemid", "value"],
    )
    names = ("heart_rate", "spo2")
    from_pandas = grid(readings, stays, names=names)
    from_arrow = grid(arrow_readings, pa.Table.from_pandas(stays), names=names)
    assert from_arrow.table.schema.equals(from_pandas.table.schema)
    pd.testing.assert_frame_equal(from_arrow.table.to_pandas(), from_pandas.table.to_pandas())
    assert from_arrow.summary["readings_input"].tolist() == [2, 1]
    assert column(from_arrow, "heart_rate").tolist()[0] == 60
    assert column(from_arrow, "heart_rate").tolist()[2] == 90


def test_summary_columns_and_report() -> None:
    result = grid(hr_at_steps({0: 60, 2: 80}), cohort((1, 10, 0, 60)))
    assert tuple(result.summary.columns) == SUMMARY_COLUMNS
    report = result.report()
    assert report["n_rows"] == 5
    assert report["vitals"][0]["bins_observed"] == 2
    assert report["vitals"][0]["bins_missing"] == 3


def test_write_and_read_grid_round_trip(tmp_path: Path) -> None:
    table = grid(hr_at_steps({0: 60, 2: 80}), cohort((1, 10, 0, 60))).table
    path = tmp_path / "grid.parquet"
    write_grid(table, path)
    back = pq.read_table(path)
    assert back.schema.equals(table.schema)
    pd.testing.assert_frame_equal(back.to_pandas(), table.to_pandas())
    assert read_grid(path, ["heart_rate"]).schema.metadata == table.schema.metadata
    assert [p.name for p in tmp_path.iterdir()] == ["grid.parquet"]
    with pytest.raises(DataError, match="spo2"):
        read_grid(path, ["heart_rate", "spo2"])
    with pytest.raises(DataError, match="does not exist"):
        read_grid(tmp_path / "missing.parquet")


def test_a_grid_of_the_old_filled_format_is_refused(tmp_path: Path) -> None:
    table = grid(hr_at_steps({0: 60, 2: 80}), cohort((1, 10, 0, 60))).table
    meta = {k: v for k, v in table.schema.metadata.items() if b"format_version" not in k}
    path = tmp_path / "grid.parquet"
    write_grid(table.replace_schema_metadata(meta), path)
    with pytest.raises(DataError, match="older vitalfm") as err:
        read_grid(path, ["heart_rate"])
    assert "rerun the grid rule" in err.value.fix
