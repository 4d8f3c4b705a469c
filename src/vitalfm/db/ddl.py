"""The SQL that builds the MIMIC-III v1.4 schema on PostgreSQL >= 10, as MIT-LCP's mimic-code
does: ``CREATE SCHEMA``, every table of :mod:`vitalfm.db.tables` and, after loading, the indexes.

``chartevents`` is range-partitioned on ``itemid`` with no primary key and no DEFAULT partition:
an ``itemid`` that is NULL, < 1 or >= 1,000,000 is rejected, as on a real mimic-code build.
Heavy itemids (the vital signs the study reads) get a partition of their own, so a query for a
few vitals is pruned to a few small partitions.

Foreign keys are not created: mimic-code's Makefile does not apply them either. The table
definitions (``TABLES``, ``TABLE_COLUMNS``) are re-exported here for the modules that read them
with the SQL.
"""

from __future__ import annotations

import itertools
import re

from vitalfm.db.tables import TABLE_COLUMNS, TABLE_LIST, TABLES, Column, Table
from vitalfm.errors import ConfigError
from vitalfm.mimic import CHART_ITEMS, EXCLUDED_DUPLICATE_ITEMS

__all__ = [
    "TABLES",
    "TABLE_COLUMNS",
    "Column",
    "Table",
    "chartevents_partition_bounds",
    "check_schema_name",
    "create_indexes_sql",
    "create_schema_sql",
]

# --- chartevents partitions -------------------------------------------------------------------

# Items charted heavily (the study's vitals and the "calc" temperature copies, plus the few
# other items the synthetic generator charts) each get a partition of their own.
_OWN_PARTITION_ITEMIDS: tuple[int, ...] = tuple(
    sorted(
        {item.itemid for item in CHART_ITEMS}
        | set(EXCLUDED_DUPLICATE_ITEMS)
        | {198, 212, 220048, 220739}
    )
)
# Coarse ranges for everything else: dense in CareVue's low itemids and in MetaVision's
# 220000-228000 block, where real MIMIC-III rows concentrate.
_RANGE_BREAKS: tuple[int, ...] = (
    *range(1, 1000, 50),
    *range(1000, 10000, 1000),
    *range(10000, 50000, 10000),
    50000,
    100000,
    220000,
    *range(220000, 228001, 500),
    230000,
    1000000,
)
CHARTEVENTS_MIN_ITEMID = 1
CHARTEVENTS_MAX_ITEMID_EXCLUSIVE = 1000000


def chartevents_partition_bounds() -> tuple[tuple[int, int], ...]:
    """Contiguous [low, high) itemid ranges from 1 to 1,000,000, one per partition."""
    points = set(_RANGE_BREAKS)
    for itemid in _OWN_PARTITION_ITEMIDS:
        points.update((itemid, itemid + 1))
    ordered = sorted(
        p for p in points if CHARTEVENTS_MIN_ITEMID <= p <= CHARTEVENTS_MAX_ITEMID_EXCLUSIVE
    )
    return tuple(itertools.pairwise(ordered))


# --- SQL --------------------------------------------------------------------------------------

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def check_schema_name(schema: str) -> str:
    """Schema names are spliced into SQL: allow plain lower-case identifiers only."""
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"schema name {schema!r} is not a plain lower-case SQL identifier",
            "use letters, digits and underscores, starting with a letter (e.g. mimiciii)",
        )
    return schema


def _create_table_sql(schema: str, table: Table, partition_clause: str = "") -> str:
    lines = [f"    {c.name} {c.sql_type}{' NOT NULL' if c.not_null else ''}" for c in table.columns]
    if table.primary_key:
        lines.append(f"    CONSTRAINT {table.name}_rowid_pk PRIMARY KEY (row_id)")
    for key in table.unique:
        lines.append(f"    CONSTRAINT {table.name}_{key}_unique UNIQUE ({key})")
    body = ",\n".join(lines)
    return f"CREATE TABLE {schema}.{table.name} (\n{body}\n){partition_clause};\n"


def create_schema_sql(schema: str = "mimiciii", *, drop_existing: bool = False) -> str:
    """``CREATE SCHEMA`` and every MIMIC-III table (chartevents partitioned by itemid range).

    The statements qualify every name with ``schema``; no search_path is needed.
    """
    check_schema_name(schema)
    parts = []
    if drop_existing:
        parts.append(f"DROP SCHEMA IF EXISTS {schema} CASCADE;\n")
    parts.append(f"CREATE SCHEMA {schema};\n")
    for table in TABLE_LIST:
        if table.name == "chartevents":
            parts.append(_create_table_sql(schema, table, " PARTITION BY RANGE (itemid)"))
            for n, (low, high) in enumerate(chartevents_partition_bounds(), start=1):
                parts.append(
                    f"CREATE TABLE {schema}.chartevents_{n} PARTITION OF {schema}.chartevents "
                    f"FOR VALUES FROM ({low}) TO ({high});\n"
                )
        else:
            parts.append(_create_table_sql(schema, table))
    return "".join(parts)


# Single-column B-tree indexes in the spirit of mimic-code's postgres_add_indexes.sql
# (id columns, ICD-9 codes, labels, drugs). patients gets none.
_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("admissions", ("subject_id", "hadm_id")),
    ("callout", ("subject_id", "hadm_id")),
    ("caregivers", ("cgid",)),
    ("cptevents", ("subject_id", "hadm_id")),
    ("d_icd_diagnoses", ("icd9_code", "long_title")),
    ("d_icd_procedures", ("icd9_code", "long_title")),
    ("d_items", ("itemid", "label")),
    ("d_labitems", ("itemid", "label", "loinc_code")),
    ("datetimeevents", ("subject_id", "hadm_id", "icustay_id", "itemid")),
    ("diagnoses_icd", ("subject_id", "hadm_id", "icd9_code")),
    ("drgcodes", ("subject_id", "hadm_id")),
    ("icustays", ("subject_id", "hadm_id", "icustay_id")),
    ("inputevents_cv", ("subject_id", "hadm_id", "icustay_id", "charttime", "itemid")),
    ("inputevents_mv", ("subject_id", "hadm_id", "icustay_id", "itemid")),
    ("labevents", ("subject_id", "hadm_id", "itemid")),
    ("microbiologyevents", ("subject_id", "hadm_id")),
    ("noteevents", ("subject_id", "hadm_id")),
    ("outputevents", ("subject_id", "hadm_id", "icustay_id")),
    ("prescriptions", ("subject_id", "hadm_id", "icustay_id", "drug_type", "drug")),
    ("procedureevents_mv", ("subject_id", "hadm_id", "icustay_id", "itemid")),
    ("procedures_icd", ("subject_id", "hadm_id", "icd9_code")),
    ("services", ("subject_id", "hadm_id")),
    ("transfers", ("subject_id", "hadm_id", "icustay_id")),
)


def create_indexes_sql(schema: str = "mimiciii", tables: tuple[str, ...] | None = None) -> str:
    """Indexes to build after loading (faster than maintaining them row by row).

    ``tables`` restricts the indexes to those tables (default: all).
    """
    check_schema_name(schema)
    wanted = set(TABLES) if tables is None else set(tables)
    parts = []
    for table, columns in _INDEXES:
        if table not in wanted:
            continue
        for n, column in enumerate(columns, start=1):
            parts.append(f"CREATE INDEX {table}_idx{n:02d} ON {schema}.{table} ({column});\n")
    if "chartevents" in wanted:
        # mimic-code builds one (itemid) index per partition; on PostgreSQL >= 11 an index on
        # the partitioned parent creates exactly those.
        parts.append(f"CREATE INDEX chartevents_idx01 ON {schema}.chartevents (itemid);\n")
        # NOT in mimic-code: without it, extracting the vitals of a small cohort scans every
        # row of each vital's partition (millions on the real data); with it, each stay's rows
        # come straight from the index. Propagates to all partitions.
        parts.append(
            f"CREATE INDEX chartevents_idx02 ON {schema}.chartevents "
            "(icustay_id, itemid, charttime);\n"
        )
    return "".join(parts)
