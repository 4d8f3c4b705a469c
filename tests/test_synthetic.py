"""The synthetic MIMIC-III: determinism, MIMIC conventions, realism, physiology, loading."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from vitalfm.db.ddl import TABLE_COLUMNS
from vitalfm.errors import DataError
from vitalfm.mimic import (
    ANGUS_EXPLICIT_CODES,
    ANGUS_INFECTION_CODES_5,
    ANGUS_INFECTION_PREFIXES_3,
    ANGUS_INFECTION_PREFIXES_4,
    ANGUS_ORGAN_DYSFUNCTION_PREFIXES,
    CHART_ITEM_BY_ID,
    DEFAULT_EXPLICIT_SEPSIS_CODES,
    MECHANICAL_VENTILATION_PROCEDURES,
)
from vitalfm.synthetic import (
    BATCH_PATIENTS,
    MANIFEST,
    iter_batches,
    load_csv_dir,
    load_direct,
    read_manifest,
    table_row_counts,
    write_csv_dir,
)
from vitalfm.synthetic import sinks as sinks_module
from vitalfm.synthetic.physiology_state import SPO2, STEP_MIN, TEMP
from vitalfm.synthetic.treatments import (
    ANTIPYRETIC_INTERVAL_MIN,
    HYPOTENSION_DELAY_MIN,
    MAP_RECOVERED,
    PRESSOR_START,
)
from vitalfm.testing import drop_schema, shared_server, unique_schema

CFG = {"seed": 5, "n_patients": 150}  # two batches: ids must run on across them


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Any:
    return shared_server(request)


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    batches = list(iter_batches(CFG, with_truth=True))
    tables = {
        name: pa.concat_tables([b.tables[name] for b in batches if name in b.tables]).to_pandas()
        for name in batches[0].tables
    }
    truth = {t.icustay_id: t for b in batches for t in b.truth}
    return {"tables": tables, "truth": truth, "n_batches": len(batches)}


@pytest.fixture(scope="module")
def ce(generated: dict[str, Any]) -> pd.DataFrame:
    ce = generated["tables"]["chartevents"]
    stays = generated["tables"]["icustays"][["icustay_id", "dbsource"]]
    return ce.merge(stays, on="icustay_id", how="left", validate="many_to_one")


def _file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


# --- determinism and files ----------------------------------------------------------------


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path: Path) -> None:
    cfg = {"seed": 3, "n_patients": 12}
    m1 = write_csv_dir(cfg, tmp_path / "a")
    write_csv_dir(cfg, tmp_path / "b")
    write_csv_dir({**cfg, "seed": 4}, tmp_path / "c")
    a, b, c = (_file_hashes(tmp_path / x) for x in "abc")
    assert a == b
    assert a["CHARTEVENTS.csv.gz"] != c["CHARTEVENTS.csv.gz"]
    assert a["PATIENTS.csv.gz"] != c["PATIENTS.csv.gz"]
    for table, entry in m1["tables"].items():
        assert a[entry["file"]] == entry["sha256"], table


def test_csv_layout_is_physionet_mimic_iii(tmp_path: Path) -> None:
    manifest = write_csv_dir({"seed": 3, "n_patients": 12}, tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == sorted([f"{t.upper()}.csv.gz" for t in TABLE_COLUMNS] + [MANIFEST])
    assert read_manifest(tmp_path / "m") == json.loads(json.dumps(manifest))
    assert manifest["seed"] == 3 and manifest["generator_version"]
    assert manifest["tables"]["chartevents"]["rows"] > 1000
    assert manifest["tables"]["labevents"]["rows"] == 0
    with gzip.open(tmp_path / "m" / "CHARTEVENTS.csv.gz", "rt") as f:
        header, first = f.readline(), f.readline()
    assert header == ",".join(c.upper() for c in TABLE_COLUMNS["chartevents"]) + "\n"
    fields = first.rstrip("\n").split(",")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields[5])
    with gzip.open(tmp_path / "m" / "PATIENTS.csv.gz", "rt") as f:
        rows = f.read().splitlines()[1:]
    assert any(",," in r for r in rows)  # NULL: empty, unquoted
    with gzip.open(tmp_path / "m" / "LABEVENTS.csv.gz", "rt") as f:
        assert f.read() == ",".join(c.upper() for c in TABLE_COLUMNS["labevents"]) + "\n"


def test_interrupted_write_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(settings: Any) -> Any:
        yield from []
        raise RuntimeError("disk full")

    monkeypatch.setattr(sinks_module, "_serialised", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_csv_dir({"n_patients": 5}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_output_and_removes_stale_partial_dirs(tmp_path: Path) -> None:
    stale = tmp_path / ".out.999999999.deadbeef.part"  # a killed run's leftovers
    stale.mkdir()
    write_csv_dir({"n_patients": 3}, tmp_path / "out")
    write_csv_dir({"n_patients": 4}, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert read_manifest(tmp_path / "out")["tables"]["patients"]["rows"] == 4
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synthetic"):
        write_csv_dir({"n_patients": 3}, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").exists()


def test_batches_bound_memory(generated: dict[str, Any]) -> None:
    assert generated["n_batches"] == -(-CFG["n_patients"] // BATCH_PATIENTS) > 1
    ids = generated["tables"]["chartevents"]["row_id"]
    assert ids.is_monotonic_increasing and ids.iloc[0] == 1 and ids.is_unique


# --- MIMIC conventions ----------------------------------------------------------------------


def test_ids_and_times_are_consistent(generated: dict[str, Any], ce: pd.DataFrame) -> None:
    t = generated["tables"]
    pats, adm, icu = t["patients"], t["admissions"], t["icustays"]
    assert pats.subject_id.is_unique and adm.hadm_id.is_unique and icu.icustay_id.is_unique
    assert set(adm.subject_id) == set(pats.subject_id)
    stays = icu.merge(adm, on=["subject_id", "hadm_id"], validate="many_to_one")
    assert (stays.intime >= stays.admittime).all() and (stays.outtime <= stays.dischtime).all()
    assert (stays.outtime > stays.intime).all()
    np.testing.assert_allclose(
        icu.los, (icu.outtime - icu.intime).dt.total_seconds() / 86400, atol=1e-4
    )
    rows = ce.merge(icu[["icustay_id", "subject_id", "hadm_id", "intime", "outtime"]],
                    on="icustay_id", suffixes=("", "_icu"))  # fmt: skip
    assert (rows.subject_id == rows.subject_id_icu).all() and (
        rows.hadm_id == rows.hadm_id_icu
    ).all()
    assert ((rows.charttime >= rows.intime) & (rows.charttime <= rows.outtime)).all()
    assert (ce.storetime >= ce.charttime).all()
    assert (ce.charttime.dt.second == 0).all()


def test_dates_are_shifted_into_2100_2200(generated: dict[str, Any], ce: pd.DataFrame) -> None:
    t = generated["tables"]
    for frame, cols in (
        (t["admissions"], ("admittime", "dischtime", "deathtime", "edregtime")),
        (t["icustays"], ("intime", "outtime")),
        (t["patients"], ("dod",)),
        (ce, ("charttime", "storetime")),
    ):
        for col in cols:
            years = frame[col].dropna().dt.year
            assert years.between(2100, 2199).all(), col


def test_patients_over_89_have_dob_300_years_before_first_admission(
    generated: dict[str, Any],
) -> None:
    t = generated["tables"]
    first = t["admissions"].groupby("subject_id").admittime.min().rename("first")
    p = t["patients"].join(first, on="subject_id")
    age = p["first"].dt.year - p.dob.dt.year
    old = p[age > 89]
    assert 0.02 <= len(old) / len(p) <= 0.1
    assert (old["first"].dt.year - old.dob.dt.year == 300).all()
    assert (old["first"].dt.month == old.dob.dt.month).all()
    assert (old["first"].dt.day == old.dob.dt.day).all()
    assert age[age <= 89].between(17, 90).all()
    assert (p.dob.dt.hour == 0).all()


def test_several_admissions_per_patient_and_stays_per_admission(
    generated: dict[str, Any],
) -> None:
    t = generated["tables"]
    assert (t["admissions"].groupby("subject_id").size() >= 2).sum() >= 5
    assert (t["icustays"].groupby("hadm_id").size() >= 2).sum() >= 5


def _angus(dx: pd.DataFrame, px: pd.DataFrame) -> pd.Series:
    code = dx.icd9_code
    infection = (
        code.str[:3].isin(ANGUS_INFECTION_PREFIXES_3)
        | code.str[:4].isin(ANGUS_INFECTION_PREFIXES_4)
        | code.isin(ANGUS_INFECTION_CODES_5)
    )
    organ = pd.Series(False, index=dx.index)
    for prefix in ANGUS_ORGAN_DYSFUNCTION_PREFIXES:
        organ |= code.str.startswith(prefix)
    flags = pd.DataFrame(
        {"hadm_id": dx.hadm_id, "inf": infection, "org": organ,
         "exp": code.isin(ANGUS_EXPLICIT_CODES)}
    ).groupby("hadm_id").any()  # fmt: skip
    vent = set(px.hadm_id[px.icd9_code.isin(MECHANICAL_VENTILATION_PROCEDURES)])
    flags["vent"] = flags.index.isin(vent)
    return flags.exp | (flags.inf & (flags.org | flags.vent))


def test_sepsis_explicit_angus_only_and_non_sepsis_admissions(generated: dict[str, Any]) -> None:
    t = generated["tables"]
    dx, px = t["diagnoses_icd"], t["procedures_icd"]
    explicit = set(dx.hadm_id[dx.icd9_code.isin(DEFAULT_EXPLICIT_SEPSIS_CODES)])
    angus = _angus(dx, px)
    angus_only = set(angus.index[angus]) - explicit
    all_adm = set(t["admissions"].hadm_id)
    assert len(explicit) >= 10 and len(all_adm - explicit - angus_only) >= 10
    assert len(angus_only) >= 3
    by_vent_only = _angus(dx[~dx.icd9_code.str.startswith(ANGUS_ORGAN_DYSFUNCTION_PREFIXES)], px)
    assert (by_vent_only[list(angus_only)]).any()  # some are sepsis only through ventilation
    for code in DEFAULT_EXPLICIT_SEPSIS_CODES:
        assert (dx.icd9_code == code).any(), code
    assert set(dx.icd9_code) <= set(t["d_icd_diagnoses"].icd9_code)
    assert set(px.icd9_code) <= set(t["d_icd_procedures"].icd9_code)
    for frame in (dx, px, t["d_icd_diagnoses"]):
        assert not frame.icd9_code.str.contains(".", regex=False).any()
    assert dx.icd9_code.str.startswith("V").any()


def test_both_charting_systems_use_only_their_own_items(
    generated: dict[str, Any], ce: pd.DataFrame
) -> None:
    d_items = generated["tables"]["d_items"].set_index("itemid")
    assert set(ce.dbsource) == {"carevue", "metavision"}
    assert ce.itemid.between(1, 999999).all()
    assert set(ce.itemid) <= set(d_items.index)
    item_source = ce.itemid.map(d_items.dbsource)
    assert (item_source == ce.dbsource).all()
    assert (ce.itemid[ce.dbsource == "metavision"] > 220000).all()
    assert (ce.itemid[ce.dbsource == "carevue"] < 220000).all()
    assert set(CHART_ITEM_BY_ID) <= set(d_items.index)
    assert {677, 679} <= set(ce.itemid)
    assert (d_items.linksto == "chartevents").all()


def test_system_specific_columns(ce: pd.DataFrame) -> None:
    cv, mv = ce[ce.dbsource == "carevue"], ce[ce.dbsource == "metavision"]
    assert cv.warning.isna().all() and cv.error.isna().all()
    assert (cv.resultstatus == "Manual").all() and cv.stopped.notna().all()
    assert mv.resultstatus.isna().all() and mv.stopped.isna().all()
    assert mv.error.isin([0, 1]).all() and mv.warning.isin([0, 1]).all()
    assert (ce.error == 1).sum() >= 5
    assert set(ce.dbsource[ce.error == 1]) == {"metavision"}


def test_temperature_units_and_calc_duplicates(ce: pd.DataFrame) -> None:
    units = ce.groupby("itemid").valueuom.unique()
    assert list(units[678]) == ["Deg. F"] and list(units[676]) == ["Deg. C"]
    assert list(units[223761]) == ["?F"] and list(units[223762]) == ["?C"]
    for itemid in (678, 676, 223761, 223762, 677, 679):
        assert (ce.itemid == itemid).sum() > 10, itemid
    f = ce[(ce.itemid == 678) & ce.valuenum.between(70, 120)]
    calc = ce[ce.itemid == 677]
    both = f.merge(calc, on=["icustay_id", "charttime"], suffixes=("_f", "_c"))
    assert len(both) >= 0.9 * len(f)
    # a duplicated °F entry (±0.2) may sit beside the calc copy of the other entry
    np.testing.assert_allclose(both.valuenum_c, (both.valuenum_f - 32) / 1.8, atol=0.12)
    # roughly every 1-4 hours
    temp = ce[ce.itemid.isin([676, 678, 223761, 223762])].sort_values(["icustay_id", "charttime"])
    gaps = temp.groupby("icustay_id").charttime.diff().dt.total_seconds().dropna() / 3600
    assert 1.0 <= gaps.median() <= 4.0


def test_artefacts_out_of_range_text_only_and_duplicates(ce: pd.DataFrame) -> None:
    vital = ce[ce.itemid.isin(list(CHART_ITEM_BY_ID))]
    numeric = vital[vital.valuenum.notna()]
    out = numeric[
        [
            not CHART_ITEM_BY_ID[i].in_range(v)
            for i, v in zip(numeric.itemid, numeric.valuenum, strict=True)
        ]
    ]
    assert len(out) >= 20
    assert set(out.itemid.map(lambda i: CHART_ITEM_BY_ID[i].vital)) >= {
        "heart_rate", "resp_rate", "spo2", "temperature",
    }  # fmt: skip
    assert (out.valuenum == 0).any()
    assert (numeric.valuenum[numeric.itemid.isin([646, 220277])] > 100).any()
    text_only = vital[vital.valuenum.isna()]
    assert len(text_only) >= 10 and text_only.value.notna().all()
    assert (ce.value == "Unable to assess").any()
    # value is the text of valuenum
    num = ce[ce.valuenum.notna() & ~ce.itemid.isin([220739])]
    np.testing.assert_array_equal(num.value.astype(float), num.valuenum)
    dup = vital.duplicated(["icustay_id", "itemid", "charttime"], keep=False)
    assert dup.sum() >= 20
    times = ce.groupby(["icustay_id", "charttime"]).itemid.agg(set)
    art_and_nbp = times.map(lambda s: bool(s & {51, 220050}) and bool(s & {455, 220179}))
    assert art_and_nbp.sum() >= 10


def test_irregular_charting_with_gaps(ce: pd.DataFrame) -> None:
    hr = ce[ce.itemid.isin([211, 220045])].drop_duplicates(["icustay_id", "charttime"])
    hr = hr.sort_values(["icustay_id", "charttime"])
    gaps = hr.groupby("icustay_id").charttime.diff().dt.total_seconds().dropna() / 60
    assert 40 <= gaps.median() <= 65
    assert (gaps <= 30).mean() > 0.05
    assert (gaps >= 120).sum() >= 10  # multi-hour gaps
    assert (hr.charttime.dt.minute != 0).mean() > 0.2  # not all on the hour


# --- physiology ---------------------------------------------------------------------------


def _clean(ce: pd.DataFrame) -> pd.DataFrame:
    ok = ce.valuenum.notna() & (ce.error.isna() | (ce.error == 0))
    in_range = [
        CHART_ITEM_BY_ID[i].in_range(v) if i in CHART_ITEM_BY_ID else True
        for i, v in zip(ce.itemid, ce.valuenum.fillna(-1), strict=True)
    ]
    return ce[ok & np.array(in_range)]


def test_map_is_close_to_dbp_plus_a_third_of_pulse_pressure(ce: pd.DataFrame) -> None:
    clean = _clean(ce).drop_duplicates(["icustay_id", "charttime", "itemid"])
    for sbp, dbp, mbp in ((455, 8441, 456), (220179, 220180, 220181), (51, 8368, 52),
                          (220050, 220051, 220052)):  # fmt: skip
        wide = (
            clean[clean.itemid.isin([sbp, dbp, mbp])]
            .pivot_table(index=["icustay_id", "charttime"], columns="itemid", values="valuenum")
            .dropna()
        )
        assert len(wide) > 50
        err = (wide[mbp] - (wide[dbp] + (wide[sbp] - wide[dbp]) / 3)).abs()
        assert err.median() < 5, (sbp, err.median())
        assert (wide[sbp] > wide[dbp]).mean() > 0.99


def test_sepsis_episodes_raise_hr_and_lower_map(
    generated: dict[str, Any], ce: pd.DataFrame
) -> None:
    truth = generated["truth"]
    clean = _clean(ce)
    clean = clean[clean.itemid.isin([211, 220045, 456, 220181, 52, 220052])].copy()
    level = []
    for stay, chart in zip(clean.icustay_id, clean.charttime, strict=True):
        t = truth[stay]
        k = (chart.value // 10**9 - t.grid_start) // 60 // t.step_min
        level.append(t.profile[min(k, t.profile.size - 1)])
    clean["level"] = level
    septic_stays = [s for s, t in truth.items() if t.septic]
    assert len(septic_stays) >= 20
    assert not any(t.profile.any() for t in truth.values() if not t.septic)
    s = clean[clean.icustay_id.isin(septic_stays)]
    hr = s[s.itemid.isin([211, 220045])]
    mbp = s[~s.itemid.isin([211, 220045])]
    assert hr.valuenum[hr.level > 0.5].mean() > hr.valuenum[hr.level == 0].mean() + 15
    assert mbp.valuenum[mbp.level > 0.5].mean() < mbp.valuenum[mbp.level == 0].mean() - 10
    # and recovery: the last hours of the stays after an episode look like baseline again
    values = np.stack([t.values[:, -1] for t in truth.values() if t.septic and t.profile[-1] == 0])
    assert abs(values[:, 0].mean() - 86) < 12


def test_latent_signals_have_a_circadian_rhythm(generated: dict[str, Any]) -> None:
    """HR averaged by clock hour over long non-septic stays peaks in the afternoon."""
    sums, counts = np.zeros(24), np.zeros(24)
    for t in generated["truth"].values():
        if t.septic or t.values.shape[1] < 24 * 12:
            continue
        hours = ((t.grid_start // 60 + np.arange(t.values.shape[1]) * t.step_min) // 60) % 24
        np.add.at(sums, hours, t.values[0] - t.values[0].mean())
        np.add.at(counts, hours, 1)
    profile = sums / np.maximum(counts, 1)
    assert profile[14:20].mean() - profile[2:8].mean() > 3


def test_spo2_is_capped_at_100_and_skewed_below(
    generated: dict[str, Any], ce: pd.DataFrame
) -> None:
    clean = _clean(ce)
    spo2 = clean.valuenum[clean.itemid.isin([646, 220277])]
    assert spo2.max() == 100 and 0.02 < (spo2 == 100).mean() < 0.5
    assert spo2.skew() < -0.3 and 95 <= spo2.median() <= 99
    latent = pd.Series(np.concatenate([t.values[SPO2] for t in generated["truth"].values()]))
    assert latent.max() < 100 and latent.skew() < -0.3


def test_readings_are_quantised(ce: pd.DataFrame) -> None:
    clean = _clean(ce)
    vital = clean.itemid.map(lambda i: CHART_ITEM_BY_ID[i].vital if i in CHART_ITEM_BY_ID else "")
    integers = clean.valuenum[vital.isin(["heart_rate", "sbp", "dbp", "mbp", "resp_rate", "spo2"])]
    assert len(integers) > 1000 and (integers == np.round(integers)).all()
    temps = clean.valuenum[vital == "temperature"]
    assert len(temps) > 100 and np.allclose(temps * 10, np.round(temps * 10))


def _dosed(dose: np.ndarray) -> np.ndarray:
    """Grid points at which a dose (a jump of the decaying dose) was given."""
    return np.flatnonzero(np.diff(dose) > 0.5) + 1


def test_hypotension_is_treated_within_an_hour_and_map_rises(generated: dict[str, Any]) -> None:
    delays, change, below = [], [], []
    for t in generated["truth"].values():
        s = t.states
        pressor = np.flatnonzero(np.diff(s.pressor_target) > PRESSOR_START - 1.5) + 1
        for k in np.union1d(_dosed(s.fluid_dose), pressor):
            delays.append(s.hypo_wait[k - 1] + STEP_MIN)
            below.append(t.mbp[k] < MAP_RECOVERED)
            if k + 12 < t.mbp.size:
                change.append(t.mbp[k + 12] - t.mbp[k])  # an hour later
    delays = np.array(delays)
    assert len(delays) >= 30
    assert (delays >= HYPOTENSION_DELAY_MIN).all() and (delays <= 60).mean() > 0.9
    assert np.all(below)  # treated before MAP recovered on its own
    assert np.mean(change) > 4 and np.mean(np.array(change) > 0) > 0.7


def test_fever_is_followed_by_paracetamol_and_a_fall_in_temperature(
    generated: dict[str, Any],
) -> None:
    delays, change, gaps = [], [], []
    for t in generated["truth"].values():
        s = t.states
        doses = _dosed(s.apy_dose)
        gaps.extend(np.diff(doses) * STEP_MIN)
        for k in doses:
            delays.append(s.fever_wait[k - 1] + STEP_MIN)
            if k + 18 < t.mbp.size:
                change.append(t.values[TEMP, k + 18] - t.values[TEMP, k])  # 1.5 h
    assert len(delays) >= 20
    assert (np.array(delays) <= 120).mean() > 0.9
    assert np.mean(change) < -0.3 and np.mean(np.array(change) < 0) > 0.7
    assert min(gaps, default=np.inf) >= ANTIPYRETIC_INTERVAL_MIN


def test_charting_is_denser_while_unstable(generated: dict[str, Any], ce: pd.DataFrame) -> None:
    hr = ce[ce.itemid.isin([211, 220045])].drop_duplicates(["icustay_id", "charttime"])
    readings = np.zeros(2)
    minutes = np.zeros(2)
    for stay, rows in hr.groupby("icustay_id"):
        t = generated["truth"][stay]
        seconds = rows.charttime.to_numpy().astype("datetime64[s]").astype(np.int64)
        k = (seconds - t.grid_start) // 60 // STEP_MIN
        alert = t.alert[np.minimum(k, t.alert.size - 1)]
        readings += [np.sum(~alert), np.sum(alert)]
        minutes += [np.sum(~t.alert) * 5, np.sum(t.alert) * 5]
    calm, unstable = readings / minutes * 60
    assert minutes[1] > 600 and unstable > 1.5 * calm


# --- loading ------------------------------------------------------------------------------


def test_csv_dir_and_direct_load_give_the_manifest_counts(
    server: Any,
    tmp_path: Path,
) -> None:
    cfg = {"seed": 9, "n_patients": 30}
    manifest = write_csv_dir(cfg, tmp_path / "mimic")
    expected = {t: v["rows"] for t, v in manifest["tables"].items()}
    conn = server.connect()
    from_files, direct = unique_schema("from_csv"), unique_schema("direct")
    try:
        loaded = load_csv_dir(conn, tmp_path / "mimic", schema=from_files)
        assert loaded == expected
        assert table_row_counts(conn, from_files) == expected
        counts = load_direct(conn, cfg, schema=direct)
        assert counts == expected
        assert table_row_counts(conn, direct) == expected
        with conn.cursor() as cur:
            digest = (
                "SELECT md5(string_agg(concat_ws('|', row_id, icustay_id, itemid, charttime, "
                "storetime, value, valuenum, warning, error), ',' ORDER BY row_id)) "
                "FROM {}.chartevents"
            )
            cur.execute(digest.format(from_files))
            a = cur.fetchone()[0]
            cur.execute(digest.format(direct))
            assert cur.fetchone()[0] == a
    finally:
        drop_schema(conn, from_files)
        drop_schema(conn, direct)
        conn.close()
