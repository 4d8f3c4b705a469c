"""Steps of ``workflow/rules/cohort.smk``: the sepsis cohort and its vital signs, read from the
database (the synthetic one, served for the length of the job, or the user's server)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from vitalfm.data.cohort import build_cohort, fetch_icu_stays
from vitalfm.data.vitals import extract_vitals, vital_names_from_config
from vitalfm.db.source import study_connection
from vitalfm.io import write_parquet
from vitalfm.job_settings import Operations
from vitalfm.steps import Settings, settings_for, write_tsv

log = logging.getLogger(__name__)

COHORT_TABLES = ("patients", "admissions", "icustays", "diagnoses_icd", "procedures_icd")
VITALS_TABLES = ("chartevents", "d_items")


def _database(settings: dict[str, Any], operations: Operations) -> dict[str, Any]:
    """What :func:`vitalfm.db.source.study_connection` connects with: the settings' database
    and the operational connection timeout."""
    return {**settings["database"], "connect_timeout_s": operations.connect_timeout_s}


def cohort(
    settings: Settings,
    operations: Operations,
    synthetic_dir: str | Path | None,
    out_cohort: str | Path,
    out_summary: str | Path,
) -> None:
    """Rule cohort: select the sepsis ICU stays and count every inclusion step."""
    cfg = settings_for(settings, "cohort", ["database", "cohort", "min_stay_hours"])
    database = _database(cfg, operations)
    with study_connection(database, synthetic_dir, COHORT_TABLES) as conn:
        stays = fetch_icu_stays(conn, database["schema"], cfg["cohort"]["icd9_codes"])
    result = build_cohort(stays, cfg["cohort"], cfg["min_stay_hours"])
    log.info(
        "cohort: %d ICU stays of %d patients",
        result.table.num_rows,
        len(set(result.table.column("subject_id").to_pylist())),
    )
    write_tsv(result.summary, out_summary)
    write_parquet(result.table, out_cohort)


def vitals(
    settings: Settings,
    operations: Operations,
    synthetic_dir: str | Path | None,
    cohort_path: str | Path,
    out_vitals: str | Path,
    out_summary: str | Path,
) -> None:
    """Rule vitals: stream the cohort's vital signs from chartevents into parquet."""
    from tqdm import tqdm

    cfg = settings_for(settings, "vitals", ["database", "vitals"])
    database = _database(cfg, operations)
    cohort_table = pq.read_table(cohort_path, columns=["icustay_id"])
    stay_ids = cohort_table.column("icustay_id").to_pylist()
    names = vital_names_from_config(cfg["vitals"])
    started = time.perf_counter()
    with (
        study_connection(database, synthetic_dir, VITALS_TABLES) as conn,
        tqdm(total=len(stay_ids), unit="stay", desc="vitals", mininterval=5) as bar,
    ):
        result = extract_vitals(
            conn,
            database["schema"],
            stay_ids,
            names,
            out_vitals,
            stays_per_query=operations.stays_per_query,
            progress=bar,
        )
    seconds = time.perf_counter() - started
    log.info("vitals: %d rows in %.1f s (%.0f rows/s)", result.rows, seconds, result.rows / seconds)
    write_tsv(result.summary, out_summary)
