"""The sepsis cohort: one row per ICU stay, with the definition flags and a step-by-step count.

One query returns every ICU stay with its patient facts and its admission's sepsis flags
(the icustays table is small: 61,532 rows in MIMIC-III); the inclusion steps are then applied
in order in pandas so that each step's count goes into the cohort summary.

ICD-9 codes carry no time stamp (they are assigned at discharge), so a septic admission
makes all of its ICU stays eligible; the forecasting windows lie within [intime, outtime].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from psycopg2 import sql

from vitalfm import mimic
from vitalfm.db.connection import qualified
from vitalfm.errors import DataError

COHORT_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int32(), nullable=False),
        pa.field("hadm_id", pa.int32(), nullable=False),
        pa.field("icustay_id", pa.int32(), nullable=False),
        pa.field("dbsource", pa.string()),
        pa.field("first_careunit", pa.string()),
        pa.field("intime", pa.timestamp("us"), nullable=False),
        pa.field("outtime", pa.timestamp("us"), nullable=False),
        pa.field("los_hours", pa.float64()),
        pa.field("age_years", pa.float64()),
        pa.field("age_shifted", pa.bool_()),
        pa.field("gender", pa.string()),
        pa.field("icustay_seq", pa.int32()),
        pa.field("sepsis_explicit", pa.bool_()),
        pa.field("sepsis_angus", pa.bool_()),
        pa.field("angus_infection", pa.bool_()),
        pa.field("angus_organ_dysfunction", pa.bool_()),
        pa.field("angus_mechanical_ventilation", pa.bool_()),
    ],
    metadata={"description": "one row per ICU stay in the sepsis forecasting cohort"},
)

SUMMARY_COLUMNS = ["step", "description", "subjects", "admissions", "icustays"]

_STAYS_QUERY = """
WITH dx AS (
    SELECT hadm_id,
           BOOL_OR(icd9_code = ANY(%(explicit_codes)s)) AS sepsis_explicit,
           BOOL_OR(substr(icd9_code, 1, 3) = ANY(%(infection3)s)
                   OR substr(icd9_code, 1, 4) = ANY(%(infection4)s)
                   OR icd9_code = ANY(%(infection5)s)) AS angus_infection,
           BOOL_OR(icd9_code LIKE ANY(%(organ_patterns)s)) AS angus_organ_dysfunction,
           BOOL_OR(icd9_code = ANY(%(angus_explicit)s)) AS angus_explicit
    FROM {diagnoses}
    GROUP BY hadm_id
), px AS (
    SELECT hadm_id, BOOL_OR(icd9_code = ANY(%(ventilation)s)) AS mechanical_ventilation
    FROM {procedures}
    GROUP BY hadm_id
)
SELECT i.subject_id, i.hadm_id, i.icustay_id, i.dbsource, i.first_careunit,
       i.intime, i.outtime, p.gender,
       (EXTRACT(EPOCH FROM (i.intime - p.dob)) / (365.2425 * 86400.0))::double precision
           AS raw_age_years,
       ROW_NUMBER() OVER (PARTITION BY i.subject_id ORDER BY i.intime, i.icustay_id)
           AS icustay_seq,
       COALESCE(dx.sepsis_explicit, FALSE) AS sepsis_explicit,
       COALESCE(dx.angus_infection, FALSE) AS angus_infection,
       COALESCE(dx.angus_organ_dysfunction, FALSE) AS angus_organ_dysfunction,
       COALESCE(dx.angus_explicit, FALSE) AS angus_explicit,
       COALESCE(px.mechanical_ventilation, FALSE) AS angus_mechanical_ventilation
FROM {icustays} i
JOIN {patients} p ON p.subject_id = i.subject_id
LEFT JOIN dx ON dx.hadm_id = i.hadm_id
LEFT JOIN px ON px.hadm_id = i.hadm_id
ORDER BY i.subject_id, i.intime, i.icustay_id
"""


@dataclass(frozen=True)
class CohortResult:
    table: pa.Table
    summary: pd.DataFrame


def fetch_icu_stays(
    conn: Any, schema: str, explicit_codes: Sequence[str] = mimic.DEFAULT_EXPLICIT_SEPSIS_CODES
) -> pd.DataFrame:
    """All ICU stays with patient facts and admission-level sepsis flags."""
    query = sql.SQL(_STAYS_QUERY).format(
        diagnoses=qualified(schema, "diagnoses_icd"),
        procedures=qualified(schema, "procedures_icd"),
        icustays=qualified(schema, "icustays"),
        patients=qualified(schema, "patients"),
    )
    params = {
        "explicit_codes": list(explicit_codes),
        "infection3": list(mimic.ANGUS_INFECTION_PREFIXES_3),
        "infection4": list(mimic.ANGUS_INFECTION_PREFIXES_4),
        "infection5": list(mimic.ANGUS_INFECTION_CODES_5),
        "organ_patterns": [f"{p}%" for p in mimic.ANGUS_ORGAN_DYSFUNCTION_PREFIXES],
        "angus_explicit": list(mimic.ANGUS_EXPLICIT_CODES),
        "ventilation": list(mimic.MECHANICAL_VENTILATION_PROCEDURES),
    }
    with conn.cursor() as cur:
        cur.execute(query, params)
        columns = [d.name for d in cur.description]
        rows = cur.fetchall()
    conn.rollback()
    return pd.DataFrame.from_records(rows, columns=columns)


def adjust_shifted_ages(raw_age_years: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """MIMIC-III shifts the date of birth of patients older than 89 to 300 years before their
    first admission; such raw ages (~300) become 91.4, their real median age."""
    raw = raw_age_years.to_numpy(dtype=np.float64)
    shifted = raw > mimic.AGE_SHIFT_THRESHOLD_YEARS
    return np.where(shifted, mimic.SHIFTED_AGE_YEARS, raw), shifted


def build_cohort(
    stays: pd.DataFrame, cohort_cfg: Mapping[str, Any], min_stay_hours: float
) -> CohortResult:
    """Apply the inclusion steps in order, counting subjects, admissions and stays after each."""
    steps: list[dict[str, Any]] = []

    def record(step: str, description: str, frame: pd.DataFrame) -> None:
        steps.append(
            {
                "step": step,
                "description": description,
                "subjects": int(frame["subject_id"].nunique()),
                "admissions": int(frame["hadm_id"].nunique()),
                "icustays": len(frame),
            }
        )

    frame = stays.copy()
    frame["sepsis_angus"] = frame["angus_explicit"] | (
        frame["angus_infection"]
        & (frame["angus_organ_dysfunction"] | frame["angus_mechanical_ventilation"])
    )
    record("all_icu_stays", "ICU stays in the database", frame)

    definition = cohort_cfg["definition"]
    flag = "sepsis_explicit" if definition == "explicit" else "sepsis_angus"
    frame = frame[frame[flag]]
    described = (
        "admission coded with ICD-9 " + ", ".join(cohort_cfg["icd9_codes"])
        if definition == "explicit"
        else "admission meets Angus et al. 2001 (infection + organ dysfunction or ventilation)"
    )
    record(f"sepsis_{definition}", described, frame)

    frame = frame[frame["outtime"].notna() & frame["intime"].notna()]
    record("has_times", "ICU stay has intime and outtime", frame)

    ages, shifted = adjust_shifted_ages(frame["raw_age_years"])
    frame = frame.assign(age_years=ages, age_shifted=shifted)
    frame = frame[frame["age_years"] >= cohort_cfg["min_age_years"]]
    record(
        "adult", f"age >= {cohort_cfg['min_age_years']:g} years (ages > 89 shifted to 91.4)", frame
    )

    los_hours = (frame["outtime"] - frame["intime"]).dt.total_seconds() / 3600.0
    frame = frame.assign(los_hours=los_hours)
    frame = frame[frame["los_hours"] >= min_stay_hours]
    record("long_enough", f"ICU stay >= {min_stay_hours:g} h (one context + horizon)", frame)

    if cohort_cfg["first_icu_stay_only"]:
        frame = frame[frame["icustay_seq"] == 1]
        record("first_icu_stay", "the patient's first ICU stay in the database", frame)

    if frame.empty:
        raise DataError(
            f"the cohort is empty: no ICU stay passes every inclusion step ({_steps_text(steps)})",
            "check the cohort settings (cohort.definition, cohort.icd9_codes, "
            "cohort.min_age_years, cohort.first_icu_stay_only) and windows.context_hours/"
            "horizon_hours against your database",
        )
    table = pa.Table.from_pandas(
        frame[[f.name for f in COHORT_SCHEMA]].reset_index(drop=True),
        schema=COHORT_SCHEMA,
        preserve_index=False,
    )
    return CohortResult(table=table, summary=pd.DataFrame(steps, columns=SUMMARY_COLUMNS))


def _steps_text(steps: list[dict[str, Any]]) -> str:
    return "; ".join(f"{s['step']}: {s['icustays']}" for s in steps)
