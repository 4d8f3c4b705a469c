"""The administrative tables of one batch of patients: patients, admissions, icustays,
diagnoses_icd, procedures_icd and services, and the per-stay facts the chart rows and the
latent physiology need (charting system, sepsis, arterial lines, ventilation, ...).

MIMIC-III conventions: dates shifted into 2100-2200 per patient; patients older than 89 have
``dob`` exactly 300 years before their first admission; ICD-9 codes without dots; one charting
system (CareVue or MetaVision) per patient. Ids and row_ids run on across batches
(:class:`IdCounters`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vitalfm.db.ddl import TABLE_COLUMNS
from vitalfm.mimic import CAREVUE, METAVISION
from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic import vocab
from vitalfm.synthetic.physiology_state import N_SIGNALS
from vitalfm.synthetic.tables import make_table

_EPOCH = dt.datetime(1970, 1, 1)
_YEAR_S = 365.2425 * 86400.0
_FIRST_ADMIT_LO = int((dt.datetime(2100, 1, 1) - _EPOCH).total_seconds())
_FIRST_ADMIT_HI = int((dt.datetime(2178, 1, 1) - _EPOCH).total_seconds())
OLD_PATIENT_FRACTION = 0.05


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


@dataclass
class IdCounters:
    """The last hadm_id and icustay_id given, and each table's last row_id: ids run on
    across batches."""

    row_id: dict[str, int] = field(default_factory=dict)
    hadm_id: int = 100000
    icustay_id: int = 200000

    def row_ids(self, table: str, n: int) -> np.ndarray:
        """The next ``n`` row_ids of ``table``."""
        start = self.row_id.get(table, 0)
        self.row_id[table] = start + n
        return np.arange(start + 1, start + n + 1, dtype=np.int64)


@dataclass
class Cohort:
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


def draw_cohort(
    rng: np.random.Generator,
    settings: Mapping[str, Any],
    first_subject: int,
    n: int,
    counters: IdCounters,
) -> Cohort:
    """The administrative rows of patients ``first_subject .. first_subject + n - 1`` and the
    facts of their ICU stays (``Cohort.stays``: one array per fact, one entry per stay)."""
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
        (stays["patient"].size, N_SIGNALS)
    )
    return Cohort(tables=tables, stays=stays)
