"""The MIMIC-III schema on a real PostgreSQL: names, types, keys, chartevents partitions."""

from __future__ import annotations

import gzip
import itertools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from vitalfm.db.ddl import (
    TABLE_COLUMNS,
    TABLES,
    chartevents_partition_bounds,
    create_indexes_sql,
    create_schema_sql,
)
from vitalfm.errors import ConfigError, DatabaseError, DataError
from vitalfm.mimic import CHART_ITEMS
from vitalfm.synthetic import load_csv_dir, table_row_counts, write_csv_dir
from vitalfm.testing import drop_schema, shared_server, unique_schema

REQUIRED = (
    "patients",
    "admissions",
    "icustays",
    "diagnoses_icd",
    "d_icd_diagnoses",
    "procedures_icd",
    "d_icd_procedures",
    "d_items",
    "chartevents",
)
ALL_MIMIC_III_TABLES = {
    "admissions", "callout", "caregivers", "chartevents", "cptevents", "d_cpt",
    "d_icd_diagnoses", "d_icd_procedures", "d_items", "d_labitems", "datetimeevents",
    "diagnoses_icd", "drgcodes", "icustays", "inputevents_cv", "inputevents_mv", "labevents",
    "microbiologyevents", "noteevents", "outputevents", "patients", "prescriptions",
    "procedureevents_mv", "procedures_icd", "services", "transfers",
}  # fmt: skip


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Any:
    return shared_server(request)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schema") / "mimic"
    write_csv_dir({"seed": 11, "n_patients": 25}, out)
    return out


@pytest.fixture(scope="module")
def loaded(server: Any, csv_dir: Path) -> Iterator[tuple[Any, str]]:
    conn = server.connect()
    schema = unique_schema("schema_test")
    load_csv_dir(conn, csv_dir, schema=schema)
    yield conn, schema
    drop_schema(conn, schema)
    conn.close()


def _pg_type(sql_type: str) -> tuple[str, int | None]:
    """DDL type -> (information_schema data_type, length or timestamp precision)."""
    t = sql_type.upper()
    if m := re.fullmatch(r"VARCHAR\((\d+)\)", t):
        return "character varying", int(m.group(1))
    if m := re.fullmatch(r"CHAR\((\d+)\)", t):
        return "character", int(m.group(1))
    if m := re.fullmatch(r"TIMESTAMP\((\d)\)", t):
        return "timestamp without time zone", int(m.group(1))
    return {
        "INT": "integer",
        "SMALLINT": "smallint",
        "DOUBLE PRECISION": "double precision",
        "TEXT": "text",
    }[t], None


def _columns(conn: Any, schema: str, table: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type, "
            "COALESCE(character_maximum_length, "
            "  CASE WHEN data_type LIKE 'timestamp%%' THEN datetime_precision END), "
            "is_nullable FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        return cur.fetchall()


def test_every_mimic_table_exists_with_lower_case_names(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    assert set(TABLES) == ALL_MIMIC_III_TABLES
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name NOT LIKE 'chartevents\\_%%'",
            (schema,),
        )
        names = {r[0] for r in cur.fetchall()}
        cur.execute(
            "SELECT DISTINCT column_name FROM information_schema.columns WHERE table_schema = %s",
            (schema,),
        )
        columns = [r[0] for r in cur.fetchall()]
    assert names == ALL_MIMIC_III_TABLES
    assert all(re.fullmatch(r"[a-z0-9_]+", c) for c in columns)


@pytest.mark.parametrize("table", sorted(ALL_MIMIC_III_TABLES))
def test_columns_and_types_match_the_ddl(loaded: tuple[Any, str], table: str) -> None:
    conn, schema = loaded
    expected = [
        (c.name, *_pg_type(c.sql_type), "NO" if c.not_null else "YES")
        for c in TABLES[table].columns
    ]
    assert _columns(conn, schema, table) == expected
    assert tuple(c[0] for c in expected) == TABLE_COLUMNS[table]


def test_hard_facts_from_the_mimic_reference(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    cols = {t: {c[0]: c[1:] for c in _columns(conn, schema, t)} for t in REQUIRED}
    ce = cols["chartevents"]
    assert list(cols["chartevents"]) == [
        "row_id", "subject_id", "hadm_id", "icustay_id", "itemid", "charttime", "storetime",
        "cgid", "value", "valuenum", "valueuom", "warning", "error", "resultstatus", "stopped",
    ]  # fmt: skip
    assert ce["valuenum"][:1] == ("double precision",)
    assert ce["charttime"][:2] == ("timestamp without time zone", 0)
    assert ce["value"][:2] == ("character varying", 255)
    assert ce["itemid"] == ("integer", None, "YES")
    assert cols["icustays"]["dbsource"] == ("character varying", 20, "NO")
    assert cols["icustays"]["los"][:1] == ("double precision",)
    assert cols["patients"]["gender"] == ("character varying", 5, "NO")
    assert cols["patients"]["dob"] == ("timestamp without time zone", 0, "NO")
    assert cols["admissions"]["hospital_expire_flag"][:1] == ("smallint",)
    assert cols["diagnoses_icd"]["icd9_code"][:2] == ("character varying", 10)
    assert cols["d_icd_diagnoses"]["long_title"] == ("character varying", 255, "NO")
    assert cols["d_items"]["label"][:2] == ("character varying", 200)
    assert cols["procedures_icd"]["seq_num"] == ("integer", None, "NO")


def test_keys_row_id_primary_natural_keys_unique(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tc.table_name, tc.constraint_type, kcu.column_name "
            "FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu "
            "  ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema "
            "WHERE tc.table_schema = %s AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
            (schema,),
        )
        found = set(cur.fetchall())
    primary = {(t, "PRIMARY KEY", "row_id") for t in ALL_MIMIC_III_TABLES - {"chartevents"}}
    unique = {
        ("patients", "UNIQUE", "subject_id"),
        ("admissions", "UNIQUE", "hadm_id"),
        ("icustays", "UNIQUE", "icustay_id"),
        ("d_items", "UNIQUE", "itemid"),
        ("d_labitems", "UNIQUE", "itemid"),
        ("d_icd_diagnoses", "UNIQUE", "icd9_code"),
        ("d_icd_procedures", "UNIQUE", "icd9_code"),
        ("caregivers", "UNIQUE", "cgid"),
    }
    assert {f for f in found if not f[0].startswith("chartevents")} == primary | unique


def test_chartevents_is_range_partitioned_on_itemid(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pt.partstrat, pt.partdefid, a.attname FROM pg_partitioned_table pt "
            "JOIN pg_class c ON c.oid = pt.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0] "
            "WHERE n.nspname = %s AND c.relname = 'chartevents'",
            (schema,),
        )
        strategy, default_partition, key = cur.fetchone()
        cur.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace "
            "WHERE n.nspname = %s AND p.relname = 'chartevents'",
            (schema,),
        )
        bounds = [r[0] for r in cur.fetchall()]
        cur.execute(
            "SELECT count(*) FROM information_schema.table_constraints "
            "WHERE table_schema = %s AND table_name = 'chartevents' "
            "AND constraint_type = 'PRIMARY KEY'",
            (schema,),
        )
        n_pk = cur.fetchone()[0]
    assert (strategy, default_partition, key) == ("r", 0, "itemid")
    assert n_pk == 0
    assert len(bounds) == len(chartevents_partition_bounds()) > 50
    assert "DEFAULT" not in " ".join(bounds)
    parsed = sorted(
        tuple(int(x) for x in re.fullmatch(r"FOR VALUES FROM \((\d+)\) TO \((\d+)\)", b).groups())
        for b in bounds
    )
    assert parsed[0][0] == 1 and parsed[-1][1] == 1000000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(parsed))  # contiguous
    for itemid in [i.itemid for i in CHART_ITEMS] + [677, 679]:
        assert (itemid, itemid + 1) in parsed, itemid


@pytest.mark.parametrize("itemid", [0, 1000000, None, -5])
def test_chartevents_rejects_itemids_outside_1_to_999999(
    loaded: tuple[Any, str], itemid: int | None
) -> None:
    conn, schema = loaded
    with conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
        cur.execute(
            f"INSERT INTO {schema}.chartevents (row_id, subject_id, itemid) VALUES (1, 1, %s)",
            (itemid,),
        )
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {schema}.chartevents (row_id, subject_id, itemid) "
            "VALUES (1, 1, 1), (2, 1, 999999)"
        )
    conn.rollback()


def test_vital_queries_are_pruned_to_their_partitions(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    with conn.cursor() as cur:
        cur.execute(
            f"EXPLAIN (FORMAT JSON) SELECT * FROM {schema}.chartevents "
            "WHERE itemid IN (211, 220045)"
        )
        plan = str(cur.fetchone()[0])
    scanned = set(re.findall(r"'Relation Name': '(chartevents_\d+)'", plan))
    assert len(scanned) == 2


def test_indexes_include_the_stay_item_time_index(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    with conn.cursor() as cur:
        cur.execute("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,))
        defs = cur.fetchall()
    parent = [d for t, d in defs if t == "chartevents"]
    assert any("(icustay_id, itemid, charttime)" in d for d in parent)
    assert any(d.endswith("(itemid)") for d in parent)
    n_parts = len(chartevents_partition_bounds())
    on_parts = [d for t, d in defs if t.startswith("chartevents_") and "icustay_id" in d]
    assert len(on_parts) == n_parts
    # patients: only the key constraints' indexes, as in mimic-code
    assert sorted(d.split(" USING btree ")[1] for t, d in defs if t == "patients") == [
        "(row_id)",
        "(subject_id)",
    ]
    assert any(t == "diagnoses_icd" and d.endswith("(icd9_code)") for t, d in defs)


def test_icd9_codes_have_no_dots(loaded: tuple[Any, str]) -> None:
    conn, schema = loaded
    with conn.cursor() as cur:
        for table in ("diagnoses_icd", "procedures_icd", "d_icd_diagnoses", "d_icd_procedures"):
            cur.execute(
                f"SELECT count(*), count(*) FILTER (WHERE icd9_code LIKE '%%.%%') "
                f"FROM {schema}.{table}"
            )
            total, dotted = cur.fetchone()
            assert total > 0 and dotted == 0, table


def test_loaded_row_counts_match_the_manifest(loaded: tuple[Any, str], csv_dir: Path) -> None:
    import json

    conn, schema = loaded
    manifest = json.loads((csv_dir / "MANIFEST.json").read_text())
    assert table_row_counts(conn, schema) == {t: v["rows"] for t, v in manifest["tables"].items()}


def test_schema_sql_is_schema_qualified_and_checks_the_name() -> None:
    sql = create_schema_sql()
    assert sql.startswith("CREATE SCHEMA mimiciii;")
    assert "CREATE TABLE mimiciii.chartevents (" in sql
    assert "PARTITION BY RANGE (itemid)" in sql
    assert "FOR VALUES FROM (211) TO (212)" in sql
    assert "FOR VALUES FROM (220045) TO (220046)" in sql
    assert "DEFAULT" not in sql
    assert "icustay_id, itemid, charttime" in create_indexes_sql()
    with pytest.raises(ConfigError):
        create_schema_sql("mimic; DROP TABLE x")


def test_load_csv_dir_reads_physionet_style_files(
    server: Any,
    csv_dir: Path,
    tmp_path: Path,
) -> None:
    """Uncompressed PhysioNet files (PATIENTS.csv), a subset of tables, clear errors."""
    with (
        gzip.open(csv_dir / "PATIENTS.csv.gz", "rb") as src,
        open(tmp_path / "PATIENTS.csv", "wb") as dst,
    ):
        shutil.copyfileobj(src, dst)
    shutil.copy(csv_dir / "ICUSTAYS.csv.gz", tmp_path / "ICUSTAYS.csv.gz")
    conn = server.connect()
    schema = unique_schema("physionet")
    try:
        counts = load_csv_dir(conn, tmp_path, schema=schema, tables=["patients"])
        assert counts == {"patients": 25}
        assert table_row_counts(conn, schema, ["patients", "icustays"]) == {
            "patients": 25,
            "icustays": 0,
        }
        with pytest.raises(DatabaseError, match="already exists"):
            load_csv_dir(conn, tmp_path, schema=schema)
        counts = load_csv_dir(conn, tmp_path, schema=schema, drop_existing=True)
        assert counts["icustays"] > 25 and set(counts) == {"patients", "icustays"}
        with pytest.raises(DataError, match="lacks the CSV"):
            load_csv_dir(conn, tmp_path, schema=unique_schema("x"), tables=["chartevents"])
        (tmp_path / "PATIENTS.csv").write_text("ROW_ID,SUBJECT,GENDER\n1,2,M\n")
        with pytest.raises(DataError, match="header"):
            load_csv_dir(conn, tmp_path, schema=unique_schema("x"))
    finally:
        drop_schema(conn, schema)
        conn.close()
