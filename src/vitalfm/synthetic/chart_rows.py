"""The rows of chartevents: readings at the charted times (vitals, temperature with CareVue's
converted copies, GCS, heart rhythm), then the artefacts (text-only rows, out-of-range values,
duplicates, MetaVision error copies) and the table's columns.

When readings are charted is :mod:`vitalfm.synthetic.chart_schedule`'s, how a latent value
becomes a reading :mod:`vitalfm.synthetic.measurement`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vitalfm.synthetic import vocab
from vitalfm.synthetic.admin_tables import IdCounters
from vitalfm.synthetic.chart_items import (
    ALARM_HI,
    ALARM_LO,
    ART2_CV_ITEMS,
    ART_ITEMS,
    ART_MEAN2_MV,
    CHARTED_ITEMIDS,
    CV_RHYTHM0,
    HR_ITEMS,
    IS_VITAL,
    JUNK_ROW,
    JUNK_TABLE,
    MANUAL_CV_ITEMS,
    MV_EYE0,
    MV_RHYTHM0,
    NBP_ITEMS,
    RR_ITEMS,
    RR_TOTAL_ITEMS,
    SPO2_ITEMS,
    TEMP_C_ITEMS,
    TEMP_F_ITEMS,
    TEXT_ARRAY,
    TEXT_ONLY0,
    UNITS,
)
from vitalfm.synthetic.chart_schedule import chart_times
from vitalfm.synthetic.latent_stays import BatchLatent
from vitalfm.synthetic.measurement import (
    DUPLICATE_STEPS,
    HR_READING,
    P_ART,
    P_ART2,
    P_BP_ITEM,
    P_DUPLICATE,
    P_ERROR_COPY,
    P_HR,
    P_JUNK,
    P_MANUAL,
    P_NBP,
    P_NBP_WITH_ART,
    P_RR,
    P_RR_TOTAL,
    P_SPO2,
    P_TEXT_ONLY,
    RR_READING,
    SPO2_READING,
    ReadingSpec,
    bp_readings,
    reading,
    temperature_readings,
)
from vitalfm.synthetic.physiology_state import DBP, HR, RR, SBP, SPO2, STEP_MIN, TEMP, Observation
from vitalfm.synthetic.tables import make_table


@dataclass
class ChartRows:
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

    def extend(self, other: ChartRows) -> None:
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


def _group_rows(
    rng: np.random.Generator,
    st: dict[str, np.ndarray],
    obs: Observation,
    base_min: np.ndarray,
    length: np.ndarray,
) -> ChartRows:
    """Chart rows for one group of stays (indices local to the group); ``obs`` fields are
    (grid points, stays)."""
    mv = st["metavision"]
    ev_stay, ev_t, a_stay, a_t = chart_times(rng, obs.alert, base_min, length)

    def latent(stay: np.ndarray, t: np.ndarray, signal: int) -> np.ndarray:
        return obs.values[t // STEP_MIN, stay, signal]

    rows = ChartRows()
    n_ev = ev_stay.size
    ev_mv = mv[ev_stay]

    def measured(mask: np.ndarray, signal: int, spec: ReadingSpec) -> np.ndarray:
        z = rng.standard_normal(int(mask.sum()))
        return reading(latent(ev_stay[mask], ev_t[mask], signal), z, spec)

    hr = rng.random(n_ev) < P_HR
    rows.add(ev_stay[hr], ev_t[hr], _pick(ev_mv[hr], HR_ITEMS), measured(hr, HR, HR_READING))
    sp = rng.random(n_ev) < P_SPO2
    rows.add(ev_stay[sp], ev_t[sp], _pick(ev_mv[sp], SPO2_ITEMS), measured(sp, SPO2, SPO2_READING))
    rr = rng.random(n_ev) < P_RR
    rows.add(ev_stay[rr], ev_t[rr], _pick(ev_mv[rr], RR_ITEMS), measured(rr, RR, RR_READING))
    rt = st["vent"][ev_stay] & (rng.random(n_ev) < P_RR_TOTAL)
    rows.add(ev_stay[rt], ev_t[rt], _pick(ev_mv[rt], RR_TOTAL_ITEMS), measured(rt, RR, RR_READING))

    def bp_triple(
        mask: np.ndarray, items: np.ndarray, arterial: bool, only_mean: bool = False
    ) -> None:
        stay, t = ev_stay[mask], ev_t[mask]
        k = stay.size
        z = rng.standard_normal((3, k))
        triple = bp_readings(latent(stay, t, SBP), latent(stay, t, DBP), z, arterial)
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
        obs.values[a_t // STEP_MIN, a_stay, TEMP], rng.standard_normal(n_a)
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
    p = obs.level[g_t // STEP_MIN, g_stay]
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
        MV_EYE0 + eye[g_mv].astype(np.int64) - 1,
    )

    # heart rhythm: text only, valuenum NULL
    rh = rng.random(n_a) < 0.7
    h_stay, h_t, h_mv = a_stay[rh], a_t[rh], a_mv[rh]
    h = obs.values[h_t // STEP_MIN, h_stay, HR]
    kind = np.where(st["af"][h_stay], 3, np.where(h > 100, 1, np.where(h < 60, 2, 0)))
    rows.add(
        h_stay,
        h_t,
        _pick(h_mv, (vocab.CV_HEART_RHYTHM, vocab.MV_HEART_RHYTHM)),
        np.full(h_stay.size, np.nan),
        np.where(h_mv, MV_RHYTHM0, CV_RHYTHM0) + kind,
    )
    return rows


def _finish_chartevents(
    rng: np.random.Generator,
    r: dict[str, np.ndarray],
    st: dict[str, np.ndarray],
    base_min: np.ndarray,
    stay_cgids: np.ndarray,
    cgid_pool: np.ndarray,
    counters: IdCounters,
) -> pa.Table:
    """Artefacts (text-only, out of range, duplicates, error rows), then the table's columns."""
    n = r["itemid"].size
    item_idx = np.searchsorted(CHARTED_ITEMIDS, r["itemid"])
    vital = IS_VITAL[item_idx]
    mv = st["metavision"][r["stay"]]
    valuenum, text = r["valuenum"].copy(), r["text"].copy()

    u = rng.random(n)
    to_text = vital & (u < P_TEXT_ONLY)
    text[to_text] = TEXT_ONLY0 + rng.integers(0, len(vocab.TEXT_ONLY_VALUES), int(to_text.sum()))
    valuenum[to_text] = np.nan
    junk = vital & (u >= P_TEXT_ONLY) & (u < P_TEXT_ONLY + P_JUNK)
    valuenum[junk] = JUNK_TABLE[JUNK_ROW[item_idx[junk]], rng.integers(0, 3, int(junk.sum()))]

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
    text_arr = pc.take(TEXT_ARRAY, pa.array(text, mask=text < 0))
    value = pc.coalesce(text_arr, num_text)
    warning = ((valuenum < ALARM_LO[item_idx]) | (valuenum > ALARM_HI[item_idx])).astype(np.int64)
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
            "valueuom": pc.take(UNITS, pa.array(item_idx)),
            "warning": pa.array(warning, pa.int32(), mask=cv),
            "error": pa.array(error_flag, pa.int32(), mask=cv),
            "resultstatus": pc.if_else(cv_mask, "Manual", pa.scalar(None, pa.string())),
            "stopped": pc.if_else(cv_mask, "NotStopd", pa.scalar(None, pa.string())),
        },
    )


def chartevents(
    rng: np.random.Generator,
    stays: dict[str, np.ndarray],
    lat: BatchLatent,
    cgid_pool: np.ndarray,
    counters: IdCounters,
) -> pa.Table:
    """The chartevents table of one batch (every group of ``lat`` simulated). Each stay is
    charted by four caregivers of ``cgid_pool``, taking turns every 12 hours."""
    n = stays["icustay_id"].size
    stay_cgids = cgid_pool[rng.integers(0, cgid_pool.size, (n, 4))]
    rows = ChartRows()
    for idx, tr in zip(lat.groups, lat.trajectories, strict=True):
        assert tr is not None
        st = {k: v[idx] for k, v in stays.items()}
        group_rows = _group_rows(rng, st, tr.obs, lat.base_min[idx], lat.length[idx])
        group_rows.stay = [idx[a] for a in group_rows.stay]  # back to batch stay indices
        rows.extend(group_rows)
    return _finish_chartevents(
        rng, rows.arrays(), stays, lat.base_min, stay_cgids, cgid_pool, counters
    )
