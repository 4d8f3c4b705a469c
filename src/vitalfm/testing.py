"""Test helpers: a real PostgreSQL server for the synthetic-database tests, and small readers.

:func:`shared_server` reuses the suite-wide ``pg_server`` fixture when a conftest provides one,
and otherwise starts one embedded server for the process; call it from a fixture.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

from vitalfm.db.embedded import EmbeddedPostgres

_schema_counter = itertools.count()
_US_PER_MINUTE = 60_000_000


_fallback_server: EmbeddedPostgres | None = None


def shared_server(request: pytest.FixtureRequest) -> EmbeddedPostgres:
    """The suite's ``pg_server`` fixture when a conftest provides one; otherwise one embedded
    server for the whole process (stopped at exit by EmbeddedPostgres itself)."""
    global _fallback_server
    try:
        return request.getfixturevalue("pg_server")
    except pytest.FixtureLookupError:
        pass
    if _fallback_server is None:
        _fallback_server = EmbeddedPostgres().start()
    return _fallback_server


def unique_schema(prefix: str) -> str:
    """A schema name no other test in this session (or process) uses."""
    return f"{prefix}_{os.getpid()}_{next(_schema_counter)}"


def drop_schema(conn: Any, schema: str) -> None:
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.commit()


def toy_windows(
    split: str = "train",
    n_stays: int = 6,
    steps_per_stay: int = 60,
    vital_names: tuple[str, ...] = ("heart_rate", "mbp"),
    context_steps: int = 24,
    horizon_steps: int = 12,
    stride_steps: int = 4,
    seed: int = 0,
    missing_fraction: float = 0.1,
) -> Any:
    """A small WindowSet of vital-like series (level + slow wave + noise, some gaps).

    For engine and model tests that need windows without running the data half of the DAG.
    """
    import numpy as np

    from vitalfm.data.windows import WindowSet

    rng = np.random.default_rng(seed)
    total = n_stays * steps_per_stay
    t = np.arange(steps_per_stay)
    blocks = []
    for _ in range(n_stays):
        columns = []
        for j, _name in enumerate(vital_names):
            level = 80.0 + 10 * j + rng.normal(0, 8)
            wave = 6 * np.sin(2 * np.pi * t / rng.uniform(20, 40) + rng.uniform(0, 6))
            columns.append(level + wave + rng.normal(0, 1.5, steps_per_stay))
        blocks.append(np.stack(columns, axis=1))
    values = np.concatenate(blocks).astype(np.float32)
    observed = rng.random(values.shape) >= missing_fraction
    values[~observed] = np.nan
    filled = np.zeros_like(observed)
    window = context_steps + horizon_steps
    offsets = np.arange(n_stays + 1, dtype=np.int64) * steps_per_stay
    starts, stay_index = [], []
    for s in range(n_stays):
        for start in range(0, steps_per_stay - window + 1, stride_steps):
            starts.append(offsets[s] + start)
            stay_index.append(s)
    starts_arr = np.array(starts, dtype=np.int64)
    horizon_rows = starts_arr[:, None] + context_steps + np.arange(horizon_steps)
    horizon_observed = observed[horizon_rows].sum(axis=1).astype(np.int16)
    assert values.shape[0] == total
    return WindowSet(
        split=split,
        vital_names=tuple(vital_names),
        frequency_minutes=15,
        context_steps=context_steps,
        horizon_steps=horizon_steps,
        stride_steps=stride_steps,
        min_horizon_observed=1,
        values=values,
        observed=observed,
        filled=filled,
        stay_ids=np.arange(200001, 200001 + n_stays, dtype=np.int32),
        subject_ids=np.arange(1001, 1001 + n_stays, dtype=np.int32),
        stay_offsets=offsets,
        # stays start at different times of day (37 h 15 min apart) so calendar features differ
        stay_start_times=1_600_000_000_000_000
        + np.arange(n_stays, dtype=np.int64) * (37 * 60 + 15) * _US_PER_MINUTE,
        window_start_rows=starts_arr,
        window_stay_index=np.array(stay_index, dtype=np.int32),
        horizon_observed=horizon_observed,
    )
