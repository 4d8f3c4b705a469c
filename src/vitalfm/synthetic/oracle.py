"""The oracle forecaster: the synthetic database's own predictive distribution.

For a forecast origin of a stay, the oracle takes the stay's latent Markov state (see
:mod:`vitalfm.synthetic.physiology`) at the last 5-minute grid point at or before the origin,
simulates the latent forward many times with the same transition function the generator uses
(:func:`~vitalfm.synthetic.physiology.step`, with fresh randomness: episode onsets and ends,
noise, treatments) and applies the generator's measurement and charting model to each path.
Sample h is a draw of what the study scores for grid bin
``[origin + h * freq, origin + (h + 1) * freq)``: the mean of the cleaned chart readings of the
vital in that bin, given that the bin has at least one reading. That condition is not neutral:
nurses chart more often while a patient is unstable, so a bin is more likely observed on some
paths than on others; each bin's draws are therefore resampled from the series' paths in
proportion to the chance that the bin is charted on them (so draw s of bin h and draw s of bin
h + 1 need not come from one path: the draws are right bin by bin, which is how the study
scores them). Without this the oracle's intervals missed low blood pressures (measured: 14 %
below the 10 % quantile instead of 10 %).

The oracle knows the latent state, which no model working from the charted readings can
know, so it is a bound: the best any model could do on these data, not a competitor.

Time alignment (tested): the generator's latent grid starts at the stay's first whole minute
``base_min`` (``StayTruth.grid_start / 60``); a chart row at minute ``m`` (its charttime is
``60 m`` epoch seconds) reads grid point ``(m - base_min) // 5``, and the study's bins are
``[origin, origin + freq)`` in the same epoch minutes. Grid point ``(origin_min - base_min) // 5``
is realised at or before the origin, so the oracle conditions on it and simulates the rest.

Approximations (the measurement side only; the latent is simulated exactly):

* The number of charting rounds in a bin follows the generator's own round schedule, measured
  once per grid frequency by running the generator's scheduling code on long synthetic stays
  (by the bin's minute of the hour, which matters because half the rounds are moved to the
  full hour), independently of neighbouring bins; round minutes inside a bin are drawn from
  the same measurement. Multi-hour charting gaps are ignored (they only empty bins, and empty
  bins are not scored).
* Extra readings while a patient is unstable: each 15-minute slot of the bin holds one with
  probability ``P_EXTRA`` times the fraction of the bin's minutes in which the path is in
  alert (exact for 15-minute bins, slots treated as independent for longer bins), at a
  uniform minute.
* Conditioning on "at least one reading" within a path: the number of charting events is
  drawn from its distribution reweighted by the chance that at least one of them carries the
  vital; which sources an event carries is then redrawn (up to ten times) until the bin has a
  reading, after which the stay's most likely source of the first event is forced. An event
  is an extra reading or a round in proportion to their expected numbers in the bin.
* Sources within an event (arterial, cuff, second arterial line, manual cuff; RR and RR total)
  are independent, as in the generator; text-only and out-of-range artefacts remove a reading
  with their probability, duplicates add a second reading one or two units away, and the
  cleaning's range rules are applied. Temperature comes from nurse assessments (no extra
  readings), in degF with the stay's probability, converted back to degC as the study does.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitalfm import mimic
from vitalfm.errors import ConfigError, DataError
from vitalfm.synthetic import generator as gen
from vitalfm.synthetic import physiology as phys

VITALS: tuple[str, ...] = mimic.VITAL_NAMES
PATHS_PER_CHUNK = 8192  # sample paths simulated at once (fits the CPU caches best)
MAX_EVENTS = 6  # charting events of one kind in one bin (more are vanishingly rare)
RESAMPLE_TRIES = 10
_U63 = (1 << 63) - 1  # seed entropy must be non-negative
MAX_OUTSIDE_POINTS = 24 * 60 // phys.STEP_MIN  # origins at most a day outside the stay
_SURVIVE = 1.0 - gen.P_TEXT_ONLY - gen.P_JUNK
_CHART_SEED = 20_240_513  # the fixed stream that measures the charting schedule


def origin_grid_point(grid_start_s: int | np.ndarray, time_s: int | np.ndarray) -> np.ndarray:
    """The latent grid point a moment reads: a chart row at ``time_s`` (epoch seconds, whole
    minutes) reads grid point ``(minute - base_min) // 5`` of the stay whose grid starts at
    ``grid_start_s`` (``StayTruth.grid_start``); at a forecast origin it is the last grid point
    realised at or before the origin, the one the oracle conditions on."""
    since = np.asarray(time_s, dtype=np.int64) // 60 - np.asarray(grid_start_s, np.int64) // 60
    return since // phys.STEP_MIN


def _range_ok(vital: str, value: np.ndarray) -> np.ndarray:
    """The cleaning's plausibility rule of the vital (all its items share it, in degC here)."""
    item = next(i for i in mimic.CHART_ITEMS if i.vital == vital and not i.fahrenheit)
    high_ok = value <= item.high if item.high_inclusive else value < item.high
    return (value > item.low) & high_ok


# --- the charting schedule, measured from the generator's own code -----------------------------


@functools.cache
def charting_tables(frequency_minutes: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """How many charting events of ``kind`` ("rounds" or "assessments") a bin holds and at
    which of its minutes, by the minute of the hour the bin starts at, measured by running
    the generator's scheduling code on long stays (a fixed stream: deterministic).

    Returns ``(p_count, minute_table)``: ``p_count[phase, n]``, n = 0..m-1 (m leaves room for
    extra readings), and ``minute_table[phase, i]`` the minute at quantile (i + 0.5) / 1024 of
    an event's minute in the bin (inverse-CDF lookup).
    """
    f = int(frequency_minutes)
    rng = np.random.default_rng(_CHART_SEED)
    n_stays, hours = 600, 96
    length = np.full(n_stays, hours * 60, dtype=np.int64)
    base_min = 10**6 + rng.integers(0, 7 * 1440, n_stays)
    if kind == "rounds":
        intervals = gen.round_intervals(rng, (n_stays, hours * 60 // 15 + 2))
        first = rng.uniform(0.0, gen.ROUND_FIRST_MAX_MIN, n_stays)
        snap = gen.ROUND_SNAP_P
    elif kind == "assessments":
        intervals = rng.uniform(*gen.ASSESSMENT_INTERVAL_MIN, (n_stays, hours + 2))
        first = rng.uniform(0.0, gen.ASSESSMENT_FIRST_MAX_MIN, n_stays)
        snap = gen.ASSESSMENT_SNAP_P
    else:
        raise ValueError(f"unknown charting kind {kind!r}")
    stay, t = gen._schedule(rng, length, base_min, intervals, first, snap)
    stay, t = gen._unique_events(stay, t)
    minute = base_min[stay] + t
    # whole bins at least 4 h from either end of the stay
    first_bin = (base_min + 240) // f + 1
    last_bin = (base_min + length - 240) // f  # exclusive
    bins = minute // f
    inside = (bins >= first_bin[stay]) & (bins < last_bin[stay])
    stay, bins, minute = stay[inside], bins[inside], minute[inside]
    key, counts = np.unique(stay * 10**9 + bins, return_counts=True)
    tally = np.zeros((60, MAX_EVENTS + 1))
    np.add.at(tally, (((key % 10**9) * f) % 60, np.minimum(counts, MAX_EVENTS)), 1.0)
    all_bins = np.concatenate([np.arange(a, b) for a, b in zip(first_bin, last_bin, strict=True)])
    tally[:, 0] += np.bincount((all_bins * f) % 60, minlength=60) - tally[:, 1:].sum(axis=1)
    seen = tally.sum(axis=1) > 0
    tally[seen] /= tally[seen].sum(axis=1, keepdims=True)
    tally[~seen, 0] = 1.0
    used = int(np.flatnonzero(tally.max(axis=0) > 0).max()) + 1
    m = min(MAX_EVENTS, used - 1 + -(-f // gen.EXTRA_EVERY_MIN)) + 1
    p_count = np.zeros((60, m))
    p_count[:, : min(used, m)] = tally[:, : min(used, m)]
    hist = np.full((60, f), 1e-9)  # every minute possible
    np.add.at(hist, ((bins * f) % 60, minute - bins * f), 1.0)
    cdf = np.cumsum(hist, axis=1)
    cdf /= cdf[:, -1:]
    q = (np.arange(1024) + 0.5) / 1024
    minute_table = np.stack([np.searchsorted(cdf[p], q) for p in range(60)]).astype(np.int64)
    return p_count, np.minimum(minute_table, f - 1)


# --- the stays' states ---------------------------------------------------------------------------


@dataclass
class _Stays:
    """Truth of the oracle's stays, sorted by icustay_id; trajectories concatenated along time
    (flat index), each stay's starting at ``offset``."""

    ids: np.ndarray  # sorted icustay_ids
    base_min: np.ndarray
    n_points: np.ndarray
    offset: np.ndarray  # first flat index of each stay's trajectory
    params: phys.Params
    states: phys.State  # flat: (sum of n_points, ...)
    metavision: np.ndarray
    art: np.ndarray
    art2: np.ndarray
    vent: np.ndarray
    fahrenheit_p: np.ndarray

    @classmethod
    def of(cls, truths: Sequence[Any]) -> _Stays:
        """From :class:`~vitalfm.synthetic.generator.StayTruth` records, in any order."""
        truths = sorted(truths, key=lambda t: t.icustay_id)
        n_points = np.array([t.states.k.shape[0] for t in truths], dtype=np.int64)
        return cls(
            ids=np.array([t.icustay_id for t in truths], dtype=np.int64),
            base_min=np.array([t.grid_start // 60 for t in truths], dtype=np.int64),
            n_points=n_points,
            offset=np.concatenate([[0], np.cumsum(n_points)[:-1]]).astype(np.int64),
            params=phys.Params.concat([t.params for t in truths]),
            states=phys.State.concat([t.states for t in truths]),
            metavision=np.array([t.metavision for t in truths]),
            art=np.array([t.arterial_line for t in truths]),
            art2=np.array([t.second_arterial_line for t in truths]),
            vent=np.array([t.ventilated for t in truths]),
            fahrenheit_p=np.array([t.fahrenheit_p for t in truths]),
        )

    def merged(self, other: _Stays) -> _Stays:
        """Both sets of stays, sorted by icustay_id: the trajectories are appended as they
        are and the per-stay arrays (offsets shifted) reordered."""
        order = np.argsort(np.concatenate([self.ids, other.ids]), kind="stable")

        def per_stay(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
            return np.concatenate([mine, theirs])[order]

        return _Stays(
            ids=per_stay(self.ids, other.ids),
            base_min=per_stay(self.base_min, other.base_min),
            n_points=per_stay(self.n_points, other.n_points),
            offset=per_stay(self.offset, other.offset + int(self.n_points.sum())),
            params=phys.Params.concat([self.params, other.params]).take(order),
            states=phys.State.concat([self.states, other.states]),
            metavision=per_stay(self.metavision, other.metavision),
            art=per_stay(self.art, other.art),
            art2=per_stay(self.art2, other.art2),
            vent=per_stay(self.vent, other.vent),
            fahrenheit_p=per_stay(self.fahrenheit_p, other.fahrenheit_p),
        )


def _settings_key(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class OracleStates:
    """The latent states of a synthetic database's stays, regenerated once from its config, and
    the oracle's predictive samples from them (:meth:`samples`).

    Memory: every grid point's state of every stay asked for (a few hundred kB per stay-day).
    """

    def __init__(self, synthetic_cfg: Mapping[str, Any] | None, stay_ids: Sequence[int]) -> None:
        self.settings = gen.synthetic_settings(synthetic_cfg)
        self._stays: _Stays | None = None
        self.add(stay_ids)

    def add(self, stay_ids: Sequence[int] | np.ndarray) -> None:
        """Regenerate the truth of stays not yet known (one pass over the generator)."""
        ids = np.unique(np.asarray(stay_ids, dtype=np.int64))
        known = self._stays.ids if self._stays is not None else np.zeros(0, np.int64)
        new = np.setdiff1d(ids, known)
        if new.size == 0:
            return
        truths = list(gen.iter_truth(self.settings, new.tolist()))
        found = np.array([t.icustay_id for t in truths], dtype=np.int64)
        missing = np.setdiff1d(new, found)
        if missing.size:
            raise DataError(
                f"{missing.size} ICU stay(s) asked of the oracle are not in the synthetic "
                f"database of this config (e.g. icustay_id {int(missing[0])})",
                "pass the same `synthetic` config section the database was generated from, "
                "and only icustay_ids of that database",
            )
        found_stays = _Stays.of(truths)
        self._stays = found_stays if self._stays is None else self._stays.merged(found_stays)

    def state_at_origin(self, stay_ids: np.ndarray, origins_s: np.ndarray) -> phys.State:
        """Each series' latent state at :func:`origin_grid_point` of its origin (clipped to
        the stay's grid), the state the oracle simulates from."""
        self.add(stay_ids)
        st = self._stays
        assert st is not None
        pos = np.searchsorted(st.ids, np.asarray(stay_ids, dtype=np.int64))
        k0 = origin_grid_point(st.base_min[pos] * 60, origins_s)
        return st.states.take(st.offset[pos] + np.clip(k0, 0, st.n_points[pos] - 1))

    @property
    def stay_ids(self) -> np.ndarray:
        assert self._stays is not None
        return self._stays.ids

    def samples(
        self,
        stay_ids: np.ndarray,
        origins_s: np.ndarray,
        vital: str,
        horizon_steps: int,
        frequency_minutes: int,
        num_samples: int,
        seed: int,
        *,
        threads: int | None = None,
    ) -> np.ndarray:
        """float32 [N, S, H]: draws of the scored bin means (see the module docstring).
        Deterministic for given arguments, whatever ``threads`` (default: see :func:`_threads`)."""
        stay_ids = np.asarray(stay_ids, dtype=np.int64).reshape(-1)
        origins_s = np.asarray(origins_s, dtype=np.int64).reshape(-1)
        _check_request(stay_ids, origins_s, vital, horizon_steps, frequency_minutes, num_samples)
        self.add(stay_ids)
        st = self._stays
        assert st is not None
        n, s, h = stay_ids.size, int(num_samples), int(horizon_steps)
        f = int(frequency_minutes)
        out = np.empty((n, s, h), dtype=np.float32)
        if n == 0:
            return out
        pos = np.searchsorted(st.ids, stay_ids)
        origin_min = origins_s // 60
        k0 = origin_grid_point(st.base_min[pos] * 60, origins_s)
        outside = (k0 < -MAX_OUTSIDE_POINTS) | (k0 > st.n_points[pos] - 1 + MAX_OUTSIDE_POINTS)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(
                f"{int(outside.sum())} forecast origin(s) lie more than a day outside their "
                f"ICU stay (e.g. icustay_id {int(stay_ids[i])} at {int(origins_s[i])} s)",
                "pass origins in epoch seconds inside each stay (the start of the first "
                "horizon bin on the study's grid)",
            )
        kstart = np.clip(k0, 0, st.n_points[pos] - 1)
        k_last = (origin_min + h * f - 1 - st.base_min[pos]) // phys.STEP_MIN
        n_steps = np.maximum(k_last - kstart, 0)
        order = np.argsort(n_steps, kind="stable")  # similar path lengths per chunk
        per_chunk = max(1, PATHS_PER_CHUNK // s)
        chunks = [order[i : i + per_chunk] for i in range(0, n, per_chunk)]

        def run(c: int) -> None:
            idx = chunks[c]
            # per chunk (any thread order), and different for calls on other series with the
            # same seed (a caller may ask batch by batch)
            first = int(idx[0])
            rng = np.random.default_rng(
                [
                    int(seed),
                    7,
                    c,
                    int(stay_ids[first]) & _U63,
                    int(origins_s[first]) & _U63,
                    idx.size,
                ]
            )
            out[idx] = _chunk_samples(
                rng, st, pos[idx], origin_min[idx], kstart[idx], int(n_steps[idx].max()), vital,
                h, f, s,
            )  # fmt: skip

        workers = _threads() if threads is None else max(1, int(threads))
        if workers == 1 or len(chunks) == 1:
            for c in range(len(chunks)):
                run(c)
        else:  # numpy releases the GIL in its array loops
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run, range(len(chunks))))
        return out


def _threads() -> int:
    """Up to 2 worker threads: no more than the CPUs this process may use, nor than
    ``OMP_NUM_THREADS`` when set (Snakemake sets it to a rule's ``threads``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        cpus = min(cpus, int(limit))
    return max(1, min(2, cpus))


def _check_request(
    stay_ids: np.ndarray,
    origins_s: np.ndarray,
    vital: str,
    horizon_steps: int,
    frequency_minutes: int,
    num_samples: int,
) -> None:
    if vital not in VITALS:
        raise ConfigError(
            f"the oracle cannot forecast vital {vital!r}",
            f"use one of {', '.join(VITALS)}",
        )
    if stay_ids.shape != origins_s.shape:
        raise ConfigError(
            f"oracle: {stay_ids.size} stay ids but {origins_s.size} origins",
            "pass one forecast origin (epoch seconds) per series",
        )
    for name, value in (
        ("horizon_steps", horizon_steps),
        ("frequency_minutes", frequency_minutes),
        ("num_samples", num_samples),
    ):
        if int(value) < 1:
            raise ConfigError(f"oracle: {name} = {value} is not positive", f"pass {name} >= 1")
    if 60 % int(frequency_minutes) and int(frequency_minutes) % 60:
        raise ConfigError(
            f"oracle: a grid of {frequency_minutes} minutes does not divide the hour",
            "use one of the grid frequencies the study allows (5, 10, 15, 20, 30, 60 min)",
        )


# --- one chunk of sample paths ---------------------------------------------------------------


def _signals_for(vital: str) -> tuple[int, ...]:
    if vital in ("sbp", "dbp", "mbp"):
        return (phys.SBP, phys.DBP)
    return (
        {"heart_rate": phys.HR, "resp_rate": phys.RR, "spo2": phys.SPO2, "temperature": phys.TEMP}[
            vital
        ],
    )


def _simulate_paths(
    rng: np.random.Generator,
    st: _Stays,
    pos: np.ndarray,
    kstart: np.ndarray,
    n_steps: int,
    signals: tuple[int, ...],
    num_samples: int,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Latent paths of the needed signals and the alert flag: arrays (n_steps + 1, paths)."""
    rep = np.repeat(np.arange(pos.size), num_samples)
    params = st.params.take(pos[rep])
    state = st.states.take((st.offset[pos] + kstart)[rep])
    n_paths = rep.size
    values = {sig: np.empty((n_steps + 1, n_paths)) for sig in signals}
    alert = np.empty((n_steps + 1, n_paths), dtype=bool)
    obs = phys.observe(params, state)
    for t in range(n_steps + 1):
        if t:
            z, u = phys.draw_innovations(rng, 1, n_paths)
            state, obs = phys.step(params, state, z[0], u[0])
        for sig in signals:
            values[sig][t] = obs.values[:, sig]
        alert[t] = obs.alert
    return values, alert


Reader = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Source:
    """One kind of reading an event may carry: its per-path probability, and its reading at
    (paths, latent indices) as (cleaned value, charted in degF)."""

    p: np.ndarray  # (paths,)
    read: Reader
    step: float  # duplicate step in the charted unit


def _sources(
    vital: str,
    st: _Stays,
    pos_path: np.ndarray,
    values: dict[int, np.ndarray],
) -> list[_Source]:
    """The sources of a charting event for ``vital``, per path (``pos_path``: stay position)."""
    survive = _SURVIVE

    def simple(signal: int, spec: gen.ReadingSpec) -> Reader:
        def read(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            z = rng.standard_normal(path.size)
            return gen.reading(values[signal][j, path], z, spec), np.zeros(path.size, bool)

        return read

    if vital == "heart_rate":
        return [
            _Source(
                np.full(pos_path.size, gen.P_HR * survive), simple(phys.HR, gen.HR_READING), 1.0
            )
        ]
    if vital == "spo2":
        return [
            _Source(
                np.full(pos_path.size, gen.P_SPO2 * survive),
                simple(phys.SPO2, gen.SPO2_READING),
                1.0,
            )
        ]
    if vital == "resp_rate":
        read = simple(phys.RR, gen.RR_READING)
        return [
            _Source(np.full(pos_path.size, gen.P_RR * survive), read, 1.0),
            _Source(st.vent[pos_path] * gen.P_RR_TOTAL * survive, read, 1.0),
        ]
    if vital == "temperature":
        p_f = st.fahrenheit_p[pos_path]

        def temp(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            t_f, t_c = gen.temperature_readings(
                values[phys.TEMP][j, path], rng.standard_normal(path.size)
            )
            in_f = rng.random(path.size) < p_f[path]
            return np.where(in_f, (t_f - 32.0) / 1.8, t_c), in_f

        return [_Source(np.full(pos_path.size, survive), temp, 0.1)]
    c = ("sbp", "dbp", "mbp").index(vital)

    def bp(arterial: bool) -> Reader:
        def read(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            z = rng.standard_normal((3, path.size))
            sbp, dbp = values[phys.SBP][j, path], values[phys.DBP][j, path]
            return gen.bp_readings(sbp, dbp, z, arterial)[c], np.zeros(path.size, bool)

        return read

    art, art2, cv = st.art[pos_path], st.art2[pos_path], ~st.metavision[pos_path]
    item = gen.P_BP_ITEM[c] * survive
    sources = [
        _Source(art * gen.P_ART * item, bp(True), 1.0),
        _Source(np.where(art, gen.P_NBP_WITH_ART, gen.P_NBP) * item, bp(False), 1.0),
        _Source(art2 * cv * gen.P_ART2 * item, bp(True), 1.0),
        _Source(cv * gen.P_MANUAL * item, bp(False), 1.0),
    ]
    if vital == "mbp":  # MetaVision's second arterial line charts only its mean (all kept)
        sources.append(_Source(art2 * ~cv * gen.P_ART2 * survive, bp(True), 1.0))
    return sources


@functools.cache
def _comb(n: int, k: int) -> float:
    from math import comb

    return float(comb(n, k)) if 0 <= k <= n else 0.0


def _chunk_samples(
    rng: np.random.Generator,
    st: _Stays,
    pos: np.ndarray,
    origin_min: np.ndarray,
    kstart: np.ndarray,
    n_steps: int,
    vital: str,
    h: int,
    f: int,
    s: int,
) -> np.ndarray:
    """Samples (series, S, H) for one chunk of series."""
    values, alert = _simulate_paths(rng, st, pos, kstart, n_steps, _signals_for(vital), s)
    n_series = pos.size
    n_paths = n_series * s
    series = np.repeat(np.arange(n_series), s)
    paths = np.arange(n_paths)
    # bins: first minute b0, minute of the hour, latent index of the first minute (j0) and the
    # minute's position in its 5-minute grid cell (rem: the same for every bin of a series)
    b0 = origin_min[:, None] + f * np.arange(h)[None, :]  # (series, H)
    since = b0 - st.base_min[pos][:, None]
    j0 = since // phys.STEP_MIN - kstart[:, None]
    rem = since[:, 0] % phys.STEP_MIN
    phase = b0 % 60

    sources = _sources(vital, st, pos[series], values)
    p_src = np.stack([src.p for src in sources], axis=1)  # (P, n_src)
    p_any = 1.0 - np.prod(1.0 - p_src, axis=1)
    is_temp = vital == "temperature"
    p_count, minute_table = charting_tables(f, "assessments" if is_temp else "rounds")
    p_rounds = p_count[phase][series]  # (P, H, m)
    if is_temp:
        q_extra = np.zeros((n_paths, h))
        slots = np.zeros((n_paths, h), dtype=np.int64)
    else:
        q_extra = gen.P_EXTRA * _alert_fraction(alert, j0[series], rem[series], f, n_steps, paths)
        whole, part = divmod(f, gen.EXTRA_EVERY_MIN)
        slots = whole + (rng.random((n_paths, h)) < part / gen.EXTRA_EVERY_MIN)
    pmf, observed_p = _count_pmf(p_rounds, q_extra, slots, p_any)
    n_events = 1 + (rng.random((n_paths, h, 1)) > np.cumsum(pmf[:, :, 1:], axis=2)).sum(axis=2)
    n_events = np.minimum(n_events, pmf.shape[2] - 1)

    # flat events: (path, bin), minute in the bin, latent index
    bin_flat = (paths[:, None] * h + np.arange(h)[None, :]).reshape(-1)
    ev_bin = np.repeat(bin_flat, n_events.reshape(-1))
    ev_path, ev_h = ev_bin // h, ev_bin % h
    first_of_bin = np.concatenate([[True], ev_bin[1:] != ev_bin[:-1]])
    n_ev = ev_bin.size
    expected_extra = (q_extra * slots)[ev_path, ev_h]
    expected_rounds = (p_rounds[ev_path, ev_h] * np.arange(p_rounds.shape[2])).sum(axis=1)
    is_extra = rng.random(n_ev) * (expected_extra + expected_rounds) < expected_extra
    round_minute = minute_table[
        phase[series[ev_path], ev_h], (rng.random(n_ev) * minute_table.shape[1]).astype(np.int64)
    ]
    minute = np.where(is_extra, rng.integers(0, f, n_ev), round_minute)
    j = j0[series[ev_path], ev_h] + (rem[series[ev_path]] + minute) // phys.STEP_MIN
    j = np.clip(j, 0, n_steps)

    # which sources each event carries; redraw bins without any reading
    present = rng.random((n_ev, p_src.shape[1])) < p_src[ev_path]
    for _ in range(RESAMPLE_TRIES):
        has = np.bincount(ev_bin, weights=present.any(axis=1), minlength=n_paths * h) > 0
        redo = ~has[ev_bin]
        if not redo.any():
            break
        present[redo] = rng.random((int(redo.sum()), p_src.shape[1])) < p_src[ev_path[redo]]
    has = np.bincount(ev_bin, weights=present.any(axis=1), minlength=n_paths * h) > 0
    force = first_of_bin & ~has[ev_bin]
    if force.any():
        present[force, np.argmax(p_src[ev_path[force]], axis=1)] = True

    # readings (and duplicates), range rules, bin means
    total = np.zeros(n_paths * h)
    count = np.zeros(n_paths * h)
    for c_src, src in enumerate(sources):
        rows = np.flatnonzero(present[:, c_src])
        if rows.size == 0:
            continue
        value, fahrenheit = src.read(ev_path[rows], j[rows], rng)
        ok = _range_ok(vital, value)
        total += np.bincount(ev_bin[rows][ok], weights=value[ok], minlength=total.size)
        count += np.bincount(ev_bin[rows][ok], minlength=count.size)
        dup = np.flatnonzero(rng.random(rows.size) < gen.P_DUPLICATE)
        if dup.size:
            delta = rng.choice(gen.DUPLICATE_STEPS, size=dup.size) * src.step
            f_dup = fahrenheit[dup]
            charted = np.round(np.where(f_dup, value[dup] * 1.8 + 32.0, value[dup]) + delta, 1)
            v = np.where(f_dup, (charted - 32.0) / 1.8, charted)
            ok = _range_ok(vital, v)
            total += np.bincount(ev_bin[rows][dup][ok], weights=v[ok], minlength=total.size)
            count += np.bincount(ev_bin[rows][dup][ok], minlength=count.size)
    # a bin whose only readings failed the range rule (vanishingly rare): NaN, then filled
    mean = np.where(count > 0, total / np.maximum(count, 1.0), np.nan).reshape(n_series, s, h)
    # a bin is more likely charted on some paths (denser charting when unstable): resample
    # each series' paths per bin in proportion to that chance, so the draws are conditional
    # on the bin being observed
    idx = _systematic_resample(observed_p.reshape(n_series, s, h), rng)
    mean = np.take_along_axis(mean, idx, axis=1)
    return _fill_nan(mean.astype(np.float32))


def _alert_fraction(
    alert: np.ndarray, j0: np.ndarray, rem: np.ndarray, f: int, n_steps: int, paths: np.ndarray
) -> np.ndarray:
    """Fraction of each bin's minutes in alert, per path (P, H): the bin's first cell holds
    5 - rem of its minutes, whole cells 5, the last cell rem."""
    cells = f // phys.STEP_MIN
    col = paths[:, None]

    def at(offset: int) -> np.ndarray:
        return alert[np.clip(j0 + offset, 0, n_steps), col]

    frac = (phys.STEP_MIN - rem[:, None]) * at(0)
    for i in range(1, cells):
        frac = frac + phys.STEP_MIN * at(i)
    frac = frac + rem[:, None] * at(cells)
    return frac / f


def _systematic_resample(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices (n, S, H) along axis 1 drawn in proportion to ``weights`` (n, S, H)."""
    n, s, h = weights.shape
    w = np.moveaxis(weights, 1, 2).reshape(n * h, s)
    w = np.where(w.sum(axis=1, keepdims=True) > 0, w, 1.0)
    cum = np.cumsum(w, axis=1)
    cum /= cum[:, -1:]
    u = (np.arange(s)[None, :] + rng.random((n * h, 1))) / s
    rows = np.arange(n * h)[:, None]
    # one sorted search over all rows: shift row r's CDF and targets by r
    flat = (cum + rows).reshape(-1)
    idx = np.searchsorted(flat, (u + rows).reshape(-1), side="right").reshape(n * h, s)
    idx = np.minimum(idx - rows * s, s - 1)
    return np.moveaxis(idx.reshape(n, h, s), 2, 1)


def _count_pmf(
    p_rounds: np.ndarray, q_extra: np.ndarray, slots: np.ndarray, p_any: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P(n events | the bin has a reading), n = 0..m-1, per path and bin, and P(the bin has a
    reading). Rounds (``p_rounds`` (P, H, m)) plus Binomial(slots, q) extra readings
    (``q_extra``/``slots`` (P, H)); n events carry the vital with chance 1 - (1 - p_any)^n."""
    m = p_rounds.shape[2]
    max_slots = int(slots.max()) if slots.size else 0
    total = p_rounds.copy() if max_slots == 0 else np.zeros_like(p_rounds)
    if max_slots:
        comb = np.array([[_comb(n, k) for k in range(max_slots + 1)] for n in range(max_slots + 1)])
        for k in range(max_slots + 1):
            pk = comb[slots, k] * q_extra**k * (1.0 - q_extra) ** np.maximum(slots - k, 0)
            total[:, :, k:] += p_rounds[:, :, : m - k] * pk[:, :, None]
    carry = 1.0 - (1.0 - p_any[:, None, None]) ** np.arange(m)
    w = total * carry
    observed = w.sum(axis=2)
    return w / np.maximum(observed[:, :, None], 1e-300), observed


def _fill_nan(samples: np.ndarray) -> np.ndarray:
    """Replace the (very rare) sample without a valid reading by the median of its series and
    bin, so that every draw is a number."""
    bad = np.isnan(samples)
    if not bad.any():
        return samples
    med = np.nanmedian(samples, axis=1, keepdims=True)
    return np.where(bad, np.broadcast_to(med, samples.shape), samples)


# --- the contract ------------------------------------------------------------------------------

_CACHE: dict[str, OracleStates] = {}


def oracle_states(synthetic_cfg: Mapping[str, Any] | None, stay_ids: Sequence[int]) -> OracleStates:
    """The cached :class:`OracleStates` of this config (one regeneration per config in a
    process; stays not yet known are added)."""
    settings = gen.synthetic_settings(synthetic_cfg)
    key = _settings_key(settings)
    states = _CACHE.get(key)
    if states is None:
        _CACHE.clear()  # one database at a time
        states = _CACHE[key] = OracleStates(settings, stay_ids)
    else:
        states.add(stay_ids)
    return states


def oracle_samples(
    synthetic_cfg: Mapping[str, Any],
    stay_ids: np.ndarray,
    origins_s: np.ndarray,
    vital: str,
    horizon_steps: int,
    frequency_minutes: int,
    num_samples: int,
    seed: int,
) -> np.ndarray:
    """float32 [N, S, H]: the oracle's draws of the scored bin means of ``vital`` for series
    ``(stay_ids[i], origins_s[i])`` (epoch seconds of the first horizon bin's start).

    The best any model could do on the synthetic database of ``synthetic_cfg`` (see the module
    docstring): it knows each stay's latent state at the origin.
    """
    states = oracle_states(synthetic_cfg, np.asarray(stay_ids, dtype=np.int64).reshape(-1))
    return states.samples(
        stay_ids, origins_s, vital, horizon_steps, frequency_minutes, num_samples, seed
    )
