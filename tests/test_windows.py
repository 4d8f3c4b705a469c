"""Forecasting windows: counts, validity, gathers, causal filling, persistence and errors."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vitalfm.data.grid import META_FREQUENCY, grid_schema
from vitalfm.data.windows import FORMAT_VERSION, WindowSet, build_windows, causal_fill
from vitalfm.errors import ConfigError, DataError

FREQ = 15
VITALS = ("heart_rate", "spo2")
T0 = np.datetime64("2150-03-01T00:00:00", "us")
# 2 h context = 8 steps, 1 h horizon = 4 steps, 1 h stride = 4 steps: windows of 12 steps.
SHAPE = {"context_hours": 2, "horizon_hours": 1, "stride_hours": 1}


def stay(
    icustay_id: int,
    subject_id: int,
    n: int,
    *,
    observed: dict[str, np.ndarray] | None = None,
    stale: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Grid rows of one stay; values encode (stay, vital, step) so gathers can be checked.

    ``stale`` marks empty bins that nevertheless carry a value (as a grid written by another
    tool, or an old filled grid, might): windows must ignore those values.
    """
    observed = observed or {}
    stale = stale or {}
    frame = pd.DataFrame(
        {
            "icustay_id": icustay_id,
            "subject_id": subject_id,
            "time": T0 + np.timedelta64(icustay_id, "D") + np.arange(n) * np.timedelta64(FREQ, "m"),
            "step": np.arange(n),
        }
    )
    for j, name in enumerate(VITALS):
        obs = observed.get(name, np.ones(n, dtype=bool))
        extra = stale.get(name, np.zeros(n, dtype=bool))
        values = icustay_id * 1000 + j * 100 + np.arange(n, dtype=np.float64)
        frame[name] = np.where(obs | extra, values, np.nan)
        frame[f"{name}_observed"] = obs
    return frame


def grid_table(*stays: pd.DataFrame) -> pa.Table:
    frame = pd.concat(stays, ignore_index=True)
    table = pa.Table.from_pandas(frame, schema=grid_schema(VITALS), preserve_index=False)
    return table.replace_schema_metadata({META_FREQUENCY: str(FREQ)})


def manifest(assignment: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "subject_id": np.array(list(assignment), dtype=np.int32),
            "split": list(assignment.values()),
            "n_icustays": np.ones(len(assignment), dtype=np.int32),
        }
    )


def build(grid: pa.Table, splits: dict[int, str], split: str = "train", **kw: object) -> WindowSet:
    options = {**SHAPE, "min_horizon_observed": 1, **kw}
    return build_windows(
        grid,
        manifest(splits),
        split=split,
        vital_names=VITALS,
        frequency_minutes=FREQ,
        **options,
    )


def test_window_counts_and_starts_for_known_stay_lengths() -> None:
    grid = grid_table(stay(1, 10, 40), stay(2, 10, 11), stay(3, 20, 12))
    ws = build(grid, {10: "train", 20: "train"})
    assert (ws.context_steps, ws.horizon_steps, ws.stride_steps) == (8, 4, 4)
    # 40 steps: starts 0, 4, ..., 28 (8 windows); 11 steps: none; 12 steps: one.
    assert len(ws) == 9
    index = ws.index_frame()
    assert index["icustay_id"].tolist() == [1] * 8 + [3]
    assert index["start_step"].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 0]
    # The 11-step stay has no window, so its rows are not stored.
    assert ws.stay_ids.tolist() == [1, 3]
    assert ws.values.shape == (52, 2)
    assert ws.stay_offsets.tolist() == [0, 40, 52]


def test_only_the_requested_split_is_used() -> None:
    grid = grid_table(stay(1, 10, 12), stay(2, 20, 16), stay(3, 30, 12))
    splits = {10: "train", 20: "test", 30: "train"}
    test = build(grid, splits, split="test")
    assert test.stay_ids.tolist() == [2]
    assert test.subject_ids.tolist() == [20]
    assert len(test) == 2
    assert set(build(grid, splits).index_frame()["subject_id"]) == {10, 30}


def test_window_with_unobserved_horizon_is_excluded_and_stale_values_ignored() -> None:
    n = 20  # windows start at 0, 4, 8: horizons are steps 8-11, 12-15, 16-19
    unobserved = np.ones(n, dtype=bool)
    unobserved[8:12] = False  # window 0: nothing observed in the horizon
    unobserved[12:16] = False  # window 1: values present but not observed (stale)
    stale = np.zeros(n, dtype=bool)
    stale[12:16] = True
    grid = grid_table(
        stay(
            1,
            10,
            n,
            observed={"heart_rate": unobserved, "spo2": unobserved},
            stale={"heart_rate": stale, "spo2": stale},
        )
    )
    ws = build(grid, {10: "train"})
    assert ws.index_frame()["start_step"].tolist() == [8]
    assert ws.horizon_observed.tolist() == [[4, 4]]
    # A value in a bin without a reading never reaches a model or the scoring.
    assert np.isnan(ws.values[12:16]).all()


def test_per_vital_horizon_counts_and_windows_for() -> None:
    n = 16  # two windows: horizons at steps 8-11 and 12-15
    spo2 = np.ones(n, dtype=bool)
    spo2[8:12] = False  # spo2 has nothing in the first horizon
    spo2[12:14] = False  # and 2 points in the second
    hr = np.ones(n, dtype=bool)
    hr[8:11] = False  # heart rate: 1 point in the first horizon
    grid = grid_table(stay(1, 10, n, observed={"heart_rate": hr, "spo2": spo2}))
    ws = build(grid, {10: "train"})
    assert ws.horizon_observed.tolist() == [[1, 0], [4, 2]]
    assert ws.horizon_observed.dtype == np.int16
    assert ws.windows_for("heart_rate").tolist() == [0, 1]
    assert ws.windows_for("spo2").tolist() == [1]
    mask = ws.horizon_observed_mask("spo2")
    assert mask.tolist() == [[False] * 4, [False, False, True, True]]
    # With 3 required points, window 0 (1 and 0 points) no longer counts at all.
    strict = build(grid, {10: "train"}, min_horizon_observed=3)
    assert len(strict) == 1
    assert strict.windows_for("spo2").size == 0


def test_gathers_equal_the_grid_slices() -> None:
    grid = grid_table(stay(1, 10, 30), stay(2, 20, 18))
    ws = build(grid, {10: "train", 20: "train"})
    frame = grid.to_pandas()
    index = ws.index_frame()
    context = ws.context("spo2")
    horizon = ws.horizon("spo2")
    assert context.shape == (len(ws), 8) and context.dtype == np.float32
    assert horizon.shape == (len(ws), 4)
    for i, row in index.iterrows():
        rows = frame[frame["icustay_id"] == row["icustay_id"]].set_index("step")
        start = row["start_step"]
        np.testing.assert_array_equal(context[i], rows.loc[start : start + 7, "spo2"])
        np.testing.assert_array_equal(horizon[i], rows.loc[start + 8 : start + 11, "spo2"])
        assert row["context_start"] == rows.loc[start, "time"]
        assert row["forecast_start"] == rows.loc[start + 8, "time"]
    subset = np.array([2, 0])
    np.testing.assert_array_equal(
        ws.context("heart_rate", subset), ws.context("heart_rate")[subset]
    )


def test_context_observed_marks_the_readings() -> None:
    n = 12
    obs = np.ones(n, dtype=bool)
    obs[3] = False
    ws = build(grid_table(stay(1, 10, n, observed={"heart_rate": obs})), {10: "train"})
    expected = np.ones(8, dtype=bool)
    expected[3] = False
    assert ws.context_observed("heart_rate")[0].tolist() == expected.tolist()
    assert np.isnan(ws.context("heart_rate")[0, 3])  # no filling by default
    assert ws.context_observed("spo2").all()


NAN = np.nan


@pytest.mark.parametrize(
    ("method", "gap", "row", "expected"),
    [
        # linear: only between two readings inside the row, runs of <= gap empty bins
        ("linear", 3, [60, NAN, NAN, 90, NAN], [60, 70, 80, 90, NAN]),
        ("linear", 1, [60, NAN, NAN, 90, NAN], [60, NAN, NAN, 90, NAN]),
        ("linear", 9, [NAN, 60, NAN, 80, NAN, NAN], [NAN, 60, 70, 80, NAN, NAN]),
        # ffill: the last reading carried forward over at most `gap` empty bins
        ("ffill", 2, [60, NAN, NAN, NAN, 90, NAN], [60, 60, 60, NAN, 90, 90]),
        ("ffill", 9, [NAN, NAN, 70, NAN], [NAN, NAN, 70, 70]),
        ("none", 9, [60, NAN, 90], [60, NAN, 90]),
        ("linear", 0, [60, NAN, 90], [60, NAN, 90]),
    ],
)
def test_causal_fill_uses_only_the_row(
    method: str, gap: int, row: list[float], expected: list[float]
) -> None:
    filled = causal_fill(np.array([row], dtype=np.float32), method, gap)
    np.testing.assert_array_equal(filled[0], np.array(expected, dtype=np.float32))


def test_filled_contexts_never_see_the_horizon() -> None:
    """Linear filling over a gap that spans the forecast origin stays missing: the reading
    after the origin is not in the context, so it cannot shape it."""
    n = 12  # one window: context steps 0-7, horizon 8-11
    obs = np.ones(n, dtype=bool)
    obs[6:9] = False  # the context ends in a gap; the next reading is at step 9
    fill = {"method": "linear", "max_gap_minutes": 24 * 60, "max_gap_minutes_per_vital": {}}
    ws = build(grid_table(stay(1, 10, n, observed={"heart_rate": obs})), {10: "train"}, fill=fill)
    assert np.isnan(ws.context("heart_rate")[0, 6:]).all()
    ffill = {**fill, "method": "ffill"}
    carried = build(
        grid_table(stay(1, 10, n, observed={"heart_rate": obs})), {10: "train"}, fill=ffill
    ).context("heart_rate")[0]
    assert (carried[6:] == carried[5]).all()  # the last reading before the origin


def test_bad_fill_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"windows\.fill\.method"):
        build(grid_table(stay(1, 10, 12)), {10: "train"}, fill={"method": "cubic"})


def test_save_load_round_trip(tmp_path: Path) -> None:
    ws = build(grid_table(stay(1, 10, 30), stay(2, 20, 18)), {10: "train", 20: "train"})
    npz = tmp_path / "train.windows"  # no .npz suffix: numpy must not append one
    index = tmp_path / "train_index.parquet"
    ws.save(npz, index)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.windows", "train_index.parquet"]
    with zipfile.ZipFile(npz) as archive:  # uncompressed, for fast reads
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    back = WindowSet.load(npz)
    assert back.metadata() == ws.metadata()
    for name in WindowSet.ARRAYS:
        original, loaded = getattr(ws, name), getattr(back, name)
        assert loaded.dtype == original.dtype, name
        np.testing.assert_array_equal(loaded, original, err_msg=name)
    pd.testing.assert_frame_equal(pq.read_table(index).to_pandas(), ws.index_frame())


def test_load_rejects_missing_corrupt_and_stale_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        WindowSet.load(tmp_path / "missing.npz")

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match="corrupt") as err:
        WindowSet.load(garbage)
    assert "rerun the windows rule" in err.value.fix

    ws = build(grid_table(stay(1, 10, 30)), {10: "train"})
    good = tmp_path / "good.npz"
    ws.save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt"):
        WindowSet.load(truncated)

    stale = tmp_path / "stale.npz"
    meta = {**ws.metadata(), "format_version": FORMAT_VERSION + 1}
    arrays = {name: getattr(ws, name) for name in WindowSet.ARRAYS}
    np.savez(stale, metadata=np.array(json.dumps(meta)), **arrays)
    with pytest.raises(DataError, match="format version"):
        WindowSet.load(stale)

    inconsistent = tmp_path / "inconsistent.npz"
    arrays["window_start_rows"] = arrays["window_start_rows"] + 100
    np.savez(inconsistent, metadata=np.array(json.dumps(ws.metadata())), **arrays)
    with pytest.raises(DataError, match="outside its ICU stay"):
        WindowSet.load(inconsistent)


def test_zero_windows_is_an_error_naming_the_split() -> None:
    grid = grid_table(stay(1, 10, 11), stay(2, 20, 30))
    with pytest.raises(DataError, match="'validation'") as err:
        build(grid, {10: "validation", 20: "train"}, split="validation")
    assert "context_hours" in err.value.fix


def test_zero_windows_when_no_horizon_is_observed() -> None:
    nothing = np.zeros(12, dtype=bool)
    grid = grid_table(stay(1, 10, 12, observed={"heart_rate": nothing, "spo2": nothing}))
    with pytest.raises(DataError, match="no forecasting window"):
        build(grid, {10: "train"})


def test_window_hours_must_be_whole_steps() -> None:
    with pytest.raises(ConfigError, match="context_hours"):
        build(grid_table(stay(1, 10, 30)), {10: "train"}, context_hours=0.1)


def test_grid_frequency_mismatch_is_an_error() -> None:
    with pytest.raises(DataError, match="15-minute"):
        build_windows(
            grid_table(stay(1, 10, 30)),
            manifest({10: "train"}),
            split="train",
            vital_names=VITALS,
            frequency_minutes=30,
            **SHAPE,
            min_horizon_observed=1,
        )
