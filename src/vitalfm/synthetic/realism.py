"""How the synthetic MIMIC-III compares with published ICU vital-sign statistics.

:data:`PUBLISHED` holds summary statistics from the literature, each with its full citation;
:func:`generated_statistics` computes the same statistics from a generated database, after
the study's own cleaning rules (mimic-code's vital-sign concept, :mod:`vitalfm.mimic`; the same
rules :mod:`vitalfm.data.vitals` applies on the server's rows). :func:`comparison_rows` puts
them side by side (``bench/synthetic_realism.py`` prints and records them).

The generator is not tuned toward these numbers: where it differs, the table says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from vitalfm import mimic

VITALS: tuple[str, ...] = mimic.VITAL_NAMES


# --- published statistics --------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    key: str
    citation: str
    population: str


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "physionet2019",
            "M. A. Reyna, C. S. Josef, R. Jeter, S. P. Shashikumar, M. B. Westover, S. Nemati, "
            "G. D. Clifford, A. Sharma, 'Early Prediction of Sepsis From Clinical Data: The "
            "PhysioNet/Computing in Cardiology Challenge 2019', Crit Care Med 48(2):210-217, "
            "2020; per-variable mean and SD of the hourly training data, as distributed with "
            "the Challenge's example entry code",
            "about 40,000 adult ICU patients of two US hospital systems (Beth Israel Deaconess, "
            "the source of MIMIC-III, and Emory), hourly values; about 7 % septic",
        ),
        Source(
            "mimic3",
            "A. E. W. Johnson, T. J. Pollard, L. Shen, L. H. Lehman, M. Feng, M. Ghassemi, "
            "B. Moody, P. Szolovits, L. A. Celi, R. G. Mark, 'MIMIC-III, a freely accessible "
            "critical care database', Sci Data 3:160035, 2016 (Table 3: nurse-verified vital "
            "signs, approximately hourly)",
            "MIMIC-III, all ICU stays",
        ),
        Source(
            "aci_temperature",
            "Agency for Clinical Innovation (NSW), Intensive Care Manual, 'Temperature "
            "measurement for critically ill adults' clinical practice guideline (evidence "
            "reviewed to 2012): at least hourly if unstable, 2-hourly if complex, 4-hourly if "
            "stable",
            "a guideline (how often temperature should be recorded), not a measurement",
        ),
        Source(
            "broman2021",
            "M. E. Broman et al., 'The Relationship Between Heart Rate and Body Temperature in "
            "Critically Ill Patients', Crit Care Med 49(3):e327-e331, 2021: 8.35 beats/min per "
            "degC, crude linear regression over 472,941 simultaneous pairs",
            "9,046 patients of a mixed medical-surgical ICU",
        ),
    )
}


@dataclass(frozen=True)
class Published:
    """One published statistic: ``value`` (and ``spread``: an SD, or an (low, high) range)."""

    statistic: str  # "hourly_mean_sd", "median_interval_min", "hr_per_degree"
    vital: str
    value: float
    spread: float | tuple[float, float] | None
    source: str
    note: str = ""


PUBLISHED: tuple[Published, ...] = (
    Published("hourly_mean_sd", "heart_rate", 83.8996, 17.6494, "physionet2019"),
    Published("hourly_mean_sd", "spo2", 97.0520, 3.0163, "physionet2019"),
    Published("hourly_mean_sd", "temperature", 36.8055, 0.6895, "physionet2019"),
    Published("hourly_mean_sd", "sbp", 126.2240, 24.2988, "physionet2019"),
    Published("hourly_mean_sd", "mbp", 86.2907, 16.6459, "physionet2019"),
    Published("hourly_mean_sd", "dbp", 66.2070, 14.0771, "physionet2019"),
    Published("hourly_mean_sd", "resp_rate", 18.7280, 4.7035, "physionet2019"),
    *(
        Published("median_interval_min", v, 60.0, None, "mimic3", "'approximately hourly'")
        for v in ("heart_rate", "sbp", "dbp", "mbp", "resp_rate", "spo2")
    ),
    Published(
        "median_interval_min",
        "temperature",
        60.0,
        (60.0, 240.0),
        "aci_temperature",
        "a recommended range, not a measured median",
    ),
    Published("hr_per_degree", "heart_rate", 8.35, None, "broman2021"),
)


# --- cleaning and binning (the study's rules, on the generator's tables) -----------------------


def clean_vitals(chartevents: pd.DataFrame | pa.Table) -> pd.DataFrame:
    """Accepted vital-sign readings of chartevents rows: columns icustay_id, charttime (epoch
    seconds, int64), vital, itemid, value (temperature in degC).

    The rules of :func:`vitalfm.data.vitals.clean_block`: only the concept's itemids (the 677/679
    "calc" copies are not among them), ``error = 1`` rows dropped, NULL ``valuenum`` dropped,
    values outside the item's range dropped (not clipped), degF converted after its own check.
    """
    if isinstance(chartevents, pa.Table):
        cols = ["icustay_id", "charttime", "itemid", "valuenum", "error"]
        chartevents = chartevents.select(cols).to_pandas()
    items = {i.itemid: i for i in mimic.CHART_ITEMS}
    ce = chartevents[chartevents["itemid"].isin(list(items))]
    itemid = ce["itemid"].to_numpy()
    value = ce["valuenum"].to_numpy(dtype=np.float64, na_value=np.nan)
    error = ce["error"].to_numpy(dtype=np.float64, na_value=0.0)
    low = np.array([items[i].low for i in itemid])
    high = np.array([items[i].high for i in itemid])
    inclusive = np.array([items[i].high_inclusive for i in itemid], dtype=bool)
    fahrenheit = np.array([items[i].fahrenheit for i in itemid], dtype=bool)
    with np.errstate(invalid="ignore"):
        in_range = (value > low) & np.where(inclusive, value <= high, value < high)
    keep = (error != 1) & ~np.isnan(value) & in_range
    value = np.where(fahrenheit, (value - 32.0) / 1.8, value)
    charttime = ce["charttime"]
    if np.issubdtype(charttime.dtype, np.datetime64):
        seconds = charttime.to_numpy().astype("datetime64[s]").astype(np.int64)
    else:
        seconds = charttime.to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "icustay_id": ce["icustay_id"].to_numpy(dtype=np.int64)[keep],
            "charttime": seconds[keep],
            "vital": np.array([items[i].vital for i in itemid])[keep],
            "itemid": itemid[keep],
            "value": value[keep],
        }
    )


@dataclass
class BinnedStays:
    """Bin means per stay on the study's grid: bins ``[grid_start + b * freq, ...)`` from the
    stay's intime floored to the grid; ``values[vital]`` (bins,) NaN where no reading."""

    icustay_id: np.ndarray
    grid_start_s: np.ndarray
    offsets: np.ndarray  # first bin of each stay in the flat arrays (len n_stays + 1)
    values: dict[str, np.ndarray]
    frequency_minutes: int

    def stay(self, i: int, vital: str) -> np.ndarray:
        return self.values[vital][self.offsets[i] : self.offsets[i + 1]]


def bin_readings(
    readings: pd.DataFrame, icustays: pd.DataFrame, frequency_minutes: int
) -> BinnedStays:
    """Mean of the readings in each grid bin of each stay (as the study's grid does: readings
    outside ``[intime, outtime]`` dropped, bins up to the one holding ``outtime``)."""
    f_s = int(frequency_minutes) * 60
    stays = icustays.sort_values("icustay_id")
    ids = stays["icustay_id"].to_numpy(dtype=np.int64)

    def seconds(col: pd.Series) -> np.ndarray:
        return col.to_numpy().astype("datetime64[s]").astype(np.int64)

    intime, outtime = seconds(stays["intime"]), seconds(stays["outtime"])
    start = intime // f_s * f_s
    n_bins = (outtime - start) // f_s + 1
    offsets = np.concatenate([[0], np.cumsum(n_bins)]).astype(np.int64)
    values = {}
    for vital in VITALS:
        r = readings[readings["vital"] == vital]
        pos = np.searchsorted(ids, r["icustay_id"].to_numpy())
        pos = np.clip(pos, 0, ids.size - 1)
        t = r["charttime"].to_numpy(dtype=np.int64)
        ok = (ids[pos] == r["icustay_id"].to_numpy()) & (t >= intime[pos]) & (t <= outtime[pos])
        row = offsets[pos[ok]] + (t[ok] - start[pos[ok]]) // f_s
        total = np.bincount(row, weights=r["value"].to_numpy()[ok], minlength=offsets[-1])
        count = np.bincount(row, minlength=offsets[-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            values[vital] = np.where(count > 0, total / count, np.nan)
    return BinnedStays(ids, start, offsets, values, int(frequency_minutes))


# --- the same statistics from a generated database ---------------------------------------------


def persistence_forecast(context: np.ndarray) -> np.ndarray:
    """[N] the persistence baseline's forecast of each context row [N, C]: its last reading
    (NaN where it has none), by the baseline's own :func:`last_observed`."""
    import torch

    from vitalfm.models.baselines.persistence import last_observed

    return last_observed(torch.from_numpy(np.asarray(context, dtype=np.float64)))[0].numpy()


def ensemble_crps(samples: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, H] CRPS of an ensemble [N, S, H] against y [N, H]: the usual sorted-sample
    estimator, exact for the ensemble's empirical distribution."""
    s = np.sort(samples, axis=1)
    n = s.shape[1]
    w = (2 * np.arange(1, n + 1) - n - 1)[None, :, None]
    return np.abs(s - y[:, None, :]).mean(axis=1) - (w * s).sum(axis=1) / n**2


def generate_tables(cfg_synthetic: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The icustays and chartevents tables of a synthetic database, as pandas frames."""
    from vitalfm.synthetic.generator import iter_batches

    parts: dict[str, list[pa.Table]] = {"icustays": [], "chartevents": []}
    for batch in iter_batches(cfg_synthetic):
        for name in parts:
            parts[name].append(batch.tables[name])
    return {name: pa.concat_tables(t).to_pandas() for name, t in parts.items()}


def reading_intervals(readings: pd.DataFrame, vital: str) -> np.ndarray:
    """Minutes between consecutive distinct charttimes of a vital within each stay."""
    r = readings.loc[readings["vital"] == vital, ["icustay_id", "charttime"]].drop_duplicates()
    r = r.sort_values(["icustay_id", "charttime"])
    same = r["icustay_id"].to_numpy()[1:] == r["icustay_id"].to_numpy()[:-1]
    return (np.diff(r["charttime"].to_numpy()) / 60.0)[same]


def generated_statistics(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Statistics of a generated database (``icustays`` and ``chartevents`` frames), after the
    study's cleaning: per vital the hourly bin means' mean and SD (the PhysioNet 2019 data are
    hourly values), the readings' median and IQR, the median minutes between readings and the
    share of hourly bins with a reading; and HR against temperature (pairs in one hour)."""
    readings = clean_vitals(tables["chartevents"])
    hourly = bin_readings(readings, tables["icustays"], 60)
    out: dict[str, Any] = {"n_stays": int(hourly.icustay_id.size), "vitals": {}}
    for vital in VITALS:
        bins = hourly.values[vital]
        observed = bins[~np.isnan(bins)]
        values = readings.loc[readings["vital"] == vital, "value"].to_numpy()
        intervals = reading_intervals(readings, vital)
        q25, q50, q75 = np.percentile(values, [25, 50, 75])
        out["vitals"][vital] = {
            "hourly_mean": float(observed.mean()),
            "hourly_sd": float(observed.std(ddof=1)),
            "reading_median": float(q50),
            "reading_iqr": [float(q25), float(q75)],
            "reading_skewness": float(pd.Series(values).skew()),
            "share_at_max": float((values >= values.max()).mean()),
            "median_interval_min": float(np.median(intervals)),
            "hourly_bins_observed": float(observed.size / bins.size),
            "n_readings": int(values.size),
        }
    hr, temp = hourly.values["heart_rate"], hourly.values["temperature"]
    both = ~np.isnan(hr) & ~np.isnan(temp)
    slope = np.polyfit(temp[both], hr[both], 1)[0]
    out["hr_per_degree"] = float(slope)
    out["hr_temperature_pairs"] = int(both.sum())
    return out


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def comparison_rows(
    generated: Mapping[str, Any], published: Iterable[Published] = PUBLISHED
) -> list[dict[str, str]]:
    """Side-by-side rows: statistic, vital, published, generated, source, note."""
    digits = {"temperature": 2}
    rows = []
    for p in published:
        d = digits.get(p.vital, 1)
        note = p.note
        if p.statistic == "hourly_mean_sd":
            g = generated["vitals"][p.vital]
            pub = f"{_fmt(p.value, d)} ± {_fmt(float(p.spread), d)}"  # type: ignore[arg-type]
            gen = f"{_fmt(g['hourly_mean'], d)} ± {_fmt(g['hourly_sd'], d)}"
            stat = "hourly value, mean ± SD"
        elif p.statistic == "median_interval_min":
            g = generated["vitals"][p.vital]
            if isinstance(p.spread, tuple):
                pub = f"{p.spread[0]:.0f}-{p.spread[1]:.0f}"
            else:
                pub = f"~{p.value:.0f}"
            gen = _fmt(g["median_interval_min"], 0)
            stat = "minutes between readings, median"
        elif p.statistic == "hr_per_degree":
            pub = _fmt(p.value, 2)
            gen = _fmt(generated["hr_per_degree"], 2)
            stat = "HR per degC (crude regression, hourly pairs)"
        else:
            raise ValueError(p.statistic)
        rows.append(
            {
                "statistic": stat,
                "vital": p.vital,
                "published": pub,
                "generated": gen,
                "source": p.source,
                "note": note,
            }
        )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    head = "| statistic | vital | published | generated | source | note |"
    sep = "|---|---|---|---|---|---|"
    body = [
        f"| {r['statistic']} | {r['vital']} | {r['published']} | {r['generated']} | "
        f"{r['source']} | {r['note']} |"
        for r in rows
    ]
    return "\n".join([head, sep, *body])


# --- what the physiology did (from the generator's truth) -----------------------------------------


def _doses(dose: np.ndarray) -> np.ndarray:
    """Grid points at which a dose (a jump of a decaying dose) was given."""
    return np.flatnonzero(np.diff(dose) > 0.5) + 1


def physiology_summary(truths: Iterable[Any]) -> dict[str, float]:
    """Episodes, treatments and their effects in the latent of :class:`StayTruth` records."""
    from vitalfm.synthetic.physiology_state import SPO2, STEP_MIN, TEMP
    from vitalfm.synthetic.treatments import (
        FEVER,
        HYPOXAEMIA,
        MAP_HYPOTENSION,
        O2_STEP,
        PRESSOR_START,
    )

    step_h = STEP_MIN / 60.0
    septic_stays = episodes = septic_points = episode_points = 0
    points = hypotensive = febrile = hypoxaemic = alert = 0
    delays_bp: list[float] = []
    delays_fever: list[float] = []
    map_rise: list[float] = []
    temp_fall: list[float] = []
    boluses = pressor_starts = paracetamol = oxygen = stays = 0
    for t in truths:
        stays += 1
        s = t.states
        n = s.k.size
        points += n
        hypotensive += int((t.mbp < MAP_HYPOTENSION).sum())
        febrile += int((t.values[TEMP] >= FEVER).sum())
        hypoxaemic += int((t.values[SPO2] < HYPOXAEMIA).sum())
        alert += int(t.alert.sum())
        if t.septic:
            septic_stays += 1
            septic_points += n
            episode_points += int((s.ep_phase > 0).sum())
            episodes += int(((s.ep_phase[1:] == 1) & (s.ep_phase[:-1] == 0)).sum())
            episodes += int(s.ep_phase[0] == 1)
        fluid = _doses(s.fluid_dose)
        pressor = np.flatnonzero(np.diff(s.pressor_target) > PRESSOR_START - 1.5) + 1
        boluses += fluid.size
        pressor_starts += pressor.size
        for k in np.union1d(fluid, pressor):
            delays_bp.append(float(s.hypo_wait[k - 1] + STEP_MIN))
            if k + 12 < n:
                map_rise.append(float(t.mbp[k + 12] - t.mbp[k]))
        doses = _doses(s.apy_dose)
        paracetamol += doses.size
        for k in doses:
            delays_fever.append(float(s.fever_wait[k - 1] + STEP_MIN))
            if k + 18 < n:
                temp_fall.append(float(t.values[TEMP, k] - t.values[TEMP, k + 18]))
        oxygen += int((np.diff(s.o2_set) > O2_STEP / 2).sum())
    stay_days = points * step_h / 24.0
    return {
        "stays": float(stays),
        "septic_stays": float(septic_stays),
        "episodes_per_septic_stay_day": episodes / max(septic_points * step_h / 24.0, 1e-9),
        "septic_time_in_episode": episode_points / max(septic_points, 1),
        "time_hypotensive_map_below_65": hypotensive / points,
        "time_febrile_38_3": febrile / points,
        "time_spo2_below_90": hypoxaemic / points,
        "time_in_alert_denser_charting": alert / points,
        "fluid_boluses_per_stay_day": boluses / stay_days,
        "vasopressor_starts_per_stay_day": pressor_starts / stay_days,
        "paracetamol_doses_per_stay_day": paracetamol / stay_days,
        "oxygen_increases_per_stay_day": oxygen / stay_days,
        "hypotension_to_treatment_min_median": float(np.median(delays_bp)),
        "hypotension_to_treatment_min_p90": float(np.percentile(delays_bp, 90)),
        "map_rise_1h_after_treatment_mmhg": float(np.mean(map_rise)),
        "fever_to_paracetamol_min_median": float(np.median(delays_fever)),
        "temperature_fall_1h30_after_paracetamol_degc": float(np.mean(temp_fall)),
    }
