"""Cohort and vitals on hand-built MIMIC-III edge cases, in a real server with the real DDL."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vitalfm.config import validate_config
from vitalfm.data import vitals
from vitalfm.data.cohort import build_cohort, fetch_icu_stays
from vitalfm.data.vitals import extract_vitals
from vitalfm.db.embedded import EmbeddedPostgres
from vitalfm.errors import DatabaseError, DataError

T0 = datetime(2150, 3, 1, 8, 0, 0)
ALL_VITALS = ["heart_rate", "sbp", "dbp", "mbp", "resp_rate", "spo2", "temperature"]

# subject, hadm, icustay, dbsource, dob, intime, hours, icd9 codes, procedures
CASES = [
    # A: CareVue, two ICU stays in one septic admission
    (1, 10, 100, "carevue", datetime(2085, 1, 1), T0, 30, ["99592", "4019"], []),
    (1, 10, 101, "carevue", datetime(2085, 1, 1), T0 + timedelta(hours=40), 20, None, []),
    # B: MetaVision, older than 89: dob exactly 300 years before the admission
    (2, 20, 200, "metavision", datetime(1850, 3, 1), T0, 24, ["78552"], []),
    # C: not septic
    (3, 30, 300, "metavision", datetime(2090, 1, 1), T0, 48, ["4280"], []),
    # D: a child with sepsis
    (4, 40, 400, "carevue", datetime(2140, 1, 1), T0, 48, ["99591"], []),
    # E: septic but the stay is too short for one 6 h + 3 h window
    (5, 50, 500, "metavision", datetime(2080, 1, 1), T0, 5, ["99591"], []),
    # F: Angus only: pneumonia (486) + acute kidney failure (5849)
    (6, 60, 600, "metavision", datetime(2080, 1, 1), T0, 30, ["486", "5849"], []),
    # G: Angus by infection + mechanical ventilation procedure
    (7, 70, 700, "carevue", datetime(2080, 1, 1), T0, 30, ["5990"], ["9671"]),
]


def _insert_cases(conn: Any, schema: str) -> None:
    with conn.cursor() as cur:
        for row, case in enumerate(CASES, start=1):
            subject, hadm, stay, source, dob, intime, hours, codes, procs = case
            outtime = intime + timedelta(hours=hours)
            cur.execute(
                f"INSERT INTO {schema}.patients (row_id, subject_id, gender, dob, expire_flag) "
                "VALUES (%s, %s, 'F', %s, 0) ON CONFLICT DO NOTHING",
                (row, subject, dob),
            )
            if codes is not None:
                cur.execute(
                    f"INSERT INTO {schema}.admissions (row_id, subject_id, hadm_id, admittime, "
                    "dischtime, admission_type, admission_location, discharge_location, "
                    "insurance, ethnicity, has_chartevents_data) VALUES "
                    "(%s, %s, %s, %s, %s, 'EMERGENCY', 'EMERGENCY ROOM ADMIT', 'HOME', "
                    "'Medicare', 'WHITE', 1)",
                    (row, subject, hadm, intime - timedelta(hours=2), intime + timedelta(days=9)),
                )
                for seq, code in enumerate(codes, start=1):
                    cur.execute(
                        f"INSERT INTO {schema}.diagnoses_icd (row_id, subject_id, hadm_id, "
                        "seq_num, icd9_code) VALUES (%s, %s, %s, %s, %s)",
                        (row * 10 + seq, subject, hadm, seq, code),
                    )
                for seq, code in enumerate(procs, start=1):
                    cur.execute(
                        f"INSERT INTO {schema}.procedures_icd (row_id, subject_id, hadm_id, "
                        "seq_num, icd9_code) VALUES (%s, %s, %s, %s, %s)",
                        (row * 10 + seq, subject, hadm, seq, code),
                    )
            cur.execute(
                f"INSERT INTO {schema}.icustays (row_id, subject_id, hadm_id, icustay_id, "
                "dbsource, first_careunit, last_careunit, first_wardid, last_wardid, intime, "
                "outtime, los) VALUES (%s, %s, %s, %s, %s, 'MICU', 'MICU', 1, 1, %s, %s, %s)",
                (row, subject, hadm, stay, source, intime, outtime, hours / 24),
            )
    conn.commit()


def _chart(conn: Any, schema: str, rows: list[tuple]) -> None:
    """rows: (icustay_id, minutes after T0, itemid, valuenum, valueuom, error)."""
    subject_of = {c[2]: (c[0], c[1]) for c in CASES}
    with conn.cursor() as cur:
        for n, (stay, minutes, itemid, value, uom, error) in enumerate(rows):
            subject, hadm = subject_of[stay]
            text = "Unable to assess" if value is None else f"{value:g}"
            cur.execute(
                f"INSERT INTO {schema}.chartevents (row_id, subject_id, hadm_id, icustay_id, "
                "itemid, charttime, value, valuenum, valueuom, error) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    n + 1,
                    subject,
                    hadm,
                    stay,
                    itemid,
                    T0 + timedelta(minutes=minutes),
                    text,
                    value,
                    uom,
                    error,
                ),
            )
    conn.commit()


@pytest.fixture
def case_db(pg_server: EmbeddedPostgres, mimic_schema: str) -> tuple[Any, str]:
    conn = pg_server.connect()
    _insert_cases(conn, mimic_schema)
    yield conn, mimic_schema
    conn.close()


def _cohort(conn: Any, schema: str, **cohort: Any) -> Any:
    cfg = validate_config({"cohort": cohort})
    stays = fetch_icu_stays(conn, schema, cfg["cohort"]["icd9_codes"])
    return build_cohort(stays, cfg["cohort"], min_stay_hours=9)


def test_explicit_cohort_edge_cases(case_db: tuple[Any, str]) -> None:
    result = _cohort(*case_db)
    frame = result.table.to_pandas().set_index("icustay_id")
    # both stays of A, the >89 patient B; not C (no sepsis), D (child), E (short), F/G (Angus)
    assert sorted(frame.index) == [100, 101, 200]
    assert frame.loc[200, "age_years"] == pytest.approx(91.4)
    assert bool(frame.loc[200, "age_shifted"]) is True
    assert frame.loc[100, "age_years"] == pytest.approx(65.16, abs=0.01)
    assert set(frame["dbsource"]) == {"carevue", "metavision"}
    assert frame.loc[100, "los_hours"] == pytest.approx(30)
    steps = result.summary.set_index("step")["icustays"].to_dict()
    assert steps == {
        "all_icu_stays": 8,
        "sepsis_explicit": 5,
        "has_times": 5,
        "adult": 4,
        "long_enough": 3,
    }


def test_first_icu_stay_only(case_db: tuple[Any, str]) -> None:
    result = _cohort(*case_db, first_icu_stay_only=True)
    assert sorted(result.table.column("icustay_id").to_pylist()) == [100, 200]
    assert result.summary["step"].iloc[-1] == "first_icu_stay"


def test_angus_cohort(case_db: tuple[Any, str]) -> None:
    result = _cohort(*case_db, definition="angus")
    ids = sorted(result.table.column("icustay_id").to_pylist())
    # 99592 (A) and 78552 (B) are explicit Angus codes; F by organ dysfunction; G by ventilation.
    # 99591 alone is not part of Angus's explicit codes, so D and E would not count anyway.
    assert ids == [100, 101, 200, 600, 700]
    frame = result.table.to_pandas().set_index("icustay_id")
    assert bool(frame.loc[600, "angus_organ_dysfunction"]) and bool(
        frame.loc[700, "angus_mechanical_ventilation"]
    )
    assert not bool(frame.loc[600, "sepsis_explicit"])


def test_empty_cohort_is_a_clear_error(case_db: tuple[Any, str]) -> None:
    with pytest.raises(DataError, match="cohort is empty") as info:
        _cohort(*case_db, icd9_codes=["0389"])
    assert "cohort.icd9_codes" in info.value.fix


def _extract(conn: Any, schema: str, tmp_path: Path, stays: list[int], vitals: list[str]) -> Any:
    out = tmp_path / "vitals.parquet"
    result = extract_vitals(conn, schema, stays, vitals, out, stays_per_query=1)
    return result, pq.read_table(out).to_pandas()


def test_vitals_cleaning_rules(case_db: tuple[Any, str], tmp_path: Path) -> None:
    conn, schema = case_db
    _chart(
        conn,
        schema,
        [
            (100, 0, 211, 80.0, "BPM", None),  # CareVue HR, kept
            (100, 0, 211, 84.0, "BPM", None),  # duplicate charttime, kept (averaged later)
            (100, 30, 211, 350.0, "BPM", None),  # out of range (HR < 300), dropped
            (100, 60, 678, 98.6, "Deg. F", None),  # °F -> 37.0 °C
            (100, 60, 679, 37.0, "Deg. C", None),  # "calc" duplicate, never read
            (100, 60, 676, 36.8, "Deg. C", None),  # °C kept as is
            (100, 90, 646, 101.0, "%", None),  # SpO2 > 100 dropped
            (100, 95, 646, 100.0, "%", None),  # SpO2 = 100 kept
            (100, 100, 618, None, "BPM", None),  # text only (NULL valuenum), dropped
            (101, 0, 51, 120.0, "mmHg", None),  # second ICU stay of the same patient
            (101, 0, 8368, 60.0, "mmHg", None),
            (101, 0, 52, 80.0, "mmHg", None),
            (200, 0, 220045, 95.0, "bpm", 0),  # MetaVision HR, error = 0 kept
            (200, 15, 220045, 20.0, "bpm", 1),  # error = 1 dropped
            (200, 15, 223761, 100.4, "?F", 0),  # MetaVision °F -> 38.0 °C
            (200, 20, 220210, 7000400.0, "insp/min", 0),  # typo-sized RR dropped
            (200, 25, 220210, 22.0, "insp/min", 0),
            (200, 30, 220179, 110.0, "mmHg", 0),
            (200, 30, 220180, 70.0, "mmHg", 0),
            (200, 30, 220181, 83.0, "mmHg", 0),
            (200, 30, 220277, 97.0, "%", 0),
            (300, 0, 220045, 70.0, "bpm", 0),  # not in the requested stays
        ],
    )
    result, rows = _extract(conn, schema, tmp_path, [100, 101, 200], ALL_VITALS)
    got = {
        (r.icustay_id, r.vital, r.itemid, round(r.value, 6)) for r in rows.itertuples(index=False)
    }
    assert got == {
        (100, "heart_rate", 211, 80.0),
        (100, "heart_rate", 211, 84.0),
        (100, "temperature", 678, 37.0),
        (100, "temperature", 676, 36.8),
        (100, "spo2", 646, 100.0),
        (101, "sbp", 51, 120.0),
        (101, "dbp", 8368, 60.0),
        (101, "mbp", 52, 80.0),
        (200, "heart_rate", 220045, 95.0),
        (200, "temperature", 223761, 38.0),
        (200, "resp_rate", 220210, 22.0),
        (200, "sbp", 220179, 110.0),
        (200, "dbp", 220180, 70.0),
        (200, "mbp", 220181, 83.0),
        (200, "spo2", 220277, 97.0),
    }
    assert rows["charttime"].min() == pd.Timestamp(T0)
    summary = result.summary.set_index("vital")
    assert summary.loc["heart_rate", "removed_out_of_range"] == 1
    assert summary.loc["heart_rate", "removed_error_flag"] == 1
    assert summary.loc["spo2", "removed_out_of_range"] == 1
    assert summary.loc["resp_rate", "removed_null_valuenum"] == 1
    assert summary.loc["resp_rate", "removed_out_of_range"] == 1
    assert summary.loc["temperature", "rows_fetched"] == 3  # 679 never fetched
    assert summary.loc["heart_rate", "stays_with_data"] == 2


def test_vital_without_rows_is_an_error_and_leaves_no_file(
    case_db: tuple[Any, str], tmp_path: Path
) -> None:
    conn, schema = case_db
    _chart(conn, schema, [(100, 0, 211, 80.0, "BPM", None)])
    out = tmp_path / "vitals.parquet"
    with pytest.raises(DataError, match="spo2") as info:
        extract_vitals(conn, schema, [100], ["heart_rate", "spo2"], out)
    assert "vitals.names" in info.value.fix
    assert list(tmp_path.iterdir()) == []


def test_read_only_role_suffices(
    case_db: tuple[Any, str], pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    conn, schema = case_db
    _chart(conn, schema, [(100, 0, 211, 80.0, "BPM", None), (200, 0, 220045, 90.0, "bpm", 0)])
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE mimic_reader LOGIN")
        cur.execute(f"GRANT USAGE ON SCHEMA {schema} TO mimic_reader")
        cur.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO mimic_reader")
    conn.commit()
    dsn = pg_server.dsn().replace(f"user={pg_server.user}", "user=mimic_reader")
    import psycopg2

    reader = psycopg2.connect(dsn)
    try:
        reader.set_session(readonly=True)
        result = _cohort(reader, schema)
        assert result.table.num_rows == 3
        extracted, _ = _extract(reader, schema, tmp_path, [100, 200], ["heart_rate"])
        assert extracted.rows == 2
        # and it could not write even if it tried
        with pytest.raises(psycopg2.Error), reader.cursor() as cur:
            cur.execute(f"DELETE FROM {schema}.chartevents")
    finally:
        reader.close()
        with conn.cursor() as cur:
            cur.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM mimic_reader")
            cur.execute(f"REVOKE ALL ON SCHEMA {schema} FROM mimic_reader")
            cur.execute("DROP ROLE mimic_reader")
        conn.commit()


def _sorted_rows(path: Path) -> pd.DataFrame:
    keys = ["icustay_id", "charttime", "itemid", "value"]
    frame = pq.read_table(path).to_pandas().astype({"vital": str})
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def test_one_query_for_the_cohort_equals_one_query_per_stay(
    case_db: tuple[Any, str], tmp_path: Path
) -> None:
    conn, schema = case_db
    _chart(
        conn,
        schema,
        [
            (100, 0, 211, 80.0, "BPM", None),
            (100, 30, 211, None, "BPM", None),
            (101, 0, 51, 120.0, "mmHg", None),
            (101, 5, 51, 400.0, "mmHg", None),
            (200, 0, 220045, 95.0, "bpm", 0),
            (200, 15, 220045, 20.0, "bpm", 1),
            (300, 0, 220045, 70.0, "bpm", 0),
        ],
    )
    stays, names = [200, 100, 101], ["heart_rate", "sbp"]
    per_stay = extract_vitals(conn, schema, stays, names, tmp_path / "a.parquet", stays_per_query=1)
    whole = extract_vitals(conn, schema, stays, names, tmp_path / "b.parquet")
    assert whole.rows == per_stay.rows == 3
    pd.testing.assert_frame_equal(whole.summary, per_stay.summary)
    pd.testing.assert_frame_equal(
        _sorted_rows(tmp_path / "b.parquet"), _sorted_rows(tmp_path / "a.parquet")
    )
    with conn.cursor() as cur:  # jit is turned off for the extraction's transaction only
        cur.execute("SHOW jit")
        assert cur.fetchone()[0] == "on"


def _binary_copy(rows: list[tuple[int, int, int, float, bool, int]]) -> bytes:
    """PostgreSQL's binary COPY of (icustay_id, charttime in us since 2000, itemid, valuenum,
    valuenum is NULL, error), written independently of the decoder under test."""
    body = b"".join(
        struct.pack(">hiiiqiiidibii", 6, 4, s, 8, t, 4, i, 8, v, 1, n, 4, e)
        for s, t, i, v, n, e in rows
    )
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + body + struct.pack(">h", -1)


def test_binary_copy_stream_decodes_the_same_however_it_is_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vitals, "_BLOCK_BYTES", 200)  # several blocks of whole rows
    rows = [(100 + k % 3, k * 60_000_000, 211, 60.0 + k, k % 5 == 0, k % 7 == 0) for k in range(40)]
    data = _binary_copy(rows)
    for step in (1, 13, 55, len(data)):
        blocks: list[vitals.RawRows] = []
        decoder = vitals._BinaryCopyDecoder(blocks.append)
        for start in range(0, len(data), step):
            decoder.feed(data[start : start + step])
        decoder.feed(b"", final=True)
        assert len(blocks) > 1 or step == len(data)
        icustay = np.concatenate([b.icustay_id for b in blocks])
        charttime = np.concatenate([b.charttime_us for b in blocks])
        assert icustay.tolist() == [r[0] for r in rows]
        assert charttime[1] - charttime[0] == 60_000_000
        assert np.concatenate([b.valuenum for b in blocks]).tolist() == [r[3] for r in rows]
        assert np.concatenate([b.valuenum_null for b in blocks]).tolist() == [r[4] for r in rows]
        assert np.concatenate([b.error for b in blocks]).tolist() == [int(r[5]) for r in rows]


def test_a_cut_short_binary_copy_stream_is_an_error() -> None:
    data = _binary_copy([(100, 0, 211, 60.0, False, 0)] * 3)
    decoder = vitals._BinaryCopyDecoder(lambda raw: None)
    decoder.feed(data[:-1])
    with pytest.raises(DatabaseError, match="trailer"):
        decoder.feed(b"", final=True)


def test_a_failure_while_writing_stops_the_copy_and_leaves_no_file(
    case_db: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, schema = case_db
    with conn.cursor() as cur:  # more rows than the pipe holds, so the server is mid-COPY
        cur.execute(
            f"INSERT INTO {schema}.chartevents (row_id, subject_id, icustay_id, itemid, "
            "charttime, valuenum) SELECT g, 1, 100, 211, %s + g * interval '1 s', 80 "
            "FROM generate_series(1, 60000) g",
            (T0,),
        )
    conn.commit()
    monkeypatch.setattr(vitals, "_BLOCK_BYTES", 64 << 10)

    def disk_full(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(vitals, "clean_block", disk_full)
    out = tmp_path / "vitals.parquet"
    with pytest.raises(OSError, match="disk full"):
        extract_vitals(conn, schema, [100], ["heart_rate"], out)
    assert list(tmp_path.iterdir()) == []
    conn.rollback()
    with conn.cursor() as cur:  # the connection is still usable
        cur.execute(f"SELECT count(*) FROM {schema}.chartevents")
        assert cur.fetchone()[0] == 60000
