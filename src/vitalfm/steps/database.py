"""Steps of ``workflow/rules/database.smk``: write the synthetic MIMIC-III, or check the
user's server before any job reads it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vitalfm.db.connection import (
    REQUIRED_TABLES,
    check_mimic_schema,
    connect,
    set_read_only,
    table_row_estimates,
)
from vitalfm.db.dsn import connection_target
from vitalfm.io import write_json
from vitalfm.job_settings import Operations
from vitalfm.steps import Settings, settings_for

log = logging.getLogger(__name__)


def synthetic_mimic(settings: Settings, out_dir: str | Path) -> None:
    """Rule synthetic_mimic: the synthetic MIMIC-III as PhysioNet-style CSV files."""
    from vitalfm.synthetic import write_csv_dir

    synthetic = settings_for(settings, "synthetic_mimic", ["synthetic"])["synthetic"]
    started = time.perf_counter()
    write_csv_dir(synthetic, Path(out_dir))
    log.info("synthetic MIMIC-III written to %s in %.1f s", out_dir, time.perf_counter() - started)


def check_database(settings: Settings, operations: Operations, out_json: str | Path) -> None:
    """Rule check_database: fail early, with a clear message, if the user's server cannot serve
    the study; otherwise record what it holds."""
    db = settings_for(settings, "check_database", ["database"])["database"]
    conn = connect(db["dsn"], connect_timeout_s=operations.connect_timeout_s)
    try:
        set_read_only(conn)
        facts = check_mimic_schema(conn, db["schema"])
        facts["row_estimates"] = table_row_estimates(conn, db["schema"], REQUIRED_TABLES)
    finally:
        conn.close()
    if not facts["chartevents_icustay_index"]:
        log.warning(
            "chartevents has no index on icustay_id: vitals extraction will scan the vital "
            "partitions. An administrator can add one with: CREATE INDEX ON %s.chartevents "
            "(icustay_id, itemid, charttime);",
            db["schema"],
        )
    facts["target"] = connection_target(db["dsn"])
    write_json(facts, out_json)
