"""Patient isolation: a (window, vital) series' forecast is bit-identical on CPU whatever else
the engine forecasts with it (other patients' series added, removed or reordered, other
vitals, another number of series), for every family, through ``forecast_windows`` as the study
runs it: its quantile rows and its sample paths (np.array_equal, not allclose)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from vitalfm.data.windows import WindowSet
from vitalfm.engine.forecast import ForecastConfig, forecast_windows, series_seeds
from vitalfm.engine.training_data import usable_rows
from vitalfm.models.base import Forecaster
from vitalfm.models.registry import forecaster_class
from vitalfm.testing import TINY_BASELINES, toy_windows

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

VITALS = ("heart_rate", "mbp")
TARGET_STAY, TARGET_WINDOW, TARGET_VITAL = 2, 3, "mbp"  # the stay's 4th window, its MBP
#: Which stays (indices into the full set, in this order) and vitals each forecast sees: the
#: target alone, with others added, removed and reordered, and with another vital, so the
#: number of series and the target's place among them change.
SELECTIONS: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = (
    ((0, 1, 2, 3, 4, 5), VITALS),
    ((2,), ("mbp",)),
    ((5, 2, 0), VITALS),
    ((4, 3, 2, 1), ("mbp", "heart_rate")),
    ((3, 2), ("mbp",)),
)
CONFIG = ForecastConfig(num_samples=8, batch_size=6, seed=11)


def pretrained(name: str) -> Callable[[], Forecaster]:
    def build() -> Forecaster:
        family = forecaster_class(
            {
                "chronos-t5": "chronos",
                "chronos-bolt": "chronos",
                "chronos-2": "chronos",
                "moirai": "moirai",
                "moirai-2": "moirai",
                "lag-llama": "lag_llama",
            }[name]
        )
        return family.standin(name, horizon=12, seed=0)

    return build


def baseline(name: str) -> Callable[[], Forecaster]:
    def build() -> Forecaster:
        options = TINY_BASELINES[name].get("options", {})
        return forecaster_class(name).from_scratch(options, 24, 12, 0)

    return build


FAMILIES = [
    pytest.param(pretrained("chronos-t5"), id="chronos-t5"),
    pytest.param(pretrained("chronos-bolt"), id="chronos-bolt"),
    pytest.param(pretrained("chronos-2"), id="chronos-2"),
    pytest.param(pretrained("moirai"), id="moirai"),
    pytest.param(pretrained("moirai-2"), id="moirai-2"),
    pytest.param(pretrained("lag-llama"), id="lag-llama"),
    pytest.param(baseline("persistence"), id="persistence"),
    pytest.param(baseline("nhits"), id="nhits"),
    pytest.param(baseline("nbeats"), id="nbeats"),
    pytest.param(baseline("dlinear"), id="dlinear"),
]


def stays_of(windows: WindowSet, order: tuple[int, ...]) -> WindowSet:
    """The windows of stays ``order`` (indices into ``windows``' stays), in that order."""
    offsets, values, observed, starts, stay_index, horizon = [0], [], [], [], [], []
    for new, stay in enumerate(order):
        begin, end = windows.stay_offsets[stay], windows.stay_offsets[stay + 1]
        mine = np.flatnonzero(windows.window_stay_index == stay)
        starts.append(windows.window_start_rows[mine] - begin + offsets[-1])
        stay_index.append(np.full(len(mine), new, np.int32))
        horizon.append(windows.horizon_observed[mine])
        values.append(windows.values[begin:end])
        observed.append(windows.observed[begin:end])
        offsets.append(offsets[-1] + end - begin)
    picked = list(order)
    return replace(
        windows,
        values=np.concatenate(values),
        observed=np.concatenate(observed),
        stay_ids=windows.stay_ids[picked],
        subject_ids=windows.subject_ids[picked],
        stay_offsets=np.array(offsets, np.int64),
        stay_start_times=windows.stay_start_times[picked],
        window_start_rows=np.concatenate(starts),
        window_stay_index=np.concatenate(stay_index),
        horizon_observed=np.concatenate(horizon),
    )


def target_forecast(
    forecaster: Forecaster, windows: WindowSet, vitals: tuple[str, ...]
) -> tuple[int, np.ndarray, np.ndarray]:
    """(series forecast, the target's quantile block [H, columns], its paths [points, S])."""
    stay = int(np.flatnonzero(windows.stay_ids == full_windows().stay_ids[TARGET_STAY])[0])
    window = int(np.flatnonzero(windows.window_stay_index == stay)[TARGET_WINDOW])
    result = forecast_windows(forecaster, windows, vitals, CONFIG, progress=False)
    table, paths = result.table, result.paths
    mine = (table.column("window_id").to_numpy() == window) & (
        table.column("vital").to_numpy(zero_copy_only=False) == TARGET_VITAL
    )
    assert mine.sum() == windows.horizon_steps
    floats = [c for c in table.column_names if c == "median" or c.startswith("q")]
    block = np.stack([table.column(c).to_numpy()[mine] for c in floats], axis=1)
    assert block.dtype == np.float32
    in_paths = (paths.column("window_id").to_numpy() == window) & (
        paths.column("vital").to_numpy(zero_copy_only=False) == TARGET_VITAL
    )
    samples = paths.column("samples").combine_chunks().flatten().to_numpy()
    drawn = samples.reshape(-1, CONFIG.num_samples)[in_paths] if len(samples) else samples
    return int(result.facts["series"]), block, drawn


_FULL: list[WindowSet] = []


def full_windows() -> WindowSet:
    if not _FULL:
        _FULL.append(toy_windows("test", n_stays=6, seed=5))
    return _FULL[0]


@pytest.mark.parametrize("build", FAMILIES)
def test_a_series_forecast_does_not_depend_on_the_other_series(
    build: Callable[[], Forecaster],
) -> None:
    forecaster = build()
    full = full_windows()
    first_series, reference, reference_paths = target_forecast(forecaster, full, VITALS)
    assert np.isfinite(reference[:, 0]).all()  # the median (levels beyond a model's: NaN)
    counts = {first_series}
    for order, vitals in SELECTIONS[1:]:
        torch.manual_seed(len(order))  # the global RNG's state must not matter either
        series, block, drawn = target_forecast(forecaster, stays_of(full, order), vitals)
        counts.add(series)
        assert np.array_equal(block, reference, equal_nan=True), (order, vitals)
        assert drawn.shape == reference_paths.shape
        assert np.array_equal(drawn, reference_paths), (order, vitals)
    assert len(counts) == len(SELECTIONS)  # every selection forecast another number of series


def test_the_test_moves_the_target_between_calls_and_positions() -> None:
    """The selections put the target series at other positions of other calls (so a batch
    position seed or a call-shape effect would show)."""
    full = full_windows()
    places = set()
    for order, vitals in SELECTIONS:
        windows = stays_of(full, order)
        stay = order.index(TARGET_STAY)
        window = np.flatnonzero(windows.window_stay_index == stay)[TARGET_WINDOW]
        position = 0
        for vital in vitals:
            rows = usable_rows(windows, vital)
            if vital == TARGET_VITAL:
                position += int(np.flatnonzero(rows == window)[0])
                break
            position += len(rows)
        places.add(divmod(position, CONFIG.batch_size))
    assert len(places) == len(SELECTIONS)


def test_series_seeds_are_keyed_by_the_series_not_its_place() -> None:
    stays = np.array([7, 7, 9], np.int64)
    starts = np.array([0, 900, 0], np.int64)
    seeds = series_seeds(3, stays, starts, ["mbp", "mbp", "mbp"])
    assert seeds.dtype == np.int64 and (seeds >= 0).all() and len(set(seeds.tolist())) == 3
    reordered = series_seeds(3, stays[::-1], starts[::-1], ["mbp"] * 3)
    assert np.array_equal(reordered, seeds[::-1])
    assert series_seeds(3, stays[1:], starts[1:], ["mbp"] * 2).tolist() == seeds[1:].tolist()
    other: dict[str, Any] = {
        "seed": series_seeds(4, stays, starts, ["mbp"] * 3),
        "vital": series_seeds(3, stays, starts, ["heart_rate"] * 3),
    }
    for changed in other.values():
        assert not set(changed.tolist()) & set(seeds.tolist())
