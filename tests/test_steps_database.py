"""The database steps (vitalfm.steps.database) called with their rules' settings: the
synthetic MIMIC-III from its settings alone, the server check with its operations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.db.embedded import EmbeddedPostgres
from vitalfm.steps import SettingsError, database


def test_synthetic_mimic_is_written_from_its_settings(tmp_path: Path) -> None:
    cfg = validate_config({"synthetic": {"n_patients": 6, "seed": 11}})
    database.synthetic_mimic(job_settings.synthetic_mimic(cfg), tmp_path / "mimic")
    manifest = json.loads((tmp_path / "mimic" / "MANIFEST.json").read_text())
    assert manifest["tables"]["patients"]["rows"] == 6  # the settings' n_patients
    assert manifest["seed"] == 11
    assert (tmp_path / "mimic" / "PATIENTS.csv.gz").is_file()


def test_synthetic_mimic_refuses_settings_of_another_rule(tmp_path: Path) -> None:
    cfg = validate_config({})
    with pytest.raises(SettingsError, match="step synthetic_mimic lack synthetic"):
        database.synthetic_mimic(job_settings.check_database(cfg), tmp_path / "mimic")
    assert not list(tmp_path.iterdir())


def test_check_database_connects_with_the_settings_and_the_operations_timeout(
    pg_server: EmbeddedPostgres,
    mimic_schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = validate_config(
        {
            "database": {
                "source": "external",
                "dsn": pg_server.dsn(),
                "schema": mimic_schema,
                "connect_timeout_s": 7,
            }
        }
    )
    seen: dict[str, Any] = {}
    real_connect = database.connect

    def connect(dsn: str, connect_timeout_s: int) -> Any:
        seen.update(dsn=dsn, timeout=connect_timeout_s)
        return real_connect(dsn, connect_timeout_s=connect_timeout_s)

    monkeypatch.setattr(database, "connect", connect)
    settings = job_settings.check_database(cfg)
    assert "connect_timeout_s" not in settings  # how long to wait reruns nothing
    database.check_database(settings, job_settings.operations(cfg), tmp_path / "check.json")
    assert seen == {"dsn": pg_server.dsn(), "timeout": 7}
    facts = json.loads((tmp_path / "check.json").read_text())
    assert facts["schema"] == mimic_schema
