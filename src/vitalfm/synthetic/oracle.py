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

This module holds the contract (:func:`oracle_samples`) and :class:`OracleStates`; the stays'
truth is kept by :mod:`~vitalfm.synthetic.oracle_stays`, the per-bin charting schedule measured
by :mod:`~vitalfm.synthetic.oracle_schedule`, and one chunk of sample paths drawn by
:mod:`~vitalfm.synthetic.oracle_paths`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from vitalfm import mimic
from vitalfm.errors import ConfigError, DataError
from vitalfm.synthetic import generator as gen
from vitalfm.synthetic.oracle_paths import chunk_samples
from vitalfm.synthetic.oracle_stays import OracleStays
from vitalfm.synthetic.physiology_state import STEP_MIN, State

VITALS: tuple[str, ...] = mimic.VITAL_NAMES
PATHS_PER_CHUNK = 8192  # sample paths simulated at once (fits the CPU caches best)
_U63 = (1 << 63) - 1  # seed entropy must be non-negative
MAX_OUTSIDE_POINTS = 24 * 60 // STEP_MIN  # origins at most a day outside the stay


def origin_grid_point(grid_start_s: int | np.ndarray, time_s: int | np.ndarray) -> np.ndarray:
    """The latent grid point a moment reads: a chart row at ``time_s`` (epoch seconds, whole
    minutes) reads grid point ``(minute - base_min) // 5`` of the stay whose grid starts at
    ``grid_start_s`` (``StayTruth.grid_start``); at a forecast origin it is the last grid point
    realised at or before the origin, the one the oracle conditions on."""
    since = np.asarray(time_s, dtype=np.int64) // 60 - np.asarray(grid_start_s, np.int64) // 60
    return since // STEP_MIN


def _settings_key(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


class OracleStates:
    """The latent states of a synthetic database's stays, regenerated once from its config, and
    the oracle's predictive samples from them (:meth:`samples`).

    Memory: every grid point's state of every stay asked for (a few hundred kB per stay-day).
    """

    def __init__(self, synthetic_cfg: Mapping[str, Any] | None, stay_ids: Sequence[int]) -> None:
        self.settings = gen.synthetic_settings(synthetic_cfg)
        self._stays: OracleStays | None = None
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
        found_stays = OracleStays.of(truths)
        self._stays = found_stays if self._stays is None else self._stays.merged(found_stays)

    def state_at_origin(self, stay_ids: np.ndarray, origins_s: np.ndarray) -> State:
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
        seed: int | np.ndarray,
        *,
        threads: int | None = None,
    ) -> np.ndarray:
        """float32 [N, S, H]: draws of the scored bin means (see the module docstring).
        Deterministic for given arguments, whatever ``threads`` (default: see :func:`_threads`).

        ``seed``: one int for the call (series simulated together in chunks, whose streams
        depend on which series share a chunk), or one seed per series (int64 [N]): each series
        then draws from its own stream, whatever else is asked with it (one chunk a series:
        measured 2.6 s instead of 0.6 s for 300 series x 100 paths of MBP, 1 thread)."""
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
        k_last = (origin_min + h * f - 1 - st.base_min[pos]) // STEP_MIN
        n_steps = np.maximum(k_last - kstart, 0)
        per_series = np.ndim(seed) > 0
        if per_series and np.shape(seed) != (n,):
            raise ConfigError(
                f"oracle: {np.size(seed)} seeds for {n} series",
                "pass one int seed, or one seed per series",
            )
        order = np.argsort(n_steps, kind="stable")  # similar path lengths per chunk
        per_chunk = 1 if per_series else max(1, PATHS_PER_CHUNK // s)
        chunks = [order[i : i + per_chunk] for i in range(0, n, per_chunk)]

        def run(c: int) -> None:
            idx = chunks[c]
            first = int(idx[0])
            if per_series:  # the series' own stream
                rng = np.random.default_rng([int(np.asarray(seed)[first]) & _U63, 7])
            else:
                # per chunk (any thread order), and different for calls on other series with
                # the same seed (a caller may ask batch by batch)
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
            out[idx] = chunk_samples(
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
    seed: int | np.ndarray,
) -> np.ndarray:
    """float32 [N, S, H]: the oracle's draws of the scored bin means of ``vital`` for series
    ``(stay_ids[i], origins_s[i])`` (epoch seconds of the first horizon bin's start); ``seed``
    one int, or one per series (each series its own stream: :meth:`OracleStates.samples`).

    The best any model could do on the synthetic database of ``synthetic_cfg`` (see the module
    docstring): it knows each stay's latent state at the origin.
    """
    states = oracle_states(synthetic_cfg, np.asarray(stay_ids, dtype=np.int64).reshape(-1))
    return states.samples(
        stay_ids, origins_s, vital, horizon_steps, frequency_minutes, num_samples, seed
    )
