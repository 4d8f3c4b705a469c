"""When readings are charted: charting rounds at irregular minutes (about hourly, half of them
moved to the full hour), extra readings every ~15 min while a patient is unstable, multi-hour
gaps without any, and nurse assessments (temperature, GCS, rhythm) every 1-4 h.

The oracle measures its per-bin event counts by running this same code
(:func:`vitalfm.synthetic.oracle_schedule.charting_tables`).
"""

from __future__ import annotations

import numpy as np

from vitalfm.synthetic.physiology_state import STEP_MIN

# charting times: rounds, extra readings while the patient is unstable, nurse assessments
ROUND_FIRST_MAX_MIN, ROUND_SNAP_P = 20.0, 0.5
EXTRA_EVERY_MIN, P_EXTRA = 15, 0.6
ASSESSMENT_INTERVAL_MIN, ASSESSMENT_FIRST_MAX_MIN, ASSESSMENT_SNAP_P = (60.0, 240.0), 90.0, 0.7


def round_intervals(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Minutes between charting rounds: mostly hourly, some 15-40 min, some 1.5-2.5 h."""
    u = rng.random(shape)
    iv = np.where(
        u < 0.75,
        60.0 + 6.0 * rng.standard_normal(shape),
        np.where(u < 0.9, rng.uniform(15.0, 40.0, shape), rng.uniform(90.0, 150.0, shape)),
    )
    return np.maximum(iv, 10.0)


def event_times(
    rng: np.random.Generator,
    length: np.ndarray,
    base_min: np.ndarray,
    intervals: np.ndarray,
    first: np.ndarray,
    snap_p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Event times (stay index, minutes after the stay's first whole minute) from per-stay
    interval draws (S, M); a fraction ``snap_p`` is moved to the nearest full hour."""
    times = first[:, None] + np.concatenate(
        [np.zeros((length.size, 1)), np.cumsum(intervals, axis=1)[:, :-1]], axis=1
    )
    times = np.rint(times).astype(np.int64)
    snap = rng.random(times.shape) < snap_p
    absolute = base_min[:, None] + times
    snapped = (absolute + 30) // 60 * 60 - base_min[:, None]
    times = np.where(snap, snapped, times)
    keep = (times >= 0) & (times <= length[:, None])
    stay_idx = np.broadcast_to(np.arange(length.size)[:, None], times.shape)[keep]
    return stay_idx, times[keep]


def unique_events(stay_idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (stay, minute) once, sorted by stay, then minute."""
    key = np.unique(stay_idx.astype(np.int64) << 32 | t)
    return (key >> 32).astype(np.int64), key & 0xFFFFFFFF


def drop_gaps(
    stay_idx: np.ndarray, t: np.ndarray, gap_start: np.ndarray, gap_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The events outside their stay's charting gaps ``[gap_start, gap_end)`` (S, gaps)."""
    inside = ((t[:, None] >= gap_start[stay_idx]) & (t[:, None] < gap_end[stay_idx])).any(axis=1)
    return stay_idx[~inside], t[~inside]


def chart_times(
    rng: np.random.Generator, alert: np.ndarray, base_min: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The charting times of one group of stays (stay index local to the group, minutes after
    the stay's first whole minute): ``(event stay, event minute, assessment stay, assessment
    minute)``. Events are rounds and extra readings; ``alert`` (grid points, stays) is the
    physiology's flag for denser charting."""
    s = length.size
    max_len = int(length.max())
    last = alert.shape[0] - 1

    # charting rounds: mostly hourly, some 15-40 min, some 1.5-2.5 h, at irregular minutes
    iv = round_intervals(rng, (s, max_len // 15 + 2))
    first = rng.uniform(0.0, ROUND_FIRST_MAX_MIN, s)
    r_stay, r_t = event_times(rng, length, base_min, iv, first, ROUND_SNAP_P)
    # extra readings every ~15 min while a patient is unstable (physiology's alert)
    grid15 = np.arange(0, max_len + 1, EXTRA_EVERY_MIN)[None, :] + rng.integers(
        0, EXTRA_EVERY_MIN, (s, 1)
    )
    in_stay = grid15 <= length[:, None]
    unstable = alert[np.minimum(grid15 // STEP_MIN, last), np.arange(s)[:, None]]
    extra = in_stay & unstable & (rng.random(grid15.shape) < P_EXTRA)
    e_stay = np.broadcast_to(np.arange(s)[:, None], grid15.shape)[extra]
    ev_stay, ev_t = unique_events(
        np.concatenate([r_stay, e_stay]), np.concatenate([r_t, grid15[extra]])
    )
    # multi-hour gaps (monitor off, patient off the unit): none in stays under a day
    n_gaps = np.where(length > 24 * 60, rng.choice(4, size=s, p=[0.45, 0.3, 0.17, 0.08]), 0)
    gap_start = rng.uniform(0.1, 0.9, (s, 3)) * length[:, None]
    gap_end = gap_start + rng.uniform(120.0, 360.0, (s, 3))
    gap_start = np.where(np.arange(3)[None, :] < n_gaps[:, None], gap_start, np.inf)
    ev_stay, ev_t = drop_gaps(ev_stay, ev_t, gap_start, gap_end)

    # nurse assessments (temperature, GCS, rhythm): every 1-4 h
    a_iv = rng.uniform(*ASSESSMENT_INTERVAL_MIN, (s, max_len // 60 + 2))
    a_first = rng.uniform(0.0, ASSESSMENT_FIRST_MAX_MIN, s)
    a_stay, a_t = event_times(rng, length, base_min, a_iv, a_first, ASSESSMENT_SNAP_P)
    a_stay, a_t = unique_events(a_stay, a_t)
    a_stay, a_t = drop_gaps(a_stay, a_t, gap_start, gap_end)
    return ev_stay, ev_t, a_stay, a_t
