"""Connections to a user's server: bad input gets one clear message, passwords stay secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.db.connection import check_mimic_schema, connect
from vitalfm.db.dsn import redact_dsn
from vitalfm.db.embedded import EmbeddedPostgres
from vitalfm.errors import ConfigError, DatabaseError
from vitalfm.steps.database import check_database

SECRET = "s3cret-Pa55"


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="cannot reach") as info:
        connect(f"host={tmp_path} port=5999 dbname=mimic user=x", connect_timeout_s=2)
    assert "PGHOST" in info.value.fix


def test_missing_database(pg_server: EmbeddedPostgres) -> None:
    with pytest.raises(DatabaseError, match="no such database"):
        connect(pg_server.dsn("no_such_db"))


@pytest.fixture
def password_role(pg_server: EmbeddedPostgres) -> Any:
    """A role that must authenticate with a password (the rest of the server stays 'trust')."""
    assert pg_server.root is not None
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET password_encryption = 'scram-sha-256'")
        cur.execute(f"CREATE ROLE secure_reader LOGIN PASSWORD '{SECRET}'")
    hba = pg_server.root / "data" / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("local all secure_reader scram-sha-256\n" + original)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
    yield f"host={pg_server.socket_dir} port={pg_server.port} dbname=mimic user=secure_reader"
    hba.write_text(original)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_reload_conf()")
        cur.execute("DROP ROLE secure_reader")
    conn.close()


def test_wrong_credentials(password_role: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(DatabaseError, match="rejected the credentials") as info:
        connect(password_role)
    assert "PGPASSWORD" in info.value.fix


def test_password_from_environment_never_reaches_outputs(
    password_role: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mimic_schema: str
) -> None:
    monkeypatch.setenv("PGPASSWORD", SECRET)
    conn = connect(password_role)  # the right password, from the environment only
    conn.close()
    cfg = validate_config(
        {"database": {"source": "external", "dsn": password_role, "schema": mimic_schema}}
    )
    # secure_reader may not read the tables yet: a clear privilege message
    with pytest.raises(DatabaseError, match="may not read") as info:
        check_database(
            job_settings.check_database(cfg), job_settings.operations(cfg), tmp_path / "check.json"
        )
    assert "GRANT" in info.value.fix
    assert SECRET not in str(info.value)
    assert not (tmp_path / "check.json").exists()


def test_password_in_dsn_is_refused() -> None:
    with pytest.raises(ConfigError, match="password"):
        validate_config(
            {"database": {"source": "external", "dsn": f"host=x user=y password={SECRET}"}}
        )
    with pytest.raises(ConfigError, match="password"):
        connect(f"host=x user=y password={SECRET}")


def test_redacted_dsn_hides_password() -> None:
    shown = redact_dsn(f"postgresql://alice:{SECRET}@db.example:5433/mimic")
    assert SECRET not in shown
    assert "user=alice" in shown and "port=5433" in shown


def test_missing_schema(pg_conn: Any) -> None:
    with pytest.raises(DatabaseError, match="no schema 'mimic_nope'") as info:
        check_mimic_schema(pg_conn, "mimic_nope")
    assert "database.schema" in info.value.fix


def test_missing_table(pg_conn: Any) -> None:
    pg_conn.autocommit = True
    with pg_conn.cursor() as cur:
        cur.execute("CREATE SCHEMA half_mimic")
        cur.execute("CREATE TABLE half_mimic.patients (subject_id int)")
    try:
        with pytest.raises(DatabaseError, match="lacks the MIMIC-III table") as info:
            check_mimic_schema(pg_conn, "half_mimic")
        assert "chartevents" in str(info.value)
    finally:
        with pg_conn.cursor() as cur:
            cur.execute("DROP SCHEMA half_mimic CASCADE")


def test_external_check_writes_facts_without_secrets(
    pg_server: EmbeddedPostgres, mimic_schema: str, tmp_path: Path
) -> None:
    cfg = validate_config(
        {"database": {"source": "external", "dsn": pg_server.dsn(), "schema": mimic_schema}}
    )
    out = tmp_path / "check.json"
    check_database(job_settings.check_database(cfg), job_settings.operations(cfg), out)
    facts = json.loads(out.read_text())
    assert facts["schema"] == mimic_schema
    assert facts["chartevents_icustay_index"] in (True, False)
    assert "password" not in out.read_text()
