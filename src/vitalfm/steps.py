"""One function per workflow step: paths and config in, files out (always written atomically).

Snakemake scripts in ``scripts/`` only unpack ``snakemake.input/output`` and call these, so
every step can be run and tested without Snakemake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from vitalfm.config import validate_config
from vitalfm.data.cohort import build_cohort, fetch_icu_stays
from vitalfm.data.vitals import extract_vitals, vital_names_from_config
from vitalfm.db.connection import (
    REQUIRED_TABLES,
    check_mimic_schema,
    connect,
    set_read_only,
    table_row_estimates,
)
from vitalfm.db.dsn import connection_target
from vitalfm.db.source import study_connection
from vitalfm.io import write_json, write_parquet, write_text

log = logging.getLogger(__name__)

COHORT_TABLES = ("patients", "admissions", "icustays", "diagnoses_icd", "procedures_icd")
VITALS_TABLES = ("chartevents", "d_items")


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    write_text(frame.to_csv(sep="\t", index=False), path)


def make_synthetic(cfg: Mapping[str, Any], out_dir: str | Path) -> None:
    from vitalfm.synthetic import write_csv_dir

    cfg = validate_config(cfg)
    started = time.perf_counter()
    write_csv_dir(cfg["synthetic"], Path(out_dir))
    log.info("synthetic MIMIC-III written to %s in %.1f s", out_dir, time.perf_counter() - started)


def check_external_database(cfg: Mapping[str, Any], out_json: str | Path) -> None:
    """Fail early, with a clear message, if the user's server cannot serve the study."""
    cfg = validate_config(cfg)
    db = cfg["database"]
    conn = connect(db["dsn"], connect_timeout_s=db["connect_timeout_s"])
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


def make_cohort(
    cfg: Mapping[str, Any],
    synthetic_dir: str | Path | None,
    out_cohort: str | Path,
    out_summary: str | Path,
) -> None:
    cfg = validate_config(cfg)
    min_stay_hours = cfg["windows"]["context_hours"] + cfg["windows"]["horizon_hours"]
    with study_connection(cfg["database"], synthetic_dir, COHORT_TABLES) as conn:
        stays = fetch_icu_stays(conn, cfg["database"]["schema"], cfg["cohort"]["icd9_codes"])
    result = build_cohort(stays, cfg["cohort"], min_stay_hours)
    log.info(
        "cohort: %d ICU stays of %d patients",
        result.table.num_rows,
        len(set(result.table.column("subject_id").to_pylist())),
    )
    write_tsv(result.summary, out_summary)
    write_parquet(result.table, out_cohort)


def make_vitals(
    cfg: Mapping[str, Any],
    synthetic_dir: str | Path | None,
    cohort_path: str | Path,
    out_vitals: str | Path,
    out_summary: str | Path,
) -> None:
    from tqdm import tqdm

    cfg = validate_config(cfg)
    cohort = pq.read_table(cohort_path, columns=["icustay_id"])
    stay_ids = cohort.column("icustay_id").to_pylist()
    names = vital_names_from_config(cfg["vitals"])
    started = time.perf_counter()
    with (
        study_connection(cfg["database"], synthetic_dir, VITALS_TABLES) as conn,
        tqdm(total=len(stay_ids), unit="stay", desc="vitals", mininterval=5) as bar,
    ):
        result = extract_vitals(
            conn,
            cfg["database"]["schema"],
            stay_ids,
            names,
            out_vitals,
            stays_per_query=cfg["vitals"]["stays_per_query"],
            progress=bar,
        )
    seconds = time.perf_counter() - started
    log.info("vitals: %d rows in %.1f s (%.0f rows/s)", result.rows, seconds, result.rows / seconds)
    write_tsv(result.summary, out_summary)


def make_grid(
    cfg: Mapping[str, Any],
    vitals_path: str | Path,
    cohort_path: str | Path,
    out_grid: str | Path,
    out_summary: str | Path,
) -> None:
    from vitalfm.data.grid import resample_stays, write_grid

    cfg = validate_config(cfg)
    grid_cfg = cfg["grid"]
    result = resample_stays(
        pq.read_table(vitals_path),
        pq.read_table(cohort_path),
        vital_names=vital_names_from_config(cfg["vitals"]),
        frequency_minutes=grid_cfg["frequency_minutes"],
    )
    log.info("grid: %s", result.report())
    write_tsv(result.summary, out_summary)
    write_grid(result.table, out_grid)


def make_splits(
    cfg: Mapping[str, Any], grid_path: str | Path, out_manifest: str | Path, out_summary: str | Path
) -> None:
    from vitalfm.data.splits import split_manifest, split_summary, write_manifest

    cfg = validate_config(cfg)
    stays = pq.read_table(grid_path, columns=["subject_id", "icustay_id"]).to_pandas()
    manifest = split_manifest(stays.drop_duplicates(), **cfg["split"])
    summary = split_summary(manifest).reset_index()
    log.info("splits:\n%s", summary.to_string(index=False))
    write_tsv(summary, out_summary)
    write_manifest(manifest, out_manifest)


def make_windows(
    cfg: Mapping[str, Any],
    split: str,
    grid_path: str | Path,
    manifest_path: str | Path,
    out_arrays: str | Path,
    out_index: str | Path,
) -> None:
    from vitalfm.data.grid import read_grid
    from vitalfm.data.splits import read_manifest
    from vitalfm.data.windows import build_windows

    cfg = validate_config(cfg)
    names = vital_names_from_config(cfg["vitals"])
    windows = build_windows(
        read_grid(grid_path, names),
        read_manifest(manifest_path),
        split=split,
        vital_names=names,
        frequency_minutes=cfg["grid"]["frequency_minutes"],
        context_hours=cfg["windows"]["context_hours"],
        horizon_hours=cfg["windows"]["horizon_hours"],
        stride_hours=cfg["windows"]["stride_hours"],
        min_horizon_observed=cfg["windows"]["min_horizon_observed"],
        fill=cfg["windows"]["fill"],
    )
    log.info("%s: %d windows from %d ICU stays", split, len(windows), len(windows.stay_ids))
    windows.save(out_arrays, out_index)


def synthetic_dir_of(snakemake: Any) -> str | None:
    """The synthetic CSV directory when the database input is one (source: synthetic)."""
    database = str(snakemake.input.database)
    return database if not database.endswith(".json") else None
