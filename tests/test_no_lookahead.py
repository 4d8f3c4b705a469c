"""No look-ahead: nothing at or after a window's forecast origin reaches what a model sees.

The whole data path is exercised as the workflow runs it (raw readings -> grid -> windows ->
the engine's forecasting and training data): every reading of one ICU stay at or after one
window's origin is perturbed, the grid and windows are rebuilt, and every window whose context
ends at or before that origin (and every window of the other stays) must give bit-identical
model inputs, training examples and forecasts, for every family and baseline and every way of
filling a context's gaps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from vitalfm.data.grid import resample_stays
from vitalfm.data.windows import WindowSet, build_windows
from vitalfm.engine.forecast import ForecastConfig, forecast_windows
from vitalfm.engine.training_data import SeriesPairs, WindowTrainingData
from vitalfm.models.base import Forecaster
from vitalfm.models.registry import forecaster_class

T0 = pd.Timestamp("2150-03-01 00:00:00")
FREQ = 15
VITALS = ("heart_rate", "mbp")
SHAPE = {"context_hours": 6, "horizon_hours": 3, "stride_hours": 1}
N_STAYS = 3
STAY_HOURS = 24
FILLS = {
    "none": {"method": "none"},
    "ffill": {"method": "ffill", "max_gap_minutes": 120, "max_gap_minutes_per_vital": {}},
    "linear": {"method": "linear", "max_gap_minutes": 120, "max_gap_minutes_per_vital": {}},
}


def readings(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vital-like charting for a few stays: roughly hourly with jitter, bursts, gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for stay in range(N_STAYS):
        start = T0 + pd.Timedelta(days=2 * stay, minutes=int(rng.integers(0, 14)))
        for vital, level in zip(VITALS, (90.0, 75.0), strict=True):
            minute = float(rng.uniform(0, 30))
            while minute < STAY_HOURS * 60:
                value = level + 8 * np.sin(minute / 180) + rng.normal(0, 3)
                rows.append((200001 + stay, start + pd.Timedelta(minutes=minute), vital, value))
                minute += float(rng.choice([15, 20, 60, 60, 75, 150]))
    frame = pd.DataFrame(rows, columns=["icustay_id", "charttime", "vital", "value"])
    frame["vital"] = pd.Categorical(frame["vital"])
    frame["itemid"] = 220045
    cohort = pd.DataFrame(
        {
            "subject_id": np.arange(1001, 1001 + N_STAYS),
            "icustay_id": np.arange(200001, 200001 + N_STAYS),
            "intime": [T0 + pd.Timedelta(days=2 * s) for s in range(N_STAYS)],
            "outtime": [T0 + pd.Timedelta(days=2 * s, hours=STAY_HOURS) for s in range(N_STAYS)],
        }
    )
    return frame, cohort


def windows_of(vitals: pd.DataFrame, cohort: pd.DataFrame, fill: dict) -> WindowSet:
    grid = resample_stays(vitals, cohort, vital_names=VITALS, frequency_minutes=FREQ).table
    manifest = pd.DataFrame({"subject_id": cohort["subject_id"], "split": "test", "n_icustays": 1})
    return build_windows(
        grid,
        manifest,
        split="test",
        vital_names=VITALS,
        frequency_minutes=FREQ,
        min_horizon_observed=1,
        fill=fill,
        **SHAPE,
    )


def perturbed_after(vitals: pd.DataFrame, stay: int, origin: pd.Timestamp) -> pd.DataFrame:
    """Every reading of ``stay`` at or after ``origin`` moved far from where it was."""
    out = vitals.copy()
    after = (out["icustay_id"] == stay) & (out["charttime"] >= origin)
    shift = np.random.default_rng(1).normal(0, 25, int(after.sum()))
    out.loc[after, "value"] = out.loc[after, "value"] + 40 + shift
    return out


def scenario(fill: dict) -> tuple[WindowSet, WindowSet, np.ndarray]:
    """(original windows, perturbed windows, which windows must be unchanged).

    The origin is chosen where the context ends in a gap and the next reading falls in the
    horizon: filling over the whole stay (the old grid) interpolated toward that reading.
    """
    vitals, cohort = readings()
    before = windows_of(vitals, cohort, fill)
    index = before.index_frame()
    stay = 200002
    candidates = index[index["icustay_id"] == stay]
    chosen = None
    for i, row in candidates.iterrows():
        mask = before.context_observed("heart_rate", np.array([i]))[0]
        horizon = before.horizon_observed_mask("heart_rate", np.array([i]))[0]
        if not mask[-1] and horizon[:4].any():
            chosen = row
            break
    assert chosen is not None, "the synthetic charting must give a context ending in a gap"
    origin = pd.Timestamp(chosen["forecast_start"])
    after = windows_of(perturbed_after(vitals, stay, origin), cohort, fill)
    assert len(after) == len(before)  # values changed, not which windows exist
    unchanged = (index["icustay_id"] != stay) | (index["forecast_start"] <= origin)
    # the perturbation is real: the chosen window's truth moved
    rows = np.array([chosen.name])
    assert not np.array_equal(
        before.horizon("heart_rate", rows), after.horizon("heart_rate", rows), equal_nan=True
    )
    return before, after, unchanged.to_numpy()


@pytest.mark.parametrize("fill", list(FILLS))
def test_model_inputs_and_training_examples_ignore_what_follows_the_origin(fill: str) -> None:
    before, after, unchanged = scenario(FILLS[fill])
    rows = np.flatnonzero(unchanged)
    changed = np.flatnonzero(~unchanged)
    assert rows.size and changed.size
    for vital in VITALS:
        np.testing.assert_array_equal(before.context(vital, rows), after.context(vital, rows))
        np.testing.assert_array_equal(
            before.context_observed(vital, rows), after.context_observed(vital, rows)
        )
    # later windows of the stay legitimately see the perturbed readings
    assert not np.array_equal(
        before.context("heart_rate", changed), after.context("heart_rate", changed), equal_nan=True
    )
    # training examples: every (window, vital) series of an unchanged window keeps its context
    pairs = SeriesPairs.from_windows(before, VITALS), SeriesPairs.from_windows(after, VITALS)
    np.testing.assert_array_equal(pairs[0].window_ids, pairs[1].window_ids)
    keep = np.isin(pairs[0].window_ids, rows)
    np.testing.assert_array_equal(pairs[0].context[keep], pairs[1].context[keep])
    # and so do the training batches drawn from them (same rows for the same seed and step)
    data = [
        WindowTrainingData(w, w, VITALS, seed=0, validation_max_series=64) for w in (before, after)
    ]
    for step in range(3):
        batches = [d.train_batch(step, 32) for d in data]
        drawn = torch.from_numpy(
            keep[np.random.default_rng([0, 0, step]).integers(0, len(keep), 32)]
        )
        torch.testing.assert_close(
            batches[0].context[drawn], batches[1].context[drawn], rtol=0, atol=0, equal_nan=True
        )


def _standin(family: str, name: str) -> Callable[[], Forecaster]:
    return lambda: forecaster_class(family).standin(name, horizon=12, seed=0)


def _scratch(family: str) -> Callable[[], Forecaster]:
    return lambda: forecaster_class(family).from_scratch({}, 24, 12, seed=0)


FAMILIES: dict[str, Callable[[], Forecaster]] = {
    "chronos-t5": _standin("chronos", "chronos-t5"),
    "chronos-bolt": _standin("chronos", "chronos-bolt"),
    "chronos-2": _standin("chronos", "chronos-2"),
    "moirai": _standin("moirai", "moirai"),
    "moirai-2": _standin("moirai", "moirai-2"),
    "lag-llama": _standin("lag_llama", "lag-llama"),
    "persistence": _scratch("persistence"),
    "nhits": _scratch("nhits"),
    "nbeats": _scratch("nbeats"),
    "dlinear": _scratch("dlinear"),
}


@pytest.mark.parametrize("fill", ["none", "linear"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_forecasts_ignore_what_follows_the_origin(family: str, fill: str) -> None:
    """Each family's forecasts of the unchanged windows are bit-identical on CPU.

    Each window is forecast in a batch of its own: the draws of sampling models then do not
    depend on the other series of a batch (whether a batch's series influence each other is
    a separate question, of patient isolation, not of look-ahead).
    """
    before, after, unchanged = scenario(FILLS[fill])
    torch.set_num_threads(1)
    forecaster = FAMILIES[family]()
    config = ForecastConfig(num_samples=8, batch_size=1, seed=3)
    frames = [
        forecast_windows(forecaster, w, VITALS, config, progress=False).table.to_pandas()
        for w in (before, after)
    ]
    keep = [f["window_id"].isin(np.flatnonzero(unchanged)).to_numpy() for f in frames]
    predictions = [c for c in frames[0].columns if c == "median" or c.startswith("q")]
    ours, theirs = frames[0][keep[0]], frames[1][keep[1]]
    assert len(ours) == len(theirs) > 0
    np.testing.assert_array_equal(ours["window_id"], theirs["window_id"])
    np.testing.assert_array_equal(ours[predictions].to_numpy(), theirs[predictions].to_numpy())
    # the forecasts of later windows of the perturbed stay do change: the test can fail
    moved = [f[~k] for f, k in zip(frames, keep, strict=True)]
    assert not np.array_equal(moved[0]["median"].to_numpy(), moved[1]["median"].to_numpy())
