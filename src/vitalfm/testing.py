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
