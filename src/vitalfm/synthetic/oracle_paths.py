"""The oracle's samples for one chunk of series: latent paths simulated from each series' state
at its origin, the charting events of each bin and the readings they carry, the bins' means,
and the resampling that conditions each bin on being observed (see :mod:`vitalfm.synthetic.oracle`
for the approximations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vitalfm import mimic
from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic.chart_schedule import EXTRA_EVERY_MIN, P_EXTRA
from vitalfm.synthetic.measurement import (
    DUPLICATE_STEPS,
    HR_READING,
    P_ART,
    P_ART2,
    P_BP_ITEM,
    P_DUPLICATE,
    P_HR,
    P_JUNK,
    P_MANUAL,
    P_NBP,
    P_NBP_WITH_ART,
    P_RR,
    P_RR_TOTAL,
    P_SPO2,
    P_TEXT_ONLY,
    RR_READING,
    SPO2_READING,
    ReadingSpec,
    bp_readings,
    reading,
    temperature_readings,
)
from vitalfm.synthetic.oracle_schedule import charting_tables
from vitalfm.synthetic.oracle_stays import OracleStays
from vitalfm.synthetic.physiology_state import DBP, HR, RR, SBP, SPO2, STEP_MIN, TEMP

RESAMPLE_TRIES = 10
_SURVIVE = 1.0 - P_TEXT_ONLY - P_JUNK


def _range_ok(vital: str, value: np.ndarray) -> np.ndarray:
    """The cleaning's plausibility rule of the vital (all its items share it, in degC here)."""
    item = next(i for i in mimic.CHART_ITEMS if i.vital == vital and not i.fahrenheit)
    high_ok = value <= item.high if item.high_inclusive else value < item.high
    return (value > item.low) & high_ok


def _signals_for(vital: str) -> tuple[int, ...]:
    if vital in ("sbp", "dbp", "mbp"):
        return (SBP, DBP)
    return ({"heart_rate": HR, "resp_rate": RR, "spo2": SPO2, "temperature": TEMP}[vital],)


def _simulate_paths(
    rng: np.random.Generator,
    st: OracleStays,
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
    st: OracleStays,
    pos_path: np.ndarray,
    values: dict[int, np.ndarray],
) -> list[_Source]:
    """The sources of a charting event for ``vital``, per path (``pos_path``: stay position)."""
    survive = _SURVIVE

    def simple(signal: int, spec: ReadingSpec) -> Reader:
        def read(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            z = rng.standard_normal(path.size)
            return reading(values[signal][j, path], z, spec), np.zeros(path.size, bool)

        return read

    if vital == "heart_rate":
        return [_Source(np.full(pos_path.size, P_HR * survive), simple(HR, HR_READING), 1.0)]
    if vital == "spo2":
        return [
            _Source(
                np.full(pos_path.size, P_SPO2 * survive),
                simple(SPO2, SPO2_READING),
                1.0,
            )
        ]
    if vital == "resp_rate":
        read = simple(RR, RR_READING)
        return [
            _Source(np.full(pos_path.size, P_RR * survive), read, 1.0),
            _Source(st.vent[pos_path] * P_RR_TOTAL * survive, read, 1.0),
        ]
    if vital == "temperature":
        p_f = st.fahrenheit_p[pos_path]

        def temp(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            t_f, t_c = temperature_readings(values[TEMP][j, path], rng.standard_normal(path.size))
            in_f = rng.random(path.size) < p_f[path]
            return np.where(in_f, (t_f - 32.0) / 1.8, t_c), in_f

        return [_Source(np.full(pos_path.size, survive), temp, 0.1)]
    c = ("sbp", "dbp", "mbp").index(vital)

    def bp(arterial: bool) -> Reader:
        def read(
            path: np.ndarray, j: np.ndarray, rng: np.random.Generator
        ) -> tuple[np.ndarray, np.ndarray]:
            z = rng.standard_normal((3, path.size))
            sbp, dbp = values[SBP][j, path], values[DBP][j, path]
            return bp_readings(sbp, dbp, z, arterial)[c], np.zeros(path.size, bool)

        return read

    art, art2, cv = st.art[pos_path], st.art2[pos_path], ~st.metavision[pos_path]
    item = P_BP_ITEM[c] * survive
    sources = [
        _Source(art * P_ART * item, bp(True), 1.0),
        _Source(np.where(art, P_NBP_WITH_ART, P_NBP) * item, bp(False), 1.0),
        _Source(art2 * cv * P_ART2 * item, bp(True), 1.0),
        _Source(cv * P_MANUAL * item, bp(False), 1.0),
    ]
    if vital == "mbp":  # MetaVision's second arterial line charts only its mean (all kept)
        sources.append(_Source(art2 * ~cv * P_ART2 * survive, bp(True), 1.0))
    return sources


@functools.cache
def _comb(n: int, k: int) -> float:
    from math import comb

    return float(comb(n, k)) if 0 <= k <= n else 0.0


def chunk_samples(
    rng: np.random.Generator,
    st: OracleStays,
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
    j0 = since // STEP_MIN - kstart[:, None]
    rem = since[:, 0] % STEP_MIN
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
        q_extra = P_EXTRA * _alert_fraction(alert, j0[series], rem[series], f, n_steps, paths)
        whole, part = divmod(f, EXTRA_EVERY_MIN)
        slots = whole + (rng.random((n_paths, h)) < part / EXTRA_EVERY_MIN)
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
    j = j0[series[ev_path], ev_h] + (rem[series[ev_path]] + minute) // STEP_MIN
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
        dup = np.flatnonzero(rng.random(rows.size) < P_DUPLICATE)
        if dup.size:
            delta = rng.choice(DUPLICATE_STEPS, size=dup.size) * src.step
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
    cells = f // STEP_MIN
    col = paths[:, None]

    def at(offset: int) -> np.ndarray:
        return alert[np.clip(j0 + offset, 0, n_steps), col]

    frac = (STEP_MIN - rem[:, None]) * at(0)
    for i in range(1, cells):
        frac = frac + STEP_MIN * at(i)
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
