"""Deterministic synthetic MIMIC-III generator, in batches of patients.

Every batch of :data:`BATCH_PATIENTS` patients draws from its own generator, seeded from
``(seed, batch index)``, and ids/row_ids run on across batches, so the output depends only on
the ``synthetic`` config, never on the sink or on memory. A batch holds all rows of its patients
(administrative tables and chartevents) as pyarrow tables; nothing else is kept between
batches, so memory stays flat however many patients are generated.

Conventions reproduced (see shared/reference/mimic-iii.md §5): dates shifted into 2100-2200
per patient; patients older than 89 have ``dob`` exactly 300 years before their first admission;
ICD-9 codes without dots; per patient one charting system, CareVue (low itemids, ``warning`` and
``error`` NULL, ``resultstatus``/``stopped`` set, temperatures in 'Deg. F'/'Deg. C' with
677/679 "calc" duplicates) or MetaVision (itemids > 220000, ``warning``/``error`` 0/1,
temperatures in '?F'/'?C'); charting every 15-60 min at irregular minutes with multi-hour
gaps, duplicates, typos out of range, text-only rows and ``error = 1`` entries.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitalfm.config import validate_config
from vitalfm.db.ddl import TABLE_COLUMNS
from vitalfm.mimic import CAREVUE, CHART_ITEMS, METAVISION
from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic import vocab
from vitalfm.synthetic.tables import make_table

GENERATOR_VERSION = "1.0"
BATCH_PATIENTS = 100
MAX_GROUP_POINTS = 300_000  # stays x 5-min grid points simulated at once
MAX_GROUP_STAYS = 48

_EPOCH = dt.datetime(1970, 1, 1)
_YEAR_S = 365.2425 * 86400.0
_FIRST_ADMIT_LO = int((dt.datetime(2100, 1, 1) - _EPOCH).total_seconds())
_FIRST_ADMIT_HI = int((dt.datetime(2178, 1, 1) - _EPOCH).total_seconds())
OLD_PATIENT_FRACTION = 0.05


def synthetic_settings(cfg_synthetic: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``synthetic`` config section, validated, with defaults filled in."""
    return validate_config({"synthetic": dict(cfg_synthetic or {})})["synthetic"]


def _seconds(when: dt.datetime) -> int:
    return int((when - _EPOCH).total_seconds())


def _datetime(seconds: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=int(seconds))


def _quota(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    """Boolean mask with floor(n * fraction + u) True entries at random places: the fraction
    holds in expectation and small batches never drift far from it."""
    k = min(n, int(np.floor(n * fraction + rng.random())))
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:k]] = True
    return mask


# --- chart item lookups ---------------------------------------------------------------------

_ITEM = {(i.vital, i.system, i.label): i.itemid for i in CHART_ITEMS}
_UNIT_BY_ITEM: dict[int, str | None] = {i.itemid: i.unit for i in CHART_ITEMS}
_UNIT_BY_ITEM.update(
    {d.itemid: d.unitname for d in vocab.ITEM_DEFS if d.itemid not in _UNIT_BY_ITEM}
)
_UNIT_BY_ITEM[vocab.MV_GCS_EYE] = None
_UNIT_BY_ITEM[vocab.CV_GCS_TOTAL] = "points"
_VITAL_BY_ITEM = {i.itemid: i.vital for i in CHART_ITEMS}
_CHARTED_ITEMIDS = np.array(sorted(_UNIT_BY_ITEM), dtype=np.int64)
_UNITS = pa.array([_UNIT_BY_ITEM[int(i)] for i in _CHARTED_ITEMIDS], pa.string())
_IS_VITAL = np.array([int(i) in _VITAL_BY_ITEM for i in _CHARTED_ITEMIDS])
_TEXTS = (
    *vocab.CV_RHYTHMS,
    *vocab.MV_RHYTHMS,
    *vocab.MV_GCS_EYE_TEXT,
    *vocab.TEXT_ONLY_VALUES,
)
_TEXT_ARRAY = pa.array(_TEXTS, pa.string())
_CV_RHYTHM0 = 0
_MV_RHYTHM0 = len(vocab.CV_RHYTHMS)
_MV_EYE0 = _MV_RHYTHM0 + len(vocab.MV_RHYTHMS)
_TEXT_ONLY0 = _MV_EYE0 + len(vocab.MV_GCS_EYE_TEXT)

# (CareVue itemid, MetaVision itemid) per measurement
HR_ITEMS = (211, 220045)
SPO2_ITEMS = (646, 220277)
RR_ITEMS = (618, 220210)
RR_TOTAL_ITEMS = (615, 224690)
ART_ITEMS = ((51, 8368, 52), (220050, 220051, 220052))
NBP_ITEMS = ((455, 8441, 456), (220179, 220180, 220181))
ART2_CV_ITEMS = (6701, 8555, 6702)
ART_MEAN2_MV = 225312
MANUAL_CV_ITEMS = (442, 8440, 443)
TEMP_F_ITEMS = (678, 223761)
TEMP_C_ITEMS = (676, 223762)

# typos and device junk, all outside mimic-code's plausibility ranges
_JUNK = {
    "heart_rate": (0.0, 350.0, 999.0),
    "sbp": (0.0, 450.0, 1200.0),
    "dbp": (0.0, 320.0, 800.0),
    "mbp": (0.0, 310.0, 900.0),
    "resp_rate": (0.0, 7000400.0, 150.0),
    "spo2": (0.0, 101.0, 960.0),
    "temp_c": (0.0, 0.9, 98.6),
    "temp_f": (0.0, 9.8, 37.2),
}
_JUNK_KEYS = tuple(_JUNK)
_JUNK_TABLE = np.array([_JUNK[k] for k in _JUNK_KEYS])
_JUNK_ROW = np.full(_CHARTED_ITEMIDS.size, -1)
for _n, _itemid in enumerate(_CHARTED_ITEMIDS):
    _v = _VITAL_BY_ITEM.get(int(_itemid))
    if _v == "temperature":
        _v = "temp_f" if int(_itemid) in TEMP_F_ITEMS else "temp_c"
    if _v is not None:
        _JUNK_ROW[_n] = _JUNK_KEYS.index(_v)

# MetaVision alarm limits behind warning = 1 (low, high) per vital
_ALARM = {
    "heart_rate": (50, 120),
    "sbp": (90, 180),
    "dbp": (35, 110),
    "mbp": (60, 130),
    "resp_rate": (8, 30),
    "spo2": (90, 101),
    "temperature": (-1e9, 1e9),
}
_ALARM_LO = np.full(_CHARTED_ITEMIDS.size, -np.inf)
_ALARM_HI = np.full(_CHARTED_ITEMIDS.size, np.inf)
for _n, _itemid in enumerate(_CHARTED_ITEMIDS):
    _v = _VITAL_BY_ITEM.get(int(_itemid))
    if _v is not None:
        _ALARM_LO[_n], _ALARM_HI[_n] = _ALARM[_v]


# --- batch containers -----------------------------------------------------------------------


@dataclass
class StayTruth:
    """The clean latent signals behind one stay's chartevents (for tests and plots).

    Grid point k is at ``grid_start + k * step_min`` minutes; ``values`` rows are HR, SBP, DBP,
    RR, SpO2, temperature (°C); ``profile`` is the deterioration level in [0, 1].
    """

    icustay_id: int
    grid_start: int  # seconds since the epoch
    step_min: int
    values: np.ndarray
    mbp: np.ndarray
    profile: np.ndarray
    septic: bool


@dataclass
class Batch:
    index: int
    tables: dict[str, pa.Table]
    truth: list[StayTruth] = field(default_factory=list)


@dataclass
class _Counters:
    row_id: dict[str, int] = field(default_factory=dict)
    hadm_id: int = 100000
    icustay_id: int = 200000

    def row_ids(self, table: str, n: int) -> np.ndarray:
        start = self.row_id.get(table, 0)
        self.row_id[table] = start + n
        return np.arange(start + 1, start + n + 1, dtype=np.int64)


# --- static tables --------------------------------------------------------------------------


def caregiver_ids(seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(np.arange(14000, 22000), size=400, replace=False))


def static_tables(settings: Mapping[str, Any]) -> dict[str, pa.Table]:
    """Dictionary tables (d_items, d_icd_*) and caregivers: the same for every batch."""
    defs = vocab.ITEM_DEFS
    d_items = make_table(
        "d_items",
        {
            "row_id": np.arange(1, len(defs) + 1),
            "itemid": [d.itemid for d in defs],
            "label": [d.label for d in defs],
            "abbreviation": [d.abbreviation for d in defs],
            "dbsource": [d.dbsource for d in defs],
            "linksto": ["chartevents"] * len(defs),
            "category": [d.category for d in defs],
            "unitname": [d.unitname for d in defs],
            "param_type": [d.param_type for d in defs],
        },
    )

    def icd(name: str, titles: Mapping[str, tuple[str, str]]) -> pa.Table:
        codes = sorted(titles)
        return make_table(
            name,
            {
                "row_id": np.arange(1, len(codes) + 1),
                "icd9_code": codes,
                "short_title": [titles[c][0] for c in codes],
                "long_title": [titles[c][1] for c in codes],
            },
        )

    cgids = caregiver_ids(settings["seed"])
    rng = np.random.default_rng([settings["seed"], 8])
    labels = rng.choice(np.array(vocab.CAREGIVER_LABELS), size=cgids.size)
    return {
        "d_items": d_items,
        "d_icd_diagnoses": icd("d_icd_diagnoses", vocab.DIAGNOSES),
        "d_icd_procedures": icd("d_icd_procedures", vocab.PROCEDURES),
        "caregivers": make_table(
            "caregivers",
            {
                "row_id": np.arange(1, cgids.size + 1),
                "cgid": cgids,
                "label": labels.tolist(),
                "description": labels.tolist(),
            },
        ),
    }


# --- patients, admissions, stays --------------------------------------------------------------


@dataclass
class _Cohort:
    """Administrative rows of one batch plus per-stay facts the chart generator needs."""

    tables: dict[str, pa.Table]
    stays: dict[str, np.ndarray]


@functools.cache
def _cumulative(p: tuple[float, ...]) -> list[float]:
    return list(itertools.accumulate(x / sum(p) for x in p))


def _choice(rng: np.random.Generator, options: tuple[Any, ...], p: tuple[float, ...]) -> Any:
    """One weighted draw (one uniform number; much faster than Generator.choice for scalars)."""
    return options[min(bisect.bisect_right(_cumulative(p), rng.random()), len(options) - 1)]


def _weighted_sample(rng: np.random.Generator, p: tuple[float, ...], k: int) -> np.ndarray:
    """k distinct indices drawn with weights ``p`` (Gumbel top-k)."""
    keys = np.log(np.asarray(p)) - np.log(-np.log(rng.random(len(p))))
    return np.argsort(-keys)[:k]


def _diagnoses_for(rng: np.random.Generator, kind: str) -> list[str]:
    """ICD-9 codes of one admission, principal first.

    kind: "explicit" (infection + 99591/99592/78552), "angus_od" (infection + organ
    dysfunction, no explicit code), "angus_vent" (infection, no organ dysfunction: sepsis by
    Angus only through the ventilation procedure), "none" (no infection: never Angus sepsis).
    """
    codes: list[str] = []
    u = rng.random(2)
    if kind != "none":
        codes.append(_choice(rng, vocab.INFECTION_CODES, vocab.INFECTION_P))
    if kind == "explicit":
        codes.extend(_choice(rng, vocab.EXPLICIT_SETS, vocab.EXPLICIT_SET_P))
    n_od = {"explicit": int(u[0] < 0.6), "angus_od": 1 + int(u[0] < 0.4), "angus_vent": 0}
    od = _weighted_sample(rng, vocab.ORGAN_DYSFUNCTION_P, n_od.get(kind, int(u[1] < 0.2)))
    codes.extend(vocab.ORGAN_DYSFUNCTION_CODES[i] for i in od)
    n_other = int(rng.integers(2, 9)) if kind != "none" else int(rng.integers(3, 11))
    other = rng.permutation(len(vocab.ORDINARY_CODES))[:n_other]
    codes.extend(vocab.ORDINARY_CODES[i] for i in other)
    return codes


def _empty_columns(table: str) -> dict[str, list[Any]]:
    return {c: [] for c in TABLE_COLUMNS[table] if c != "row_id"}


def _cohort(
    rng: np.random.Generator,
    settings: Mapping[str, Any],
    first_subject: int,
    n: int,
    counters: _Counters,
) -> _Cohort:
    low_h, high_h = settings["stay_hours"]
    old = _quota(rng, n, OLD_PATIENT_FRACTION)
    septic_patient = _quota(rng, n, settings["sepsis_fraction"])
    metavision = _quota(rng, n, settings["metavision_fraction"])
    baselines = phys.draw_baselines(rng, n)

    pat, adm, icu = (
        _empty_columns("patients"),
        _empty_columns("admissions"),
        _empty_columns("icustays"),
    )
    dx, px = _empty_columns("diagnoses_icd"), _empty_columns("procedures_icd")
    svc = _empty_columns("services")
    stay: dict[str, list[Any]] = {
        k: [] for k in ("patient", "metavision", "septic", "art", "art2", "vent", "af", "temp_f_p")
    }

    for j in range(n):
        subject_id = first_subject + j
        gender = "M" if rng.random() < 0.56 else "F"
        n_adm = _choice(rng, (1, 2, 3, 4), (0.72, 0.16, 0.08, 0.04))
        septic_adm = np.zeros(n_adm, dtype=bool)
        if septic_patient[j]:
            septic_adm[int(rng.integers(n_adm))] = True
            septic_adm |= rng.random(n_adm) < 0.15
        admit = int(rng.integers(_FIRST_ADMIT_LO, _FIRST_ADMIT_HI))
        first_admit = admit
        dies_in_hospital = rng.random() < (0.22 if septic_adm[-1] else 0.08)
        dies_later = (not dies_in_hospital) and rng.random() < 0.25
        dbsource = METAVISION if metavision[j] else CAREVUE
        insurance = _choice(rng, vocab.INSURANCES, vocab.INSURANCE_P)
        language = _choice(rng, vocab.LANGUAGES, vocab.LANGUAGE_P)
        religion = _choice(rng, vocab.RELIGIONS, vocab.RELIGION_P)
        marital = _choice(rng, vocab.MARITAL, vocab.MARITAL_P)
        ethnicity = _choice(rng, vocab.ETHNICITIES, vocab.ETHNICITY_P)
        deathtime = None
        for a in range(n_adm):
            counters.hadm_id += 1
            hadm_id = counters.hadm_id
            last = a == n_adm - 1
            kind = "none"
            if septic_adm[a]:
                u = rng.random()
                kind = "explicit" if u < 0.78 else ("angus_od" if u < 0.92 else "angus_vent")
            adm_type = _choice(rng, vocab.ADMISSION_TYPES, vocab.ADMISSION_TYPE_P)
            if kind != "none":
                adm_type = "EMERGENCY"
            n_icu = _choice(rng, (1, 2, 3), (0.85, 0.12, 0.03))
            careunit = _choice(rng, vocab.CAREUNITS, vocab.CAREUNIT_P)
            if kind != "none" and careunit == "CSRU":
                careunit = "MICU"
            vent_adm = kind == "angus_vent" or rng.random() < (0.5 if kind != "none" else 0.3)
            art_p = 0.9 if careunit == "CSRU" else (0.6 if kind != "none" else 0.35)
            intime = admit + int(rng.uniform(0.5, 30.0) * 3600)
            stays_out: list[int] = []
            any_art = False
            icu_hours = 0.0
            for k in range(n_icu):
                counters.icustay_id += 1
                hours = float(np.exp(rng.uniform(np.log(low_h), np.log(high_h))))
                outtime = intime + int(hours * 3600)
                unit_here = careunit if k == 0 else _choice(rng, vocab.CAREUNITS, vocab.CAREUNIT_P)
                last_unit = (
                    unit_here
                    if rng.random() < 0.9
                    else _choice(rng, vocab.CAREUNITS, vocab.CAREUNIT_P)
                )
                wards = vocab.WARDIDS
                art = rng.random() < art_p
                any_art |= art
                icu["subject_id"].append(subject_id)
                icu["hadm_id"].append(hadm_id)
                icu["icustay_id"].append(counters.icustay_id)
                icu["dbsource"].append(dbsource)
                icu["first_careunit"].append(unit_here)
                icu["last_careunit"].append(last_unit)
                icu["first_wardid"].append(_choice(rng, wards[unit_here], (1, 1)))
                icu["last_wardid"].append(_choice(rng, wards[last_unit], (1, 1)))
                icu["intime"].append(intime)
                icu["outtime"].append(outtime)
                icu["los"].append(round((outtime - intime) / 86400.0, 4))
                stay["patient"].append(j)
                stay["metavision"].append(bool(metavision[j]))
                # sepsis is present on the first ICU stay of a septic admission, maybe later too
                stay["septic"].append(kind != "none" and (k == 0 or rng.random() < 0.5))
                stay["art"].append(art)
                stay["art2"].append(art and rng.random() < 0.12)
                stay["vent"].append(vent_adm and (k == 0 or rng.random() < 0.5))
                stay["af"].append(rng.random() < 0.1)
                stay["temp_f_p"].append(0.9 if rng.random() < 0.8 else 0.15)
                stays_out.append(outtime)
                icu_hours += hours
                intime = outtime + int(rng.uniform(6.0, 96.0) * 3600)
            died_here = dies_in_hospital and last
            if died_here:
                dischtime = stays_out[-1] + int(rng.uniform(0.0, 2.0) * 3600)
                deathtime = dischtime
            else:
                dischtime = stays_out[-1] + int(rng.uniform(1.0, 12.0) * 86400)
            emergency = adm_type == "EMERGENCY"
            adm["subject_id"].append(subject_id)
            adm["hadm_id"].append(hadm_id)
            adm["admittime"].append(admit)
            adm["dischtime"].append(dischtime)
            adm["deathtime"].append(deathtime if died_here else None)
            adm["admission_type"].append(adm_type)
            adm["admission_location"].append(
                vocab.ADMISSION_LOCATIONS[0]
                if emergency
                else _choice(rng, vocab.ADMISSION_LOCATIONS[1:], (0.4, 0.4, 0.2))
            )
            adm["discharge_location"].append(
                vocab.DEAD
                if died_here
                else _choice(rng, vocab.DISCHARGE_LOCATIONS, (0.4, 0.25, 0.2, 0.15))
            )
            adm["insurance"].append(insurance)
            adm["language"].append(language)
            adm["religion"].append(religion)
            adm["marital_status"].append(marital)
            adm["ethnicity"].append(ethnicity)
            adm["edregtime"].append(
                admit - int(rng.uniform(1.0, 8.0) * 3600) if emergency else None
            )
            adm["edouttime"].append(
                admit + int(rng.uniform(0.0, 2.0) * 3600) if emergency else None
            )
            adm["diagnosis"].append(
                _choice(rng, vocab.SEPSIS_ADMIT_DIAGNOSES, (0.4, 0.25, 0.15, 0.1, 0.1))
                if kind != "none"
                else _choice(rng, vocab.OTHER_ADMIT_DIAGNOSES, (0.2, 0.2, 0.15, 0.15, 0.15, 0.15))
            )
            adm["hospital_expire_flag"].append(int(died_here))
            adm["has_chartevents_data"].append(1)
            for seq, code in enumerate(_diagnoses_for(rng, kind), start=1):
                dx["subject_id"].append(subject_id)
                dx["hadm_id"].append(hadm_id)
                dx["seq_num"].append(seq)
                dx["icd9_code"].append(code)
            procs: list[str] = []
            if vent_adm:
                procs += ["9604", "9672" if icu_hours >= 96 else "9671"]
            if any_art:
                procs.append("3891")
            extra = rng.permutation(len(vocab.OTHER_PROCEDURES))[: int(rng.integers(0, 4))]
            procs += [vocab.OTHER_PROCEDURES[int(i)] for i in extra]
            for seq, code in enumerate(procs, start=1):
                px["subject_id"].append(subject_id)
                px["hadm_id"].append(hadm_id)
                px["seq_num"].append(seq)
                px["icd9_code"].append(code)
            svc["subject_id"].append(subject_id)
            svc["hadm_id"].append(hadm_id)
            svc["transfertime"].append(admit)
            svc["prev_service"].append(None)
            svc["curr_service"].append(vocab.SERVICES[careunit])
            admit = dischtime + int(rng.uniform(30.0, 1200.0) * 86400)

        # patient row: dob from the age at first admission
        first = _datetime(first_admit)
        if old[j]:
            day = min(first.day, 28) if (first.month, first.day) == (2, 29) else first.day
            dob = _seconds(dt.datetime(first.year - 300, first.month, day))
        else:
            age = 18.0 + 71.5 * rng.beta(2.6, 1.6)
            birth = _datetime(first_admit - int(age * _YEAR_S))
            dob = _seconds(dt.datetime(birth.year, birth.month, birth.day))
        dod = dod_hosp = dod_ssn = None
        if deathtime is not None:
            d = _datetime(deathtime)
            dod = dod_hosp = _seconds(dt.datetime(d.year, d.month, d.day))
            dod_ssn = dod if rng.random() < 0.7 else None
        elif dies_later:
            d = _datetime(adm["dischtime"][-1] + int(rng.uniform(1.0, 1000.0) * 86400))
            dod = dod_ssn = _seconds(dt.datetime(d.year, d.month, d.day))
        pat["subject_id"].append(subject_id)
        pat["gender"].append(gender)
        pat["dob"].append(dob)
        pat["dod"].append(dod)
        pat["dod_hosp"].append(dod_hosp)
        pat["dod_ssn"].append(dod_ssn)
        pat["expire_flag"].append(int(dod is not None))

    def ts(values: list[Any]) -> pa.Array:
        return pa.array([None if v is None else v for v in values], pa.int64()).cast(
            pa.timestamp("s")
        )

    def with_row_ids(name: str, cols: dict[str, list[Any]], ts_cols: tuple[str, ...]) -> pa.Table:
        n_rows = len(next(iter(cols.values())))
        out: dict[str, Any] = {"row_id": counters.row_ids(name, n_rows)}
        for key, values in cols.items():
            out[key] = ts(values) if key in ts_cols else values
        return make_table(name, out)

    tables = {
        "patients": with_row_ids("patients", pat, ("dob", "dod", "dod_hosp", "dod_ssn")),
        "admissions": with_row_ids(
            "admissions", adm, ("admittime", "dischtime", "deathtime", "edregtime", "edouttime")
        ),
        "icustays": with_row_ids("icustays", icu, ("intime", "outtime")),
        "diagnoses_icd": with_row_ids("diagnoses_icd", dx, ()),
        "procedures_icd": with_row_ids("procedures_icd", px, ()),
        "services": with_row_ids("services", svc, ("transfertime",)),
    }
    stays = {k: np.asarray(v) for k, v in stay.items()}
    stays.update(
        {
            k: np.asarray(icu[k], dtype=np.int64)
            for k in ("subject_id", "hadm_id", "icustay_id", "intime", "outtime")
        }
    )
    stays["baseline"] = baselines[stays["patient"]] + phys.BASELINE_SD * 0.3 * rng.standard_normal(
        (stays["patient"].size, phys.N_SIGNALS)
    )
    return _Cohort(tables=tables, stays=stays)


# --- chartevents ----------------------------------------------------------------------------


def _schedule(
    rng: np.random.Generator,
    length: np.ndarray,
    base_min: np.ndarray,
    intervals: np.ndarray,
    first: np.ndarray,
    snap_p: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Event times (stay index, minutes after the stay's first whole minute) from per-stay
    interval draws (S, M); a fraction ``snap_p`` is moved to the nearest full hour."""
    times = first[:, None] + np.concatenate(
        [np.zeros((length.size, 1)), np.cumsum(intervals, axis=1)[:, :-1]], axis=1
    )
    times = np.rint(times).astype(np.int64)
    snap = rng.random(times.shape) < snap_p
    absolute = base_min[:, None] + times
    snapped = (absolute + 30) // 60 * 60 - base_min[:, None]
    times = np.where(snap, snapped, times)
    keep = (times >= 0) & (times <= length[:, None])
    stay_idx = np.broadcast_to(np.arange(length.size)[:, None], times.shape)[keep]
    return stay_idx, times[keep]


def _unique_events(stay_idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(stay_idx.astype(np.int64) << 32 | t)
    return (key >> 32).astype(np.int64), key & 0xFFFFFFFF


def _drop_gaps(
    stay_idx: np.ndarray, t: np.ndarray, gap_start: np.ndarray, gap_end: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    inside = ((t[:, None] >= gap_start[stay_idx]) & (t[:, None] < gap_end[stay_idx])).any(axis=1)
    return stay_idx[~inside], t[~inside]


@dataclass
class _Rows:
    """Chart rows under construction (parallel arrays)."""

    stay: list[np.ndarray] = field(default_factory=list)
    t: list[np.ndarray] = field(default_factory=list)
    itemid: list[np.ndarray] = field(default_factory=list)
    valuenum: list[np.ndarray] = field(default_factory=list)
    text: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        stay: np.ndarray,
        t: np.ndarray,
        itemid: np.ndarray | int,
        valuenum: np.ndarray,
        text: np.ndarray | None = None,
    ) -> None:
        n = stay.size
        self.stay.append(stay)
        self.t.append(t)
        self.itemid.append(np.broadcast_to(np.asarray(itemid, dtype=np.int64), (n,)))
        self.valuenum.append(np.asarray(valuenum, dtype=np.float64))
        self.text.append(np.full(n, -1, dtype=np.int64) if text is None else text)

    def extend(self, other: _Rows) -> None:
        for name in ("stay", "t", "itemid", "valuenum", "text"):
            getattr(self, name).extend(getattr(other, name))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "stay": np.concatenate(self.stay),
            "t": np.concatenate(self.t),
            "itemid": np.concatenate(self.itemid),
            "valuenum": np.concatenate(self.valuenum),
            "text": np.concatenate(self.text),
        }


def _pick(mv: np.ndarray, items: tuple[int, int]) -> np.ndarray:
    return np.where(mv, items[1], items[0])


def _chart_group(
    rng: np.random.Generator,
    st: dict[str, np.ndarray],
    lat: phys.Latent,
    base_min: np.ndarray,
    length: np.ndarray,
) -> _Rows:
    """Chart rows for one group of stays (indices local to the group)."""
    s = length.size
    max_len = int(length.max())
    mv = st["metavision"]

    # charting rounds: mostly hourly, some 15-40 min, some 1.5-2.5 h, at irregular minutes
    m = max_len // 15 + 2
    u = rng.random((s, m))
    iv = np.where(
        u < 0.75,
        60.0 + 6.0 * rng.standard_normal((s, m)),
        np.where(u < 0.9, rng.uniform(15.0, 40.0, (s, m)), rng.uniform(90.0, 150.0, (s, m))),
    )
    iv = np.maximum(iv, 10.0)
    r_stay, r_t = _schedule(rng, length, base_min, iv, rng.uniform(0.0, 20.0, s), 0.5)
    # extra readings every ~15 min while a patient deteriorates
    grid15 = np.arange(0, max_len + 1, 15)[None, :] + rng.integers(0, 15, (s, 1))
    in_stay = grid15 <= length[:, None]
    prof = lat.profile[
        np.arange(s)[:, None], np.minimum(grid15 // phys.STEP_MIN, lat.profile.shape[1] - 1)
    ]
    extra = in_stay & (prof > 0.35) & (rng.random(grid15.shape) < 0.6)
    e_stay = np.broadcast_to(np.arange(s)[:, None], grid15.shape)[extra]
    ev_stay, ev_t = _unique_events(
        np.concatenate([r_stay, e_stay]), np.concatenate([r_t, grid15[extra]])
    )
    # multi-hour gaps (monitor off, patient off the unit): none in stays under a day
    n_gaps = np.where(length > 24 * 60, rng.choice(4, size=s, p=[0.45, 0.3, 0.17, 0.08]), 0)
    gap_start = rng.uniform(0.1, 0.9, (s, 3)) * length[:, None]
    gap_end = gap_start + rng.uniform(120.0, 360.0, (s, 3))
    gap_start = np.where(np.arange(3)[None, :] < n_gaps[:, None], gap_start, np.inf)
    ev_stay, ev_t = _drop_gaps(ev_stay, ev_t, gap_start, gap_end)

    # nurse assessments (temperature, GCS, rhythm): every 1-4 h
    m2 = max_len // 60 + 2
    a_stay, a_t = _schedule(
        rng, length, base_min, rng.uniform(60.0, 240.0, (s, m2)), rng.uniform(0.0, 90.0, s), 0.7
    )
    a_stay, a_t = _unique_events(a_stay, a_t)
    a_stay, a_t = _drop_gaps(a_stay, a_t, gap_start, gap_end)

    def latent(stay: np.ndarray, t: np.ndarray, signal: int) -> np.ndarray:
        return lat.values[stay, signal, t // phys.STEP_MIN]

    rows = _Rows()
    n_ev = ev_stay.size
    ev_mv = mv[ev_stay]

    def measured(mask: np.ndarray, signal: int, sd: float, lo: float, hi: float) -> np.ndarray:
        x = latent(ev_stay[mask], ev_t[mask], signal) + sd * rng.standard_normal(int(mask.sum()))
        return np.clip(np.rint(x), lo, hi) + 0.0

    hr = rng.random(n_ev) < 0.98
    rows.add(ev_stay[hr], ev_t[hr], _pick(ev_mv[hr], HR_ITEMS), measured(hr, phys.HR, 2.0, 20, 250))
    sp = rng.random(n_ev) < 0.93
    rows.add(
        ev_stay[sp], ev_t[sp], _pick(ev_mv[sp], SPO2_ITEMS), measured(sp, phys.SPO2, 0.8, 50, 100)
    )
    rr = rng.random(n_ev) < 0.92
    rows.add(ev_stay[rr], ev_t[rr], _pick(ev_mv[rr], RR_ITEMS), measured(rr, phys.RR, 1.5, 4, 60))
    rt = st["vent"][ev_stay] & (rng.random(n_ev) < 0.6)
    rows.add(
        ev_stay[rt], ev_t[rt], _pick(ev_mv[rt], RR_TOTAL_ITEMS), measured(rt, phys.RR, 1.5, 4, 60)
    )

    def bp_triple(
        mask: np.ndarray, items: np.ndarray, arterial: bool, only_mean: bool = False
    ) -> None:
        stay, t = ev_stay[mask], ev_t[mask]
        k = stay.size
        sbp, dbp = latent(stay, t, phys.SBP), latent(stay, t, phys.DBP)
        if arterial:  # a catheter reads a wider pulse pressure than the cuff
            sbp = sbp + 4.0 + 3.0 * rng.standard_normal(k)
            dbp = dbp - 2.0 + 2.5 * rng.standard_normal(k)
        else:
            sbp = sbp + 5.0 * rng.standard_normal(k)
            dbp = dbp + 4.0 * rng.standard_normal(k)
        sbp = np.rint(np.clip(sbp, 40, 260))
        dbp = np.rint(np.clip(np.minimum(dbp, sbp - 10), 15, 180))
        mbp = np.rint(dbp + (sbp - dbp) / 3.0 + (1.0 if arterial else 1.5) * rng.standard_normal(k))
        present = None if only_mean else rng.random((3, k)) < np.array([[0.98], [0.98], [0.99]])
        for c, values in enumerate((sbp, dbp, mbp)):
            if only_mean and c < 2:
                continue
            keep = np.ones(k, dtype=bool) if present is None else present[c]
            rows.add(stay[keep], t[keep], items[c][keep], values[keep] + 0.0)

    art_stay = st["art"][ev_stay]
    art = art_stay & (rng.random(n_ev) < 0.93)
    art_items = np.where(
        ev_mv[None, :], np.array(ART_ITEMS[1])[:, None], np.array(ART_ITEMS[0])[:, None]
    )
    bp_triple(art, art_items[:, art], arterial=True)
    nbp = rng.random(n_ev) < np.where(art_stay, 0.2, 0.92)
    nbp_items = np.where(
        ev_mv[None, :], np.array(NBP_ITEMS[1])[:, None], np.array(NBP_ITEMS[0])[:, None]
    )
    bp_triple(nbp, nbp_items[:, nbp], arterial=False)
    art2 = st["art2"][ev_stay] & (rng.random(n_ev) < 0.5)
    art2_cv = art2 & ~ev_mv
    bp_triple(art2_cv, np.repeat(np.array(ART2_CV_ITEMS)[:, None], art2_cv.sum(), 1), True)
    art2_mv = art2 & ev_mv
    bp_triple(art2_mv, np.full((3, int(art2_mv.sum())), ART_MEAN2_MV), True, only_mean=True)
    manual = ~ev_mv & (rng.random(n_ev) < 0.02)
    bp_triple(manual, np.repeat(np.array(MANUAL_CV_ITEMS)[:, None], manual.sum(), 1), False)

    # temperature (+ CareVue's converted "calc" copy at the same time)
    n_a = a_stay.size
    a_mv = mv[a_stay]
    temp_c = lat.values[a_stay, phys.TEMP, a_t // phys.STEP_MIN] + 0.15 * rng.standard_normal(n_a)
    in_f = rng.random(n_a) < st["temp_f_p"][a_stay]
    t_f = np.round(temp_c * 1.8 + 32.0, 1) + 0.0
    t_c = np.round(temp_c, 1) + 0.0
    rows.add(a_stay[in_f], a_t[in_f], _pick(a_mv[in_f], TEMP_F_ITEMS), t_f[in_f])
    rows.add(a_stay[~in_f], a_t[~in_f], _pick(a_mv[~in_f], TEMP_C_ITEMS), t_c[~in_f])
    cv_f, cv_c = in_f & ~a_mv, ~in_f & ~a_mv
    rows.add(a_stay[cv_f], a_t[cv_f], vocab.CV_TEMP_C_CALC, np.round((t_f[cv_f] - 32) / 1.8, 6))
    rows.add(a_stay[cv_c], a_t[cv_c], vocab.CV_TEMP_F_CALC, np.round(t_c[cv_c] * 1.8 + 32, 6))

    # GCS: CareVue total (3-15), MetaVision eye opening (text with valuenum 1-4)
    gcs = rng.random(n_a) < 0.6
    g_stay, g_t, g_mv = a_stay[gcs], a_t[gcs], a_mv[gcs]
    p = lat.profile[g_stay, g_t // phys.STEP_MIN]
    sedated = st["vent"][g_stay]
    total = np.clip(
        np.rint(15 - 5 * p - 5 * sedated + 0.8 * rng.standard_normal(g_stay.size)), 3, 15
    )
    eye = np.clip(np.rint(4 - 2 * p - 1.5 * sedated + 0.5 * rng.standard_normal(g_stay.size)), 1, 4)
    rows.add(g_stay[~g_mv], g_t[~g_mv], vocab.CV_GCS_TOTAL, total[~g_mv] + 0.0)
    rows.add(
        g_stay[g_mv],
        g_t[g_mv],
        vocab.MV_GCS_EYE,
        eye[g_mv] + 0.0,
        _MV_EYE0 + eye[g_mv].astype(np.int64) - 1,
    )

    # heart rhythm: text only, valuenum NULL
    rh = rng.random(n_a) < 0.7
    h_stay, h_t, h_mv = a_stay[rh], a_t[rh], a_mv[rh]
    h = lat.values[h_stay, phys.HR, h_t // phys.STEP_MIN]
    kind = np.where(st["af"][h_stay], 3, np.where(h > 100, 1, np.where(h < 60, 2, 0)))
    rows.add(
        h_stay,
        h_t,
        _pick(h_mv, (vocab.CV_HEART_RHYTHM, vocab.MV_HEART_RHYTHM)),
        np.full(h_stay.size, np.nan),
        np.where(h_mv, _MV_RHYTHM0, _CV_RHYTHM0) + kind,
    )
    return rows


def _finish_chartevents(
    rng: np.random.Generator,
    r: dict[str, np.ndarray],
    st: dict[str, np.ndarray],
    base_min: np.ndarray,
    stay_cgids: np.ndarray,
    cgid_pool: np.ndarray,
    counters: _Counters,
) -> pa.Table:
    """Artefacts (text-only, out of range, duplicates, error rows), then the table's columns."""
    n = r["itemid"].size
    item_idx = np.searchsorted(_CHARTED_ITEMIDS, r["itemid"])
    vital = _IS_VITAL[item_idx]
    mv = st["metavision"][r["stay"]]
    valuenum, text = r["valuenum"].copy(), r["text"].copy()

    u = rng.random(n)
    to_text = vital & (u < 0.003)
    text[to_text] = _TEXT_ONLY0 + rng.integers(0, len(vocab.TEXT_ONLY_VALUES), int(to_text.sum()))
    valuenum[to_text] = np.nan
    junk = vital & (u >= 0.003) & (u < 0.005)
    valuenum[junk] = _JUNK_TABLE[_JUNK_ROW[item_idx[junk]], rng.integers(0, 3, int(junk.sum()))]

    # the same item charted twice at one time, with a slightly different value
    clean = vital & (text < 0) & ~junk
    dup = clean & (rng.random(n) < 0.012)
    is_temp = np.isin(r["itemid"], TEMP_F_ITEMS + TEMP_C_ITEMS)
    delta = np.where(is_temp, 0.1, 1.0) * rng.choice([-2.0, -1.0, 1.0, 2.0], size=n)
    dup_val = np.round(valuenum + delta, 1) + 0.0
    # MetaVision entries flagged as erroneous (error = 1), with odd values
    err = clean & mv & (rng.random(n) < 0.004)
    odd = np.round(valuenum * rng.choice([0.3, 0.5, 2.5], size=n), 1) + 0.0

    def extra(mask: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        return {"src": np.flatnonzero(mask), "valuenum": values[mask]}

    extras = [extra(dup, dup_val), extra(err, odd)]
    src = np.concatenate([np.arange(n)] + [e["src"] for e in extras])
    valuenum = np.concatenate([valuenum] + [e["valuenum"] for e in extras])
    error_flag = np.concatenate(
        [np.zeros(n + extras[0]["src"].size, np.int64), np.ones(extras[1]["src"].size, np.int64)]
    )
    copied = np.arange(src.size) >= n
    stay, t, itemid = r["stay"][src], r["t"][src], r["itemid"][src]
    text, item_idx, mv = text[src], item_idx[src], mv[src]

    order = np.lexsort((error_flag, itemid, t, stay))
    stay, t, itemid, valuenum, text = (
        stay[order],
        t[order],
        itemid[order],
        valuenum[order],
        text[order],
    )
    item_idx, mv, error_flag, copied = item_idx[order], mv[order], error_flag[order], copied[order]
    m = stay.size

    charttime = (base_min[stay] + t) * 60
    delay = np.where(
        mv,
        np.rint(rng.lognormal(np.log(240.0), 0.8, m)),  # seconds: monitor values validated soon
        np.rint(rng.uniform(2.0, 60.0, m)) * 60,  # CareVue: charted later, whole minutes
    ).astype(np.int64)
    storetime = charttime + np.maximum(delay, 30)
    cgid = np.where(
        copied, cgid_pool[rng.integers(0, cgid_pool.size, m)], stay_cgids[stay, (t // 720) % 4]
    )
    num_text = pc.cast(pa.array(valuenum, mask=np.isnan(valuenum)), pa.string())
    text_arr = pc.take(_TEXT_ARRAY, pa.array(text, mask=text < 0))
    value = pc.coalesce(text_arr, num_text)
    warning = ((valuenum < _ALARM_LO[item_idx]) | (valuenum > _ALARM_HI[item_idx])).astype(np.int64)
    cv = ~mv
    cv_mask = pa.array(cv)
    return make_table(
        "chartevents",
        {
            "row_id": counters.row_ids("chartevents", m),
            "subject_id": st["subject_id"][stay],
            "hadm_id": st["hadm_id"][stay],
            "icustay_id": st["icustay_id"][stay],
            "itemid": itemid,
            "charttime": charttime,
            "storetime": storetime,
            "cgid": cgid,
            "value": value,
            "valuenum": valuenum,
            "valueuom": pc.take(_UNITS, pa.array(item_idx)),
            "warning": pa.array(warning, pa.int32(), mask=cv),
            "error": pa.array(error_flag, pa.int32(), mask=cv),
            "resultstatus": pc.if_else(cv_mask, "Manual", pa.scalar(None, pa.string())),
            "stopped": pc.if_else(cv_mask, "NotStopd", pa.scalar(None, pa.string())),
        },
    )


def _chartevents(
    rng: np.random.Generator,
    stays: dict[str, np.ndarray],
    cgid_pool: np.ndarray,
    counters: _Counters,
    with_truth: bool,
) -> tuple[pa.Table, list[StayTruth]]:
    n = stays["icustay_id"].size
    base_min = -(-stays["intime"] // 60)  # first whole minute of the stay
    length = stays["outtime"] // 60 - base_min
    stay_cgids = cgid_pool[rng.integers(0, cgid_pool.size, (n, 4))]
    # Simulate stays of similar length together (little padding), in groups small enough to
    # keep the (stays x grid points) arrays bounded.
    by_length = np.argsort(length, kind="stable")
    groups, start = [], 0
    while start < n:
        stop = start + 1
        while stop < n and stop - start < MAX_GROUP_STAYS:
            if (stop - start + 1) * (int(length[by_length[stop]]) // phys.STEP_MIN + 1) > (
                MAX_GROUP_POINTS
            ):
                break
            stop += 1
        groups.append(by_length[start:stop])
        start = stop
    rows = _Rows()
    truth: list[StayTruth] = []
    for idx in groups:
        st = {k: v[idx] for k, v in stays.items()}
        tod = (base_min[idx] % 1440).astype(np.float64)
        lat = phys.simulate(rng, st["baseline"], length[idx], tod, st["septic"])
        group_rows = _chart_group(rng, st, lat, base_min[idx], length[idx])
        group_rows.stay = [idx[a] for a in group_rows.stay]  # back to batch stay indices
        rows.extend(group_rows)
        if with_truth:
            for i, stay in enumerate(idx):
                k = int(lat.n_steps[i])
                truth.append(
                    StayTruth(
                        icustay_id=int(stays["icustay_id"][stay]),
                        grid_start=int(base_min[stay] * 60),
                        step_min=phys.STEP_MIN,
                        values=lat.values[i, :, :k].copy(),
                        mbp=lat.mbp[i, :k].copy(),
                        profile=lat.profile[i, :k].copy(),
                        septic=bool(stays["septic"][stay]),
                    )
                )
    truth.sort(key=lambda t: t.icustay_id)
    table = _finish_chartevents(
        rng, rows.arrays(), stays, base_min, stay_cgids, cgid_pool, counters
    )
    return table, truth


# --- public iteration -------------------------------------------------------------------------


def n_batches(settings: Mapping[str, Any]) -> int:
    return -(-int(settings["n_patients"]) // BATCH_PATIENTS)


def iter_batches(
    cfg_synthetic: Mapping[str, Any] | None, *, with_truth: bool = False
) -> Iterator[Batch]:
    """All rows of the synthetic database, batch by batch.

    Batch 0 starts with the static tables (d_items, d_icd_diagnoses, d_icd_procedures,
    caregivers). ``with_truth`` attaches each stay's latent signals (tests, plots).
    """
    settings = synthetic_settings(cfg_synthetic)
    seed, n_total = int(settings["seed"]), int(settings["n_patients"])
    counters = _Counters()
    cgid_pool = caregiver_ids(seed)
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, n_total - first)
        cohort = _cohort(rng, settings, first + 1, n, counters)
        charts, truth = _chartevents(rng, cohort.stays, cgid_pool, counters, with_truth)
        tables = dict(static_tables(settings)) if b == 0 else {}
        tables.update(cohort.tables)
        tables["chartevents"] = charts
        yield Batch(index=b, tables=tables, truth=truth)
