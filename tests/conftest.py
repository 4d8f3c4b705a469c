"""Shared fixtures: one real PostgreSQL server per test session (the project's embedded one)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vitalfm.db.embedded import EmbeddedPostgres

_schema_counter = itertools.count()


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of tests on tiny models: a second thread gains
    nothing there, and on cores shared with other jobs OpenMP's spin-waits made a MOIRAI
    training step ~50x slower (1.5 s instead of 30 ms) and Chronos-T5's decoding ~15x slower.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch  # here, not at the top: most test modules never load torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def pg_conn(pg_server: EmbeddedPostgres) -> Iterator[Any]:
    conn = pg_server.connect()
    yield conn
    conn.close()


@pytest.fixture
def mimic_schema(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty MIMIC-III schema (the project's DDL) for hand-built edge cases."""
    from vitalfm.db.ddl import create_schema_sql

    name = f"mimic_case_{next(_schema_counter)}"
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(create_schema_sql(name))
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {name} CASCADE")
        conn.close()


# --- the tiny study of the operations and cluster tests (run once per session) ---------------


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-minute study run with the README's study command (tests/test_operations.py)."""
    from test_operations import run_tiny_study

    return run_tiny_study(tmp_path_factory.mktemp("ops") / "study")


@pytest.fixture(scope="session")
def tiny_study_long_training(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study with long fine-tuning, run without interruption: what a killed, a
    cancelled or a requeued run must end with."""
    from test_operations import run_uninterrupted

    return run_uninterrupted(tiny_study, tmp_path_factory.mktemp("ops") / "uninterrupted")
