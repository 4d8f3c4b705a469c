"""Treatment of the latent physiology's patients: fluids and vasopressors for hypotension,
paracetamol for fever, oxygen for hypoxaemia, decided on each new observation.

The thresholds, delays and effects (and the literature behind them) are described in
:mod:`vitalfm.synthetic.physiology`, whose :func:`~vitalfm.synthetic.physiology.step` calls
:func:`decide_treatments` and moves the treatments' effect compartments.
"""

from __future__ import annotations

import numpy as np

from vitalfm.synthetic.physiology_state import (
    SPO2,
    STEP_MIN,
    TEMP,
    U_FEVER,
    U_HYPOTENSION,
    U_HYPOXAEMIA,
    Observation,
    State,
    hazard,
)

# hypotension: fluid boluses, then a titrated vasopressor
MAP_HYPOTENSION = 65.0
MAP_RECOVERED = 70.0
MAP_WEAN_ABOVE = 70.0
HYPOTENSION_DELAY_MIN = 10.0  # before any treatment is possible
HYPOTENSION_WAIT_MEAN_MIN = 20.0
FLUID_RESPONDER_P = 0.5
FLUID_GAIN = {"responder": (8.0, 14.0), "non_responder": (0.0, 3.0)}  # MAP mmHg per bolus
FLUID_ON_TAU_MIN = 15.0
FLUID_OFF_TAU_MIN = 60.0
FLUID_RECENT_TAU_MIN = 180.0  # memory of recent boluses (count, decaying)
FLUID_BEFORE_PRESSOR = 1.5  # hypotension after about two recent boluses: vasopressor instead
PRESSOR_START = 8.0  # mmHg
PRESSOR_UP, PRESSOR_DOWN, PRESSOR_MAX = 1.0, 0.5, 40.0  # per step
PRESSOR_TAU_MIN = 10.0
# fever: paracetamol
FEVER = 38.3
FEVER_GONE = 38.0
FEVER_DELAY_MIN = 15.0
FEVER_WAIT_MEAN_MIN = 30.0
ANTIPYRETIC_INTERVAL_MIN = 360.0
ANTIPYRETIC_GAIN = 1.0  # degC per dose at full effect (peak about 0.68)
ANTIPYRETIC_ON_TAU_MIN = 45.0
ANTIPYRETIC_OFF_TAU_MIN = 240.0
ANTIPYRETIC_SBP, ANTIPYRETIC_DBP = 12.0, 6.0  # mmHg per degC of effect (MAP -8)
# hypoxaemia: inspired oxygen
HYPOXAEMIA = 90.0
HYPOXAEMIA_GONE = 92.0
HYPOXAEMIA_WAIT_MEAN_MIN = 10.0
O2_STEP = 0.3  # log PaO2 per increase of inspired oxygen
O2_MAX = 1.2
O2_WEAN_ABOVE = 96.0
O2_WEAN_STEP = 0.005
O2_TAU_MIN = 10.0


def decide_treatments(s: State, obs: Observation, u: np.ndarray) -> None:
    """Treatment decisions on the new observation (in place on the new state's timers/doses)."""
    dt = float(STEP_MIN)
    mbp = obs.mbp
    # hypotension: wait, then a fluid bolus, or a vasopressor when fluid was just given
    target = s.pressor_target
    waiting = s.hypo_wait >= 0.0
    wait = np.where(waiting, s.hypo_wait + dt, -1.0)
    wait = np.where(~waiting & (mbp < MAP_HYPOTENSION) & (target <= 0.0), 0.0, wait)
    wait = np.where(waiting & (mbp >= MAP_RECOVERED), -1.0, wait)
    h = np.where(wait >= HYPOTENSION_DELAY_MIN, hazard(HYPOTENSION_WAIT_MEAN_MIN), 0.0)
    treat = (wait >= 0.0) & (u[:, U_HYPOTENSION] < h)
    pressor_start = treat & ((s.fluid_recent >= FLUID_BEFORE_PRESSOR) | (target > 0.0))
    fluid = treat & ~pressor_start
    running = (target > 0.0) & ~pressor_start
    target = np.where(running & (mbp < MAP_HYPOTENSION), target + PRESSOR_UP, target)
    target = np.where(running & (mbp > MAP_WEAN_ABOVE), target - PRESSOR_DOWN, target)
    s.pressor_target = np.clip(np.where(pressor_start, target + PRESSOR_START, target), 0.0,
                               PRESSOR_MAX)  # fmt: skip
    s.fluid_dose = s.fluid_dose + fluid
    s.fluid_recent = s.fluid_recent + fluid
    s.hypo_wait = np.where(treat, -1.0, wait)

    # fever: wait, then paracetamol (at most every 6 h)
    temp = obs.values[:, TEMP]
    waiting = s.fever_wait >= 0.0
    wait = np.where(waiting, s.fever_wait + dt, -1.0)
    may_dose = s.since_apy >= ANTIPYRETIC_INTERVAL_MIN
    wait = np.where(~waiting & (temp >= FEVER) & may_dose, 0.0, wait)
    wait = np.where(waiting & (temp < FEVER_GONE), -1.0, wait)
    h = np.where(wait >= FEVER_DELAY_MIN, hazard(FEVER_WAIT_MEAN_MIN), 0.0)
    dose = (wait >= 0.0) & (u[:, U_FEVER] < h)
    s.apy_dose = s.apy_dose + dose
    s.since_apy = np.where(dose, 0.0, s.since_apy)
    s.fever_wait = np.where(dose, -1.0, wait)

    # hypoxaemia: more oxygen within minutes; wean slowly while saturation is high
    spo2 = obs.values[:, SPO2]
    waiting = s.hypox_wait >= 0.0
    wait = np.where(waiting, s.hypox_wait + dt, -1.0)
    wait = np.where(~waiting & (spo2 < HYPOXAEMIA), 0.0, wait)
    wait = np.where(waiting & (spo2 >= HYPOXAEMIA_GONE), -1.0, wait)
    more = (wait >= 0.0) & (u[:, U_HYPOXAEMIA] < hazard(HYPOXAEMIA_WAIT_MEAN_MIN))
    o2 = np.where(spo2 > O2_WEAN_ABOVE, np.maximum(s.o2_set - O2_WEAN_STEP, 0.0), s.o2_set)
    s.o2_set = np.where(more, np.minimum(s.o2_set + O2_STEP, O2_MAX), o2)
    s.hypox_wait = np.where(more, -1.0, wait)
