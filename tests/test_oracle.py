"""The synthetic physiology as a Markov process, and the oracle forecaster built on it."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vitalfm.errors import ConfigError, DataError
from vitalfm.synthetic import generator as gen
from vitalfm.synthetic import oracle as oracle_module
from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic.generator import iter_batches, iter_truth
from vitalfm.synthetic.oracle import OracleStates, oracle_samples, origin_grid_point
from vitalfm.synthetic.physiology_state import HR, N_NORMALS, N_UNIFORMS, STEP_MIN, State
from vitalfm.synthetic.realism import (
    bin_readings,
    clean_vitals,
    ensemble_crps,
    persistence_forecast,
)

CFG = {"seed": 23, "n_patients": 120}
FREQ, CONTEXT, HORIZON = 15, 24, 12  # the default study's grid and 6 h -> 3 h windows


@pytest.fixture(scope="module")
def db() -> dict[str, Any]:
    batches = list(iter_batches(CFG, with_truth=True))
    ce = pa.concat_tables([b.tables["chartevents"] for b in batches]).to_pandas()
    icu = pa.concat_tables([b.tables["icustays"] for b in batches]).to_pandas()
    truth = {t.icustay_id: t for b in batches for t in b.truth}
    readings = clean_vitals(ce)
    return {"ce": ce, "icu": icu, "truth": truth, "readings": readings,
            "binned": bin_readings(readings, icu, FREQ)}  # fmt: skip


@pytest.fixture(scope="module")
def windows(db: dict[str, Any]) -> pd.DataFrame:
    """Forecast windows every 6 h: stay position, icustay_id, origin (epoch s), first bin."""
    binned = db["binned"]
    rows = []
    for i, stay in enumerate(binned.icustay_id):
        n_bins = binned.offsets[i + 1] - binned.offsets[i]
        for first in range(CONTEXT, n_bins - HORIZON + 1, 24):
            origin = int(binned.grid_start_s[i]) + first * FREQ * 60
            rows.append((i, int(stay), origin, first))
    return pd.DataFrame(rows, columns=["pos", "icustay_id", "origin_s", "first_bin"])


# --- one transition function, no future in the state -----------------------------------------


def test_replaying_a_stay_from_its_state_with_the_generators_innovations_is_exact(
    db: dict[str, Any],
) -> None:
    septic = [t for t in db["truth"].values() if t.septic and t.profile.max() > 0.5]
    for t in (septic[0], septic[-1], next(t for t in db["truth"].values() if not t.septic)):
        z, u = gen.stay_innovations(CFG, t.icustay_id)
        n = t.values.shape[1]
        assert z.shape == (n - 1, N_NORMALS) and u.shape == (n - 1, N_UNIFORMS)
        for k in (0, n // 3, n - 2):
            replay = phys.simulate(t.params, t.state_at(k), z[k:, None], u[k:, None])
            np.testing.assert_array_equal(replay.obs.values[:, 0, :].T, t.values[:, k:])
            np.testing.assert_array_equal(replay.obs.mbp[:, 0], t.mbp[k:])
            for f in dataclasses.fields(State):
                np.testing.assert_array_equal(
                    getattr(replay.states, f.name)[:, 0], getattr(t.states, f.name)[k:], f.name
                )


def test_iter_truth_regenerates_the_same_truth_without_chartevents(db: dict[str, Any]) -> None:
    ids = sorted(db["truth"])[::7]
    for t in iter_truth(CFG, ids):
        ref = db["truth"][t.icustay_id]
        np.testing.assert_array_equal(t.values, ref.values)
        np.testing.assert_array_equal(t.states.ep_level, ref.states.ep_level)
        assert (t.arterial_line, t.fahrenheit_p) == (ref.arterial_line, ref.fahrenheit_p)


def test_the_state_holds_no_future_onsets_come_from_a_hazard() -> None:
    """Two futures of one state differ in whether and when an episode starts."""
    rng = np.random.default_rng(0)
    n = 400
    base = phys.draw_baselines(rng, n)
    params = phys.draw_params(rng, base, np.full(n, 480.0), np.ones(n, dtype=bool))
    start = phys.initial_state(rng, params)
    # one septic stay without an episode, copied 400 times: all futures start from one state
    one = int(np.flatnonzero(start.ep_phase == 0)[0])
    params, start = params.take(np.full(n, one)), start.take(np.full(n, one))
    assert not any(f.name.startswith(("onset", "next")) for f in dataclasses.fields(State))
    onsets = []
    for seed in (1, 2):
        z, u = phys.draw_innovations(np.random.default_rng(seed), 12 * 48, n)
        tr = phys.simulate(params, start, z, u)
        started = (tr.states.ep_phase[1:] == 1) & (tr.states.ep_phase[:-1] == 0)
        onsets.append(np.where(started.any(axis=0), started.argmax(axis=0), -1))
    assert not np.array_equal(onsets[0], onsets[1])
    first = onsets[0][onsets[0] >= 0] * STEP_MIN / 60
    assert 0.3 < (onsets[0] >= 0).mean() < 1.0  # some futures have no episode in 48 h
    assert np.ptp(first) > 12  # onsets spread over the hours: a hazard, not a schedule
    # the hazard is the physiology's: early onsets about as often as it says
    expected = 1 - np.exp(-(phys.ONSET_EARLY_PER_H + phys.ONSET_LATE_PER_H))
    assert abs((first < 1).mean() * (onsets[0] >= 0).mean() - expected) < 0.05


# --- time alignment --------------------------------------------------------------------------


def test_chart_rows_read_the_grid_point_of_their_minute(db: dict[str, Any]) -> None:
    """A chart row at minute m reads grid point (m - grid_start) // 5: HR residuals are
    smallest (the monitor's noise) at that index, larger one point either side."""
    r = db["readings"]
    hr = r[(r.vital == "heart_rate") & r.itemid.isin([211, 220045])]
    spread = {}
    for shift in (-1, 0, 1):
        res = []
        for stay, rows in hr.groupby("icustay_id"):
            t = db["truth"][stay]
            k = origin_grid_point(t.grid_start, rows.charttime.to_numpy()) + shift
            ok = (k >= 0) & (k < t.values.shape[1])
            res.append(rows.value.to_numpy()[ok] - t.values[HR, k[ok]])
        res = np.concatenate(res)
        spread[shift] = np.median(np.abs(res))
    assert spread[0] < spread[-1] and spread[0] < spread[1]
    assert spread[0] < 2.0  # |N(0, 2) rounded|: median about 1.35


def test_oracle_starts_from_the_last_grid_point_at_or_before_the_origin(
    db: dict[str, Any],
) -> None:
    stays = [t for t in db["truth"].values() if t.values.shape[1] > 100][:5]
    ids = np.repeat([t.icustay_id for t in stays], 3)
    origins = np.concatenate(
        [t.grid_start - t.grid_start % 900 + 900 * np.array([8, 9, 30]) for t in stays]
    )
    state = OracleStates(CFG, ids).state_at_origin(ids, origins)
    for i, (stay, origin) in enumerate(zip(ids, origins, strict=True)):
        t = db["truth"][stay]
        minutes = t.grid_start // 60 + STEP_MIN * np.arange(t.values.shape[1])
        k = np.flatnonzero(minutes <= origin // 60).max()  # realised at or before the origin
        assert state.k[i] == k
        np.testing.assert_array_equal(state.noise[i], t.states.noise[k])


# --- the oracle ------------------------------------------------------------------------------


def test_oracle_samples_contract(db: dict[str, Any], windows: pd.DataFrame) -> None:
    params = list(inspect.signature(oracle_samples).parameters)
    assert params == ["synthetic_cfg", "stay_ids", "origins_s", "vital", "horizon_steps",
                      "frequency_minutes", "num_samples", "seed"]  # fmt: skip
    w = windows.iloc[:40]
    args = (CFG, w.icustay_id.to_numpy(), w.origin_s.to_numpy())
    a = oracle_samples(*args, "mbp", HORIZON, FREQ, 30, 5)
    assert a.shape == (40, 30, HORIZON) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, oracle_samples(*args, "mbp", HORIZON, FREQ, 30, 5))
    assert not np.array_equal(a, oracle_samples(*args, "mbp", HORIZON, FREQ, 30, 6))
    states = oracle_module.oracle_states(CFG, [])
    one = states.samples(*args[1:], "mbp", HORIZON, FREQ, 30, 5, threads=1)
    np.testing.assert_array_equal(one, states.samples(*args[1:], "mbp", HORIZON, FREQ, 30, 5,
                                                      threads=2))  # fmt: skip
    temp = oracle_samples(*args, "temperature", HORIZON, FREQ, 30, 5)
    assert 30 < temp.mean() < 42
    with pytest.raises(ConfigError, match="cannot forecast vital"):
        oracle_samples(*args, "lactate", HORIZON, FREQ, 30, 5)
    with pytest.raises(ConfigError, match="origins"):
        oracle_samples(CFG, args[1], args[2][:3], "mbp", HORIZON, FREQ, 30, 5)
    with pytest.raises(DataError, match="outside their ICU stay"):
        oracle_samples(CFG, args[1][:1], args[2][:1] + 86400 * 30, "mbp", HORIZON, FREQ, 30, 5)
    with pytest.raises(DataError, match="not in the synthetic"):
        oracle_samples(CFG, np.array([999]), np.array([0]), "mbp", HORIZON, FREQ, 30, 5)


def test_oracle_regenerates_a_database_once(
    windows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = gen.iter_truth

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(gen, "iter_truth", counting)
    monkeypatch.setattr(oracle_module, "_CACHE", {})
    w = windows.iloc[:20]
    for vital in ("heart_rate", "spo2", "resp_rate"):
        oracle_samples(CFG, w.icustay_id.to_numpy(), w.origin_s.to_numpy(), vital, 4, FREQ, 8, 0)
    assert len(calls) == 1


def test_stays_added_in_two_calls_equal_stays_added_at_once(windows: pd.DataFrame) -> None:
    """Stays regenerated in a later call are merged in icustay_id order: the same states and
    samples as when every stay is asked for at once (interleaved ids, so the merge reorders)."""
    w = windows.drop_duplicates("icustay_id").iloc[:12]
    ids, origins = w.icustay_id.to_numpy(), w.origin_s.to_numpy()
    at_once = OracleStates(CFG, ids)
    in_two = OracleStates(CFG, ids[1::2])
    in_two.add(ids[::2])
    np.testing.assert_array_equal(in_two.stay_ids, at_once.stay_ids)
    for got, expected in zip(
        dataclasses.astuple(in_two.state_at_origin(ids, origins)),
        dataclasses.astuple(at_once.state_at_origin(ids, origins)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, expected)
    args = (ids, origins, "mbp", HORIZON, FREQ, 16, 3)
    np.testing.assert_array_equal(
        in_two.samples(*args, threads=1), at_once.samples(*args, threads=1)
    )


def test_oracle_is_calibrated_and_beats_persistence(
    db: dict[str, Any], windows: pd.DataFrame
) -> None:
    binned = db["binned"]
    w = windows
    pairs = list(zip(w.pos, w.first_bin, strict=True))
    rng = np.random.default_rng(0)
    report, first_bins = {}, []
    for vital in ("heart_rate", "mbp", "spo2", "temperature"):
        samples = oracle_samples(
            CFG, w.icustay_id.to_numpy(), w.origin_s.to_numpy(), vital, HORIZON, FREQ, 100, 1
        )
        y = np.stack([binned.stay(p, vital)[b : b + HORIZON] for p, b in pairs])
        last = persistence_forecast(
            np.stack([binned.stay(p, vital)[b - CONTEXT : b] for p, b in pairs])
        )
        scored = ~np.isnan(y) & ~np.isnan(last)[:, None]
        # randomised PIT (ties matter for integer readings): the central 80 % holds ~80 %
        below = (samples < y[:, None, :]).mean(axis=1)
        tie = (samples == y[:, None, :]).mean(axis=1)
        pit = below + rng.random(below.shape) * tie
        inside = (pit >= 0.1) & (pit <= 0.9)
        central, central_first = inside[scored].mean(), inside[:, 0][scored[:, 0]].mean()
        first_bins.append(inside[:, 0][scored[:, 0]])
        oracle_mae = np.abs(np.median(samples, axis=1) - y)[scored].mean()
        persistence_mae = np.abs(last[:, None] - y)[scored].mean()
        oracle_crps = ensemble_crps(samples, np.nan_to_num(y))[scored].mean()
        report[vital] = (central, central_first, oracle_mae, persistence_mae, oracle_crps,
                         scored.sum())  # fmt: skip
        assert 0.75 <= central <= 0.85, (vital, central)
        # CRPS of a point forecast is its MAE: the oracle's must be lower than persistence's
        assert oracle_crps < persistence_mae, (vital, oracle_crps, persistence_mae)
    # the first bins too (all vitals): the oracle starts from the right grid point
    assert 0.75 <= np.concatenate(first_bins).mean() <= 0.85
    print(f"\n{len(w)} windows; vital: central-80 coverage (all bins, first bin), MAE of the "
          "oracle's median, MAE of persistence, CRPS of the oracle, scored points")  # fmt: skip
    for vital, values in report.items():
        print(vital, " ".join(f"{v:.3f}" for v in values))


def test_ensemble_crps_and_persistence_helpers_against_their_definitions() -> None:
    rng = np.random.default_rng(0)
    samples, y = rng.normal(size=(3, 7, 4)), rng.normal(size=(3, 4))
    pairwise = np.abs(samples[:, :, None, :] - samples[:, None, :, :]).mean(axis=(1, 2))
    expected = np.abs(samples - y[:, None, :]).mean(axis=1) - 0.5 * pairwise
    np.testing.assert_allclose(ensemble_crps(samples, y), expected, atol=1e-12)
    context = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan] * 4, [5.0, 6.0, 7.0, 8.0]])
    np.testing.assert_array_equal(persistence_forecast(context), [3.0, np.nan, 8.0])


def test_per_series_seeds_make_each_series_draws_its_own(windows: pd.DataFrame) -> None:
    """With one seed per series (what the engine passes), a series' draws do not depend on
    which other series are asked with it, their number or order."""
    w = windows.iloc[:12]
    ids, origins = w.icustay_id.to_numpy(), w.origin_s.to_numpy()
    seeds = np.arange(100, 112, dtype=np.int64) * 7_919
    states = oracle_module.oracle_states(CFG, ids)
    every = states.samples(ids, origins, "mbp", HORIZON, FREQ, 16, seeds)
    assert np.isfinite(every).all()
    picked = np.array([9, 2, 5])
    some = states.samples(ids[picked], origins[picked], "mbp", HORIZON, FREQ, 16, seeds[picked])
    np.testing.assert_array_equal(some, every[picked])
    threaded = states.samples(ids, origins, "mbp", HORIZON, FREQ, 16, seeds, threads=2)
    np.testing.assert_array_equal(threaded, every)
    with pytest.raises(ConfigError, match="seeds for"):
        states.samples(ids, origins, "mbp", HORIZON, FREQ, 16, seeds[:3])
