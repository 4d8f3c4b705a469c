"""The measurement model: what a charting event records and how a latent value becomes a charted
reading (noise, rounding, limits, arterial vs cuff pressure, degF/degC), and the artefacts.

Shared by the generator's chart rows (:mod:`vitalfm.synthetic.chart_rows`) and the oracle
(:mod:`vitalfm.synthetic.oracle_paths`), so the oracle predicts exactly what is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
