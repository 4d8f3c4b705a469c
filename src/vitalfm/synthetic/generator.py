"""Deterministic synthetic MIMIC-III generator, in batches of patients.

Every batch of :data:`BATCH_PATIENTS` patients draws from its own generator, seeded from
``(seed, batch index)``, and ids/row_ids run on across batches, so the output depends only on
the ``synthetic`` config, never on the sink or on memory. A batch holds all rows of its patients
(administrative tables and chartevents) as pyarrow tables; nothing else is kept between
batches, so memory stays flat however many patients are generated.

Conventions of MIMIC-III v1.4 reproduced (its documentation on mimic.mit.edu): dates shifted into
2100-2200
per patient; patients older than 89 have ``dob`` exactly 300 years before their first admission;
ICD-9 codes without dots; per patient one charting system, CareVue (low itemids, ``warning`` and
``error`` NULL, ``resultstatus``/``stopped`` set, temperatures in 'Deg. F'/'Deg. C' with
677/679 "calc" duplicates) or MetaVision (itemids > 220000, ``warning``/``error`` 0/1,
temperatures in '?F'/'?C'); charting every 15-60 min at irregular minutes with multi-hour
gaps, duplicates, typos out of range, text-only rows and ``error = 1`` entries.

The vital signs are readings of a latent Markov physiology (:mod:`vitalfm.synthetic.physiology`,
simulated per group of stays from its own random stream) through the measurement and charting
model below (noise, rounding, arterial vs cuff pressure, degF/degC, denser charting while a
patient is unstable). :mod:`vitalfm.synthetic.oracle` reuses both, so the oracle forecaster
predicts exactly what this module generates. Version 2.0: the Markov physiology (1.x drew
episode times at admission).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitalfm.config import validate_config
from vitalfm.db.ddl import TABLE_COLUMNS
from vitalfm.errors import DataError
from vitalfm.mimic import CAREVUE, CHART_ITEMS, METAVISION
from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic import vocab
from vitalfm.synthetic.tables import make_table

GENERATOR_VERSION = "2.0"
BATCH_PATIENTS = 100
# Stays of similar length are simulated together, one 5-minute step at a time for the whole
# group: few large groups keep the per-step overhead low, the bound keeps memory flat.
MAX_GROUP_POINTS = 250_000  # stays x 5-min grid points simulated at once
MAX_GROUP_STAYS = 256

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


# --- measurement and charting model (shared with vitalfm.synthetic.oracle) -------------------


@dataclass(frozen=True)
class ReadingSpec:
    """A monitor reading: ``clip(rint(latent + sd * z), low, high)``."""

    sd: float
    low: float
    high: float


HR_READING = ReadingSpec(2.0, 20.0, 250.0)
SPO2_READING = ReadingSpec(0.8, 50.0, 100.0)
RR_READING = ReadingSpec(1.5, 4.0, 60.0)
TEMP_SD = 0.15
# what a charting round contains
P_HR, P_SPO2, P_RR, P_RR_TOTAL = 0.98, 0.93, 0.92, 0.6  # RR total: ventilated stays only
P_ART = 0.93  # stays with an arterial line
P_NBP, P_NBP_WITH_ART = 0.92, 0.2
P_ART2 = 0.5  # stays with a second arterial line
P_MANUAL = 0.02  # CareVue only
P_BP_ITEM = (0.98, 0.98, 0.99)  # systolic, diastolic, mean of a triple
# artefacts on vital rows: text-only, out-of-range junk, duplicates, MetaVision error copies
P_TEXT_ONLY, P_JUNK, P_DUPLICATE, P_ERROR_COPY = 0.003, 0.002, 0.012, 0.004
DUPLICATE_STEPS = (-2.0, -1.0, 1.0, 2.0)  # x 0.1 for temperatures
# charting times: rounds, extra readings while the patient is unstable, nurse assessments
ROUND_FIRST_MAX_MIN, ROUND_SNAP_P = 20.0, 0.5
EXTRA_EVERY_MIN, P_EXTRA = 15, 0.6
ASSESSMENT_INTERVAL_MIN, ASSESSMENT_FIRST_MAX_MIN, ASSESSMENT_SNAP_P = (60.0, 240.0), 90.0, 0.7


def reading(latent: np.ndarray, z: np.ndarray, spec: ReadingSpec) -> np.ndarray:
    return np.clip(np.rint(latent + spec.sd * z), spec.low, spec.high) + 0.0


def bp_readings(
    sbp: np.ndarray, dbp: np.ndarray, z: np.ndarray, arterial: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One charted (systolic, diastolic, mean) triple from the latent and normals ``z`` (3, k).
    A catheter reads a wider pulse pressure than the cuff; the mean is the monitor's own."""
    if arterial:
        sbp = sbp + 4.0 + 3.0 * z[0]
        dbp = dbp - 2.0 + 2.5 * z[1]
    else:
        sbp = sbp + 5.0 * z[0]
        dbp = dbp + 4.0 * z[1]
    sbp = np.rint(np.clip(sbp, 40, 260))
    dbp = np.rint(np.clip(np.minimum(dbp, sbp - 10), 15, 180))
    mbp = np.rint(dbp + (sbp - dbp) / 3.0 + (1.0 if arterial else 1.5) * z[2])
    return sbp, dbp, mbp


def temperature_readings(temp_c: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A charted temperature in degF and in degC (one decimal) from the latent (degC)."""
    c = temp_c + TEMP_SD * z
    return np.round(c * 1.8 + 32.0, 1) + 0.0, np.round(c, 1) + 0.0


def round_intervals(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Minutes between charting rounds: mostly hourly, some 15-40 min, some 1.5-2.5 h."""
    u = rng.random(shape)
    iv = np.where(
        u < 0.75,
        60.0 + 6.0 * rng.standard_normal(shape),
        np.where(u < 0.9, rng.uniform(15.0, 40.0, shape), rng.uniform(90.0, 150.0, shape)),
    )
    return np.maximum(iv, 10.0)


# --- batch containers -----------------------------------------------------------------------


@dataclass
class StayTruth:
    """The clean latent signals behind one stay's chartevents, and the Markov state behind them.

    Grid point k is at ``grid_start + k * step_min`` seconds/minutes (``grid_start`` is the
    stay's first whole minute, in epoch seconds); a chart row at minute ``m`` of the stay (its
    charttime is ``grid_start + 60 m``) reads grid point ``m // step_min``. ``values`` rows are
    HR, SBP, DBP, RR, SpO2 (%), temperature (degC); ``profile`` is the deterioration level;
    ``alert`` marks denser charting. ``params``/``states`` are the stay's
    :class:`~vitalfm.synthetic.physiology.Params` (leading axis 1) and state at every grid point
    (leading axis time): ``physiology.simulate`` from ``state_at(k)`` continues the stay. The
    remaining fields are the charting facts the measurement model needs.
    """

    icustay_id: int
    grid_start: int  # seconds since the epoch
    step_min: int
    values: np.ndarray
    mbp: np.ndarray
    profile: np.ndarray
    septic: bool
    alert: np.ndarray
    params: phys.Params
    states: phys.State
    metavision: bool
    arterial_line: bool
    second_arterial_line: bool
    ventilated: bool
    fahrenheit_p: float

    def state_at(self, k: int) -> phys.State:
        """The state at grid point ``k`` (leading axis 1, ready for ``physiology.simulate``)."""
        return self.states.map(lambda a: a[k : k + 1])


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
    obs: phys.Observation,
    base_min: np.ndarray,
    length: np.ndarray,
) -> _Rows:
    """Chart rows for one group of stays (indices local to the group); ``obs`` fields are
    (grid points, stays)."""
    s = length.size
    max_len = int(length.max())
    mv = st["metavision"]
    last = obs.values.shape[0] - 1

    # charting rounds: mostly hourly, some 15-40 min, some 1.5-2.5 h, at irregular minutes
    iv = round_intervals(rng, (s, max_len // 15 + 2))
    first = rng.uniform(0.0, ROUND_FIRST_MAX_MIN, s)
    r_stay, r_t = _schedule(rng, length, base_min, iv, first, ROUND_SNAP_P)
    # extra readings every ~15 min while a patient is unstable (physiology's alert)
    grid15 = np.arange(0, max_len + 1, EXTRA_EVERY_MIN)[None, :] + rng.integers(
        0, EXTRA_EVERY_MIN, (s, 1)
    )
    in_stay = grid15 <= length[:, None]
    alert = obs.alert[np.minimum(grid15 // phys.STEP_MIN, last), np.arange(s)[:, None]]
    extra = in_stay & alert & (rng.random(grid15.shape) < P_EXTRA)
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
    a_iv = rng.uniform(*ASSESSMENT_INTERVAL_MIN, (s, max_len // 60 + 2))
    a_first = rng.uniform(0.0, ASSESSMENT_FIRST_MAX_MIN, s)
    a_stay, a_t = _schedule(rng, length, base_min, a_iv, a_first, ASSESSMENT_SNAP_P)
    a_stay, a_t = _unique_events(a_stay, a_t)
    a_stay, a_t = _drop_gaps(a_stay, a_t, gap_start, gap_end)

    def latent(stay: np.ndarray, t: np.ndarray, signal: int) -> np.ndarray:
        return obs.values[t // phys.STEP_MIN, stay, signal]

    rows = _Rows()
    n_ev = ev_stay.size
    ev_mv = mv[ev_stay]

    def measured(mask: np.ndarray, signal: int, spec: ReadingSpec) -> np.ndarray:
        z = rng.standard_normal(int(mask.sum()))
        return reading(latent(ev_stay[mask], ev_t[mask], signal), z, spec)

    hr = rng.random(n_ev) < P_HR
    rows.add(ev_stay[hr], ev_t[hr], _pick(ev_mv[hr], HR_ITEMS), measured(hr, phys.HR, HR_READING))
    sp = rng.random(n_ev) < P_SPO2
    rows.add(
        ev_stay[sp], ev_t[sp], _pick(ev_mv[sp], SPO2_ITEMS), measured(sp, phys.SPO2, SPO2_READING)
    )
    rr = rng.random(n_ev) < P_RR
    rows.add(ev_stay[rr], ev_t[rr], _pick(ev_mv[rr], RR_ITEMS), measured(rr, phys.RR, RR_READING))
    rt = st["vent"][ev_stay] & (rng.random(n_ev) < P_RR_TOTAL)
    rows.add(
        ev_stay[rt], ev_t[rt], _pick(ev_mv[rt], RR_TOTAL_ITEMS), measured(rt, phys.RR, RR_READING)
    )

    def bp_triple(
        mask: np.ndarray, items: np.ndarray, arterial: bool, only_mean: bool = False
    ) -> None:
        stay, t = ev_stay[mask], ev_t[mask]
        k = stay.size
        z = rng.standard_normal((3, k))
        triple = bp_readings(latent(stay, t, phys.SBP), latent(stay, t, phys.DBP), z, arterial)
        present = None if only_mean else rng.random((3, k)) < np.array(P_BP_ITEM)[:, None]
        for c, values in enumerate(triple):
            if only_mean and c < 2:
                continue
            keep = np.ones(k, dtype=bool) if present is None else present[c]
            rows.add(stay[keep], t[keep], items[c][keep], values[keep] + 0.0)

    art_stay = st["art"][ev_stay]
    art = art_stay & (rng.random(n_ev) < P_ART)
    art_items = np.where(
        ev_mv[None, :], np.array(ART_ITEMS[1])[:, None], np.array(ART_ITEMS[0])[:, None]
    )
    bp_triple(art, art_items[:, art], arterial=True)
    nbp = rng.random(n_ev) < np.where(art_stay, P_NBP_WITH_ART, P_NBP)
    nbp_items = np.where(
        ev_mv[None, :], np.array(NBP_ITEMS[1])[:, None], np.array(NBP_ITEMS[0])[:, None]
    )
    bp_triple(nbp, nbp_items[:, nbp], arterial=False)
    art2 = st["art2"][ev_stay] & (rng.random(n_ev) < P_ART2)
    art2_cv = art2 & ~ev_mv
    bp_triple(art2_cv, np.repeat(np.array(ART2_CV_ITEMS)[:, None], art2_cv.sum(), 1), True)
    art2_mv = art2 & ev_mv
    bp_triple(art2_mv, np.full((3, int(art2_mv.sum())), ART_MEAN2_MV), True, only_mean=True)
    manual = ~ev_mv & (rng.random(n_ev) < P_MANUAL)
    bp_triple(manual, np.repeat(np.array(MANUAL_CV_ITEMS)[:, None], manual.sum(), 1), False)

    # temperature (+ CareVue's converted "calc" copy at the same time)
    n_a = a_stay.size
    a_mv = mv[a_stay]
    t_f, t_c = temperature_readings(
        obs.values[a_t // phys.STEP_MIN, a_stay, phys.TEMP], rng.standard_normal(n_a)
    )
    in_f = rng.random(n_a) < st["temp_f_p"][a_stay]
    rows.add(a_stay[in_f], a_t[in_f], _pick(a_mv[in_f], TEMP_F_ITEMS), t_f[in_f])
    rows.add(a_stay[~in_f], a_t[~in_f], _pick(a_mv[~in_f], TEMP_C_ITEMS), t_c[~in_f])
    cv_f, cv_c = in_f & ~a_mv, ~in_f & ~a_mv
    rows.add(a_stay[cv_f], a_t[cv_f], vocab.CV_TEMP_C_CALC, np.round((t_f[cv_f] - 32) / 1.8, 6))
    rows.add(a_stay[cv_c], a_t[cv_c], vocab.CV_TEMP_F_CALC, np.round(t_c[cv_c] * 1.8 + 32, 6))

    # GCS: CareVue total (3-15), MetaVision eye opening (text with valuenum 1-4)
    gcs = rng.random(n_a) < 0.6
    g_stay, g_t, g_mv = a_stay[gcs], a_t[gcs], a_mv[gcs]
    p = obs.level[g_t // phys.STEP_MIN, g_stay]
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
    h = obs.values[h_t // phys.STEP_MIN, h_stay, phys.HR]
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
    to_text = vital & (u < P_TEXT_ONLY)
    text[to_text] = _TEXT_ONLY0 + rng.integers(0, len(vocab.TEXT_ONLY_VALUES), int(to_text.sum()))
    valuenum[to_text] = np.nan
    junk = vital & (u >= P_TEXT_ONLY) & (u < P_TEXT_ONLY + P_JUNK)
    valuenum[junk] = _JUNK_TABLE[_JUNK_ROW[item_idx[junk]], rng.integers(0, 3, int(junk.sum()))]

    # the same item charted twice at one time, with a slightly different value
    clean = vital & (text < 0) & ~junk
    dup = clean & (rng.random(n) < P_DUPLICATE)
    is_temp = np.isin(r["itemid"], TEMP_F_ITEMS + TEMP_C_ITEMS)
    delta = np.where(is_temp, 0.1, 1.0) * rng.choice(DUPLICATE_STEPS, size=n)
    dup_val = np.round(valuenum + delta, 1) + 0.0
    # MetaVision entries flagged as erroneous (error = 1), with odd values
    err = clean & mv & (rng.random(n) < P_ERROR_COPY)
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


def _stay_minutes(stays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each stay's first whole minute (epoch minutes: the latent grid starts there) and its
    length in minutes after it."""
    base_min = -(-stays["intime"] // 60)
    return base_min, stays["outtime"] // 60 - base_min


def _groups(length: np.ndarray) -> list[np.ndarray]:
    """Stays of similar length together (little padding), groups bounded in stays x points."""
    n = length.size
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
    return groups


@dataclass
class _Latent:
    """The latent trajectories of one batch's stays, group by group (None: not simulated)."""

    base_min: np.ndarray
    length: np.ndarray
    groups: list[np.ndarray]
    trajectories: list[phys.Trajectory | None]


def _latent(
    seed: int,
    batch: int,
    stays: Mapping[str, np.ndarray],
    *,
    keep_states: bool,
    wanted: np.ndarray | None = None,
) -> _Latent:
    """Simulate each group from its own random stream, seeded by (seed, batch, group), so that
    a group can be simulated alone (the oracle regenerates only the stays it needs) and the
    charting draws never shift the physiology."""
    base_min, length = _stay_minutes(stays)
    groups = _groups(length)
    trajectories: list[phys.Trajectory | None] = []
    for g, idx in enumerate(groups):
        if wanted is not None and not wanted[idx].any():
            trajectories.append(None)
            continue
        params, start, z, u = _group_draws(seed, batch, g, stays, idx, base_min, length)
        trajectories.append(phys.simulate(params, start, z, u, keep_states=keep_states))
    return _Latent(base_min, length, groups, trajectories)


def _group_draws(
    seed: int,
    batch: int,
    group: int,
    stays: Mapping[str, np.ndarray],
    idx: np.ndarray,
    base_min: np.ndarray,
    length: np.ndarray,
) -> tuple[phys.Params, phys.State, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 2, batch, group])
    n_points = int(length[idx].max()) // phys.STEP_MIN + 1
    tod = (base_min[idx] % 1440).astype(np.float64)
    return phys.draw_group(rng, stays["baseline"][idx], n_points, tod, stays["septic"][idx])


def stay_innovations(
    cfg_synthetic: Mapping[str, Any] | None, icustay_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The innovations the generator drew for one stay's transitions: normals (T - 1,
    N_NORMALS) and uniforms (T - 1, N_UNIFORMS), T its grid points. With them,
    ``physiology.simulate`` from ``StayTruth.state_at(k)`` replays the stay exactly
    (``z[k:]``, ``u[k:]``)."""
    settings = synthetic_settings(cfg_synthetic)
    seed = int(settings["seed"])
    counters = _Counters()
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, int(settings["n_patients"]) - first)
        stays = _cohort(rng, settings, first + 1, n, counters).stays
        hit = np.flatnonzero(stays["icustay_id"] == icustay_id)
        if hit.size == 0:
            continue
        base_min, length = _stay_minutes(stays)
        for g, idx in enumerate(_groups(length)):
            i = np.flatnonzero(idx == hit[0])
            if i.size:
                _, _, z, u = _group_draws(seed, b, g, stays, idx, base_min, length)
                k = int(length[hit[0]]) // phys.STEP_MIN
                return z[:k, i[0]], u[:k, i[0]]
    raise DataError(
        f"ICU stay {icustay_id} is not in the synthetic database of this config",
        "pass an icustay_id of the database generated from this `synthetic` section",
    )


def _truths(
    stays: Mapping[str, np.ndarray], lat: _Latent, wanted: np.ndarray | None = None
) -> list[StayTruth]:
    truth: list[StayTruth] = []
    for idx, tr in zip(lat.groups, lat.trajectories, strict=True):
        if tr is None:
            continue
        for i, stay in enumerate(idx):
            if wanted is not None and not wanted[stay]:
                continue
            k = int(lat.length[stay]) // phys.STEP_MIN + 1
            truth.append(
                StayTruth(
                    icustay_id=int(stays["icustay_id"][stay]),
                    grid_start=int(lat.base_min[stay] * 60),
                    step_min=phys.STEP_MIN,
                    values=tr.obs.values[:k, i, :].T.copy(),
                    mbp=tr.obs.mbp[:k, i].copy(),
                    profile=tr.obs.level[:k, i].copy(),
                    septic=bool(stays["septic"][stay]),
                    alert=tr.obs.alert[:k, i].copy(),
                    params=tr.params.take(np.array([i])),
                    states=tr.states.map(lambda a, i=i, k=k: a[:k, i].copy()),
                    metavision=bool(stays["metavision"][stay]),
                    arterial_line=bool(stays["art"][stay]),
                    second_arterial_line=bool(stays["art2"][stay]),
                    ventilated=bool(stays["vent"][stay]),
                    fahrenheit_p=float(stays["temp_f_p"][stay]),
                )
            )
    truth.sort(key=lambda t: t.icustay_id)
    return truth


def _chartevents(
    rng: np.random.Generator,
    stays: dict[str, np.ndarray],
    lat: _Latent,
    cgid_pool: np.ndarray,
    counters: _Counters,
) -> pa.Table:
    n = stays["icustay_id"].size
    stay_cgids = cgid_pool[rng.integers(0, cgid_pool.size, (n, 4))]
    rows = _Rows()
    for idx, tr in zip(lat.groups, lat.trajectories, strict=True):
        assert tr is not None
        st = {k: v[idx] for k, v in stays.items()}
        group_rows = _chart_group(rng, st, tr.obs, lat.base_min[idx], lat.length[idx])
        group_rows.stay = [idx[a] for a in group_rows.stay]  # back to batch stay indices
        rows.extend(group_rows)
    return _finish_chartevents(
        rng, rows.arrays(), stays, lat.base_min, stay_cgids, cgid_pool, counters
    )


# --- public iteration -------------------------------------------------------------------------


def n_batches(settings: Mapping[str, Any]) -> int:
    return -(-int(settings["n_patients"]) // BATCH_PATIENTS)


def iter_batches(
    cfg_synthetic: Mapping[str, Any] | None, *, with_truth: bool = False
) -> Iterator[Batch]:
    """All rows of the synthetic database, batch by batch.

    Batch 0 starts with the static tables (d_items, d_icd_diagnoses, d_icd_procedures,
    caregivers). ``with_truth`` attaches each stay's latent signals and states (tests, plots,
    the oracle).
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
        lat = _latent(seed, b, cohort.stays, keep_states=with_truth)
        charts = _chartevents(rng, cohort.stays, lat, cgid_pool, counters)
        tables = dict(static_tables(settings)) if b == 0 else {}
        tables.update(cohort.tables)
        tables["chartevents"] = charts
        truth = _truths(cohort.stays, lat) if with_truth else []
        yield Batch(index=b, tables=tables, truth=truth)


def iter_truth(
    cfg_synthetic: Mapping[str, Any] | None, icustay_ids: Iterable[int] | None = None
) -> Iterator[StayTruth]:
    """The :class:`StayTruth` of the given ICU stays (all if None), in icustay_id order within
    each batch, without generating chartevents: the same truth ``iter_batches(...,
    with_truth=True)`` attaches, at a fraction of the cost (groups without a wanted stay are
    not simulated)."""
    settings = synthetic_settings(cfg_synthetic)
    seed, n_total = int(settings["seed"]), int(settings["n_patients"])
    ids = None if icustay_ids is None else np.unique(np.asarray(list(icustay_ids), np.int64))
    counters = _Counters()
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, n_total - first)
        cohort = _cohort(rng, settings, first + 1, n, counters)
        stay_ids = cohort.stays["icustay_id"]
        wanted = None if ids is None else np.isin(stay_ids, ids)
        if wanted is not None and not wanted.any():
            continue
        lat = _latent(seed, b, cohort.stays, keep_states=True, wanted=wanted)
        yield from _truths(cohort.stays, lat, wanted)
