"""Connections to a MIMIC-III PostgreSQL server, read-only, with clear errors.

The password never passes through this module's inputs or outputs: libpq reads it from
PGPASSWORD or ~/.pgpass itself; a dsn holding one is refused (:mod:`vitalfm.db.dsn`), and
messages show only the connection target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg2
from psycopg2 import sql

from vitalfm.db.dsn import check_dsn, connection_target
from vitalfm.errors import DatabaseError

# Tables the study reads: cohort (icustays, patients, admissions, diagnoses, procedures) and
# vitals (chartevents, d_items for the item checks).
REQUIRED_TABLES: tuple[str, ...] = (
    "patients",
    "admissions",
    "icustays",
    "diagnoses_icd",
    "procedures_icd",
    "chartevents",
)
#: Columns the study's queries read (vitalfm.data.cohort and vitalfm.data.vitals), per table:
#: a server whose table lacks one fails in check_database, before the extraction.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("subject_id", "gender", "dob"),
    "admissions": (),
    "icustays": (
        "subject_id",
        "hadm_id",
        "icustay_id",
        "dbsource",
        "first_careunit",
        "intime",
        "outtime",
    ),
    "diagnoses_icd": ("hadm_id", "icd9_code"),
    "procedures_icd": ("hadm_id", "icd9_code"),
    "chartevents": ("icustay_id", "charttime", "itemid", "valuenum", "error"),
}


def connect(dsn: str, *, connect_timeout_s: int = 10, application_name: str = "vitalfm") -> Any:
    """Open a connection, turning libpq's failures into one message with the fix."""
    check_dsn(dsn)
    target = connection_target(dsn)
    try:
        conn = psycopg2.connect(
            dsn, connect_timeout=connect_timeout_s, application_name=application_name
        )
    except psycopg2.OperationalError as err:
        raise _explain_connect_error(str(err).strip(), target) from None
    return conn


def _explain_connect_error(message: str, target: str) -> DatabaseError:
    low = message.lower()
    first_line = message.splitlines()[0] if message else "unknown error"
    if "password authentication failed" in low or "no password supplied" in low:
        return DatabaseError(
            f"the server at {target} rejected the credentials: {first_line}",
            "check the user name (dsn or PGUSER) and set the password in PGPASSWORD or "
            "~/.pgpass (mode 0600); passwords never go in config files",
        )
    if "role" in low and "does not exist" in low:
        return DatabaseError(
            f"the server at {target} has no such user: {first_line}",
            "set an existing role in database.dsn (user=...) or PGUSER",
        )
    if "database" in low and "does not exist" in low:
        return DatabaseError(
            f"the server at {target} has no such database: {first_line}",
            "set dbname in database.dsn or PGDATABASE to the database holding MIMIC-III",
        )
    if "pg_hba.conf" in low:
        return DatabaseError(
            f"the server at {target} refuses this client: {first_line}",
            "ask the database administrator to allow this host/user in pg_hba.conf",
        )
    return DatabaseError(
        f"cannot reach the PostgreSQL server at {target}: {first_line}",
        "check host and port (database.dsn or PGHOST/PGPORT), that the server is running and "
        "reachable from this machine; or use the embedded synthetic database "
        "(database.source: synthetic)",
    )


def set_read_only(conn: Any) -> None:
    """Every study query only reads; a read-only role suffices and nothing can be written."""
    conn.set_session(readonly=True, autocommit=False)


def check_mimic_schema(
    conn: Any, schema: str, tables: Iterable[str] = REQUIRED_TABLES
) -> dict[str, Any]:
    """Check that ``schema`` exists and every needed table is readable and has the columns
    the study reads (:data:`REQUIRED_COLUMNS`); return server facts."""
    tables = list(tables)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            cur.execute(
                "SELECT string_agg(nspname, ', ' ORDER BY nspname) FROM pg_namespace "
                "WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema'"
            )
            available = cur.fetchone()[0] or "none"
            raise DatabaseError(
                f"the database has no schema '{schema}' (schemas present: {available})",
                "set database.schema to the schema holding the MIMIC-III tables "
                "(mimic-code's build uses 'mimiciii')",
            )
        missing, unreadable = [], []
        for table in tables:
            cur.execute(
                "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm')",
                (schema, table),
            )
            row = cur.fetchone()
            if row is None:
                missing.append(table)
            elif not row[0]:
                unreadable.append(table)
        if missing:
            raise DatabaseError(
                f"schema '{schema}' lacks the MIMIC-III table(s): {', '.join(missing)}",
                "load the full MIMIC-III (mimic-code's buildmimic/postgres) into this schema, "
                "or point database.schema at the schema that has them",
            )
        if unreadable:
            raise DatabaseError(
                f"the user may not read {schema}.{', '.join(unreadable)}",
                f"GRANT USAGE ON SCHEMA {schema} and SELECT ON ALL TABLES IN SCHEMA {schema} "
                "to this role",
            )
        lacking = _missing_columns(cur, schema, tables)
        if lacking:
            raise DatabaseError(
                f"schema '{schema}' has the MIMIC-III tables, but "
                + "; ".join(f"{schema}.{t} lacks column(s) {', '.join(c)}" for t, c in lacking)
                + " (the study's queries read them)",
                "load MIMIC-III v1.4 with mimic-code's buildmimic/postgres scripts (they create "
                "every column), or point database.schema at the schema that has them",
            )
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = %s "
            "AND tablename LIKE 'chartevents%%' AND indexdef ILIKE '%%(icustay_id%%')",
            (schema,),
        )
        has_stay_index = bool(cur.fetchone()[0])
    conn.rollback()
    return {
        "server_version": version,
        "schema": schema,
        "chartevents_icustay_index": has_stay_index,
    }


def _missing_columns(cur: Any, schema: str, tables: Iterable[str]) -> list[tuple[str, list[str]]]:
    """[(table, columns it lacks)] of REQUIRED_COLUMNS for ``tables``."""
    out = []
    for table in tables:
        wanted = REQUIRED_COLUMNS.get(table, ())
        if not wanted:
            continue
        cur.execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (schema, table),
        )
        present = {row[0] for row in cur.fetchall()}
        missing = [column for column in wanted if column not in present]
        if missing:
            out.append((table, missing))
    return out


def table_row_estimates(conn: Any, schema: str, tables: Iterable[str]) -> dict[str, int]:
    """Planner row estimates (cheap on a 330M-row chartevents, unlike count(*))."""
    out: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(
                "SELECT COALESCE(SUM(GREATEST(c.reltuples, 0)), 0)::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND (c.relname = %s OR c.oid IN ("
                "  SELECT inhrelid FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
                "  JOIN pg_namespace pn ON pn.oid = p.relnamespace "
                "  WHERE pn.nspname = %s AND p.relname = %s))",
                (schema, table, schema, table),
            )
            out[table] = int(cur.fetchone()[0])
    conn.rollback()
    return out


def qualified(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


@contextlib.contextmanager
def external_connection(database_cfg: Mapping[str, Any]) -> Iterator[Any]:
    conn = connect(database_cfg["dsn"], connect_timeout_s=database_cfg["connect_timeout_s"])
    try:
        set_read_only(conn)
        check_mimic_schema(conn, database_cfg["schema"])
        yield conn
    finally:
        conn.close()
