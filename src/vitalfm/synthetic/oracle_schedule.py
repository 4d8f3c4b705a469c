"""The charting schedule as the oracle needs it: how many charting events a bin of the study's
grid holds and at which of its minutes, measured by running the generator's own scheduling code
(:mod:`vitalfm.synthetic.chart_schedule`) on long synthetic stays.
"""

from __future__ import annotations

import functools

import numpy as np

from vitalfm.synthetic.chart_schedule import (
    ASSESSMENT_FIRST_MAX_MIN,
    ASSESSMENT_INTERVAL_MIN,
    ASSESSMENT_SNAP_P,
    EXTRA_EVERY_MIN,
    ROUND_FIRST_MAX_MIN,
    ROUND_SNAP_P,
    event_times,
    round_intervals,
    unique_events,
)

MAX_EVENTS = 6  # charting events of one kind in one bin (more are vanishingly rare)
_CHART_SEED = 20_240_513  # the fixed stream that measures the charting schedule


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
        intervals = round_intervals(rng, (n_stays, hours * 60 // 15 + 2))
        first = rng.uniform(0.0, ROUND_FIRST_MAX_MIN, n_stays)
        snap = ROUND_SNAP_P
    elif kind == "assessments":
        intervals = rng.uniform(*ASSESSMENT_INTERVAL_MIN, (n_stays, hours + 2))
        first = rng.uniform(0.0, ASSESSMENT_FIRST_MAX_MIN, n_stays)
        snap = ASSESSMENT_SNAP_P
    else:
        raise ValueError(f"unknown charting kind {kind!r}")
    stay, t = event_times(rng, length, base_min, intervals, first, snap)
    stay, t = unique_events(stay, t)
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
    m = min(MAX_EVENTS, used - 1 + -(-f // EXTRA_EVERY_MIN)) + 1
    p_count = np.zeros((60, m))
    p_count[:, : min(used, m)] = tally[:, : min(used, m)]
    hist = np.full((60, f), 1e-9)  # every minute possible
    np.add.at(hist, ((bins * f) % 60, minute - bins * f), 1.0)
    cdf = np.cumsum(hist, axis=1)
    cdf /= cdf[:, -1:]
    q = (np.arange(1024) + 0.5) / 1024
    minute_table = np.stack([np.searchsorted(cdf[p], q) for p in range(60)]).astype(np.int64)
    return p_count, np.minimum(minute_table, f - 1)
