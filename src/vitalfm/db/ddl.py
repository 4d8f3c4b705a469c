"""The MIMIC-III v1.4 PostgreSQL schema, as MIT-LCP's mimic-code builds it for PostgreSQL >= 10.

Written for this project from the published table definitions (column names, order and types
of the MIMIC-III data dictionary). Names are lower case (mimic-code's unquoted upper-case
identifiers fold to lower case), every table but ``chartevents`` has a ``row_id`` primary key,
natural keys are UNIQUE, timestamps are ``TIMESTAMP(0)`` and floats ``DOUBLE PRECISION``.

``chartevents`` is range-partitioned on ``itemid`` with no primary key and no DEFAULT partition:
an ``itemid`` that is NULL, < 1 or >= 1,000,000 is rejected, as on a real mimic-code build.
Heavy itemids (the vital signs the study reads) get a partition of their own, so a query for a
few vitals is pruned to a few small partitions.

Foreign keys are not created: mimic-code's Makefile does not apply them either.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from types import MappingProxyType

from vitalfm.errors import ConfigError
from vitalfm.mimic import CHART_ITEMS, EXCLUDED_DUPLICATE_ITEMS

INT = "INT"
SMALLINT = "SMALLINT"
DOUBLE = "DOUBLE PRECISION"
TS = "TIMESTAMP(0)"
TEXT = "TEXT"


def VARCHAR(n: int) -> str:
    return f"VARCHAR({n})"


def CHAR(n: int) -> str:
    return f"CHAR({n})"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    not_null: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: bool = True  # row_id PRIMARY KEY
    unique: tuple[str, ...] = ()  # natural keys

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(*spec: tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


NN = True  # NOT NULL marker in the column specs below

_TABLE_LIST: tuple[Table, ...] = (
    Table(
        "admissions",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("admittime", TS, NN),
            ("dischtime", TS, NN),
            ("deathtime", TS),
            ("admission_type", VARCHAR(50), NN),
            ("admission_location", VARCHAR(50), NN),
            ("discharge_location", VARCHAR(50), NN),
            ("insurance", VARCHAR(255), NN),
            ("language", VARCHAR(10)),
            ("religion", VARCHAR(50)),
            ("marital_status", VARCHAR(50)),
            ("ethnicity", VARCHAR(200), NN),
            ("edregtime", TS),
            ("edouttime", TS),
            ("diagnosis", VARCHAR(255)),
            ("hospital_expire_flag", SMALLINT),
            ("has_chartevents_data", SMALLINT, NN),
        ),
        unique=("hadm_id",),
    ),
    Table(
        "callout",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("submit_wardid", INT),
            ("submit_careunit", VARCHAR(15)),
            ("curr_wardid", INT),
            ("curr_careunit", VARCHAR(15)),
            ("callout_wardid", INT),
            ("callout_service", VARCHAR(10), NN),
            ("request_tele", SMALLINT, NN),
            ("request_resp", SMALLINT, NN),
            ("request_cdiff", SMALLINT, NN),
            ("request_mrsa", SMALLINT, NN),
            ("request_vre", SMALLINT, NN),
            ("callout_status", VARCHAR(20), NN),
            ("callout_outcome", VARCHAR(20), NN),
            ("discharge_wardid", INT),
            ("acknowledge_status", VARCHAR(20), NN),
            ("createtime", TS, NN),
            ("updatetime", TS, NN),
            ("acknowledgetime", TS),
            ("outcometime", TS, NN),
            ("firstreservationtime", TS),
            ("currentreservationtime", TS),
        ),
    ),
    Table(
        "caregivers",
        _cols(
            ("row_id", INT, NN),
            ("cgid", INT, NN),
            ("label", VARCHAR(15)),
            ("description", VARCHAR(30)),
        ),
        unique=("cgid",),
    ),
    Table(
        "chartevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("icustay_id", INT),
            ("itemid", INT),
            ("charttime", TS),
            ("storetime", TS),
            ("cgid", INT),
            ("value", VARCHAR(255)),
            ("valuenum", DOUBLE),
            ("valueuom", VARCHAR(50)),
            ("warning", INT),
            ("error", INT),
            ("resultstatus", VARCHAR(50)),
            ("stopped", VARCHAR(50)),
        ),
        primary_key=False,
    ),
    Table(
        "cptevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("costcenter", VARCHAR(10), NN),
            ("chartdate", TS),
            ("cpt_cd", VARCHAR(10), NN),
            ("cpt_number", INT),
            ("cpt_suffix", VARCHAR(5)),
            ("ticket_id_seq", INT),
            ("sectionheader", VARCHAR(50)),
            ("subsectionheader", VARCHAR(255)),
            ("description", VARCHAR(200)),
        ),
    ),
    Table(
        "d_cpt",
        _cols(
            ("row_id", INT, NN),
            ("category", SMALLINT, NN),
            ("sectionrange", VARCHAR(100), NN),
            ("sectionheader", VARCHAR(50), NN),
            ("subsectionrange", VARCHAR(100), NN),
            ("subsectionheader", VARCHAR(255), NN),
            ("codesuffix", VARCHAR(5)),
            ("mincodeinsubsection", INT, NN),
            ("maxcodeinsubsection", INT, NN),
        ),
    ),
    Table(
        "d_icd_diagnoses",
        _cols(
            ("row_id", INT, NN),
            ("icd9_code", VARCHAR(10), NN),
            ("short_title", VARCHAR(50), NN),
            ("long_title", VARCHAR(255), NN),
        ),
        unique=("icd9_code",),
    ),
    Table(
        "d_icd_procedures",
        _cols(
            ("row_id", INT, NN),
            ("icd9_code", VARCHAR(10), NN),
            ("short_title", VARCHAR(50), NN),
            ("long_title", VARCHAR(255), NN),
        ),
        unique=("icd9_code",),
    ),
    Table(
        "d_items",
        _cols(
            ("row_id", INT, NN),
            ("itemid", INT, NN),
            ("label", VARCHAR(200)),
            ("abbreviation", VARCHAR(100)),
            ("dbsource", VARCHAR(20)),
            ("linksto", VARCHAR(50)),
            ("category", VARCHAR(100)),
            ("unitname", VARCHAR(100)),
            ("param_type", VARCHAR(30)),
            ("conceptid", INT),
        ),
        unique=("itemid",),
    ),
    Table(
        "d_labitems",
        _cols(
            ("row_id", INT, NN),
            ("itemid", INT, NN),
            ("label", VARCHAR(100), NN),
            ("fluid", VARCHAR(100), NN),
            ("category", VARCHAR(100), NN),
            ("loinc_code", VARCHAR(100)),
        ),
        unique=("itemid",),
    ),
    Table(
        "datetimeevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("icustay_id", INT),
            ("itemid", INT, NN),
            ("charttime", TS, NN),
            ("storetime", TS, NN),
            ("cgid", INT, NN),
            ("value", TS),
            ("valueuom", VARCHAR(50), NN),
            ("warning", SMALLINT),
            ("error", SMALLINT),
            ("resultstatus", VARCHAR(50)),
            ("stopped", VARCHAR(50)),
        ),
    ),
    Table(
        "diagnoses_icd",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("seq_num", INT),
            ("icd9_code", VARCHAR(10)),
        ),
    ),
    Table(
        "drgcodes",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("drg_type", VARCHAR(20), NN),
            ("drg_code", VARCHAR(20), NN),
            ("description", VARCHAR(255)),
            ("drg_severity", SMALLINT),
            ("drg_mortality", SMALLINT),
        ),
    ),
    Table(
        "icustays",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("icustay_id", INT, NN),
            ("dbsource", VARCHAR(20), NN),
            ("first_careunit", VARCHAR(20), NN),
            ("last_careunit", VARCHAR(20), NN),
            ("first_wardid", SMALLINT, NN),
            ("last_wardid", SMALLINT, NN),
            ("intime", TS, NN),
            ("outtime", TS),
            ("los", DOUBLE),
        ),
        unique=("icustay_id",),
    ),
    Table(
        "inputevents_cv",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("icustay_id", INT),
            ("charttime", TS),
            ("itemid", INT),
            ("amount", DOUBLE),
            ("amountuom", VARCHAR(30)),
            ("rate", DOUBLE),
            ("rateuom", VARCHAR(30)),
            ("storetime", TS),
            ("cgid", INT),
            ("orderid", INT),
            ("linkorderid", INT),
            ("stopped", VARCHAR(30)),
            ("newbottle", INT),
            ("originalamount", DOUBLE),
            ("originalamountuom", VARCHAR(30)),
            ("originalroute", VARCHAR(30)),
            ("originalrate", DOUBLE),
            ("originalrateuom", VARCHAR(30)),
            ("originalsite", VARCHAR(30)),
        ),
    ),
    Table(
        "inputevents_mv",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("icustay_id", INT),
            ("starttime", TS),
            ("endtime", TS),
            ("itemid", INT),
            ("amount", DOUBLE),
            ("amountuom", VARCHAR(30)),
            ("rate", DOUBLE),
            ("rateuom", VARCHAR(30)),
            ("storetime", TS),
            ("cgid", INT),
            ("orderid", INT),
            ("linkorderid", INT),
            ("ordercategoryname", VARCHAR(100)),
            ("secondaryordercategoryname", VARCHAR(100)),
            ("ordercomponenttypedescription", VARCHAR(200)),
            ("ordercategorydescription", VARCHAR(50)),
            ("patientweight", DOUBLE),
            ("totalamount", DOUBLE),
            ("totalamountuom", VARCHAR(50)),
            ("isopenbag", SMALLINT),
            ("continueinnextdept", SMALLINT),
            ("cancelreason", SMALLINT),
            ("statusdescription", VARCHAR(30)),
            ("comments_editedby", VARCHAR(30)),
            ("comments_canceledby", VARCHAR(40)),
            ("comments_date", TS),
            ("originalamount", DOUBLE),
            ("originalrate", DOUBLE),
        ),
    ),
    Table(
        "labevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("itemid", INT, NN),
            ("charttime", TS),
            ("value", VARCHAR(200)),
            ("valuenum", DOUBLE),
            ("valueuom", VARCHAR(20)),
            ("flag", VARCHAR(20)),
        ),
    ),
    Table(
        "microbiologyevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("chartdate", TS),
            ("charttime", TS),
            ("spec_itemid", INT),
            ("spec_type_desc", VARCHAR(100)),
            ("org_itemid", INT),
            ("org_name", VARCHAR(100)),
            ("isolate_num", SMALLINT),
            ("ab_itemid", INT),
            ("ab_name", VARCHAR(30)),
            ("dilution_text", VARCHAR(10)),
            ("dilution_comparison", VARCHAR(20)),
            ("dilution_value", DOUBLE),
            ("interpretation", VARCHAR(5)),
        ),
    ),
    Table(
        "noteevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("chartdate", TS),
            ("charttime", TS),
            ("storetime", TS),
            ("category", VARCHAR(50)),
            ("description", VARCHAR(255)),
            ("cgid", INT),
            ("iserror", CHAR(1)),
            ("text", TEXT),
        ),
    ),
    Table(
        "outputevents",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT),
            ("icustay_id", INT),
            ("charttime", TS),
            ("itemid", INT),
            ("value", DOUBLE),
            ("valueuom", VARCHAR(30)),
            ("storetime", TS),
            ("cgid", INT),
            ("stopped", VARCHAR(30)),
            ("newbottle", CHAR(1)),
            ("iserror", INT),
        ),
    ),
    Table(
        "patients",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("gender", VARCHAR(5), NN),
            ("dob", TS, NN),
            ("dod", TS),
            ("dod_hosp", TS),
            ("dod_ssn", TS),
            ("expire_flag", INT, NN),
        ),
        unique=("subject_id",),
    ),
    Table(
        "prescriptions",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("icustay_id", INT),
            ("startdate", TS),
            ("enddate", TS),
            ("drug_type", VARCHAR(100), NN),
            ("drug", VARCHAR(100), NN),
            ("drug_name_poe", VARCHAR(100)),
            ("drug_name_generic", VARCHAR(100)),
            ("formulary_drug_cd", VARCHAR(120)),
            ("gsn", VARCHAR(200)),
            ("ndc", VARCHAR(120)),
            ("prod_strength", VARCHAR(120)),
            ("dose_val_rx", VARCHAR(120)),
            ("dose_unit_rx", VARCHAR(120)),
            ("form_val_disp", VARCHAR(120)),
            ("form_unit_disp", VARCHAR(120)),
            ("route", VARCHAR(120)),
        ),
    ),
    Table(
        "procedureevents_mv",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("icustay_id", INT),
            ("starttime", TS),
            ("endtime", TS),
            ("itemid", INT),
            ("value", DOUBLE),
            ("valueuom", VARCHAR(30)),
            ("location", VARCHAR(30)),
            ("locationcategory", VARCHAR(30)),
            ("storetime", TS),
            ("cgid", INT),
            ("orderid", INT),
            ("linkorderid", INT),
            ("ordercategoryname", VARCHAR(100)),
            ("secondaryordercategoryname", VARCHAR(100)),
            ("ordercategorydescription", VARCHAR(50)),
            ("isopenbag", SMALLINT),
            ("continueinnextdept", SMALLINT),
            ("cancelreason", SMALLINT),
            ("statusdescription", VARCHAR(30)),
            ("comments_editedby", VARCHAR(30)),
            ("comments_canceledby", VARCHAR(30)),
            ("comments_date", TS),
        ),
    ),
    Table(
        "procedures_icd",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("seq_num", INT, NN),
            ("icd9_code", VARCHAR(10), NN),
        ),
    ),
    Table(
        "services",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("transfertime", TS, NN),
            ("prev_service", VARCHAR(20)),
            ("curr_service", VARCHAR(20)),
        ),
    ),
    Table(
        "transfers",
        _cols(
            ("row_id", INT, NN),
            ("subject_id", INT, NN),
            ("hadm_id", INT, NN),
            ("icustay_id", INT),
            ("dbsource", VARCHAR(20)),
            ("eventtype", VARCHAR(20)),
            ("prev_careunit", VARCHAR(20)),
            ("curr_careunit", VARCHAR(20)),
            ("prev_wardid", SMALLINT),
            ("curr_wardid", SMALLINT),
            ("intime", TS),
            ("outtime", TS),
            ("los", DOUBLE),
        ),
    ),
)

#: Every MIMIC-III v1.4 table (26), by lower-case name.
TABLES: MappingProxyType[str, Table] = MappingProxyType({t.name: t for t in _TABLE_LIST})
#: table -> ordered column names (the CSV header order, lower case).
TABLE_COLUMNS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {t.name: t.column_names for t in _TABLE_LIST}
)

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
    for table in _TABLE_LIST:
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
