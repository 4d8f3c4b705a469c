"""Latent vital signs of ICU stays: a Markov process on a 5-minute grid, vectorised over stays.

Every stay has static :class:`Params` (drawn at admission) and a dynamic :class:`State` at each
grid point. The only way from one grid point to the next is :func:`step`, which takes the state
and this step's random innovations; the generator and the oracle forecaster
(:mod:`vitalfm.synthetic.oracle`) both simulate through it, so they cannot drift apart. Nothing
about the future is drawn into the state: whether an episode starts, a plateau ends or a
treatment is given after grid point k depends on innovations drawn for the steps after k.

What is modelled, and where the numbers come from (titles/authors/years; no text copied):

* Patient baseline, with a small per-stay perturbation (drawn by the caller), and a 24 h
  circadian cosine peaking in the late afternoon.
* Mean reversion to the patient's own baseline on two time scales: a fast Ornstein-Uhlenbeck
  process (tau 45-180 min) and a slow one (tau 8-12 h), both sampled exactly on the grid, with
  correlated innovations (SBP with DBP, HR with RR).
* Oxygen saturation: the latent channel is log arterial PO2; SpO2 is the saturation of the
  Severinghaus oxygen dissociation curve at that PO2 (J. W. Severinghaus, "Simple, accurate
  equations for human blood O2 dissociation computations", J Appl Physiol 1979), so it saturates
  below 100 % and is skewed to the left; readings are integers capped at 100.
* Deterioration episodes (sepsis stays only): onsets come from a hazard (higher early in the
  stay), never from a time drawn at admission. An episode rises along a logistic curve (1-4 h),
  holds a plateau (at least 2 h, then leaving with a constant hazard, mean 4 h more) and
  recovers along a falling logistic curve (4-16 h). Its level raises HR, RR and temperature and
  lowers blood pressure and oxygenation.
* Heart rate follows temperature by 8.35 beats/min per degree C (M. E. Broman et al., "The
  Relationship Between Heart Rate and Body Temperature in Critically Ill Patients", Crit Care
  Med 2021; Liebermeister's rule).
* Hypotension (MAP < 65 mmHg, the resuscitation target of the Surviving Sepsis Campaign: M. M.
  Levy, L. E. Evans, A. Rhodes, "The Surviving Sepsis Campaign Bundle: 2018 update", Crit Care
  Med 2018) is treated after 10 min plus an exponential wait (mean 20 min), so nearly always
  within an hour: first a fluid bolus (about 500 ml over ~30 min, whose pressure effect fades
  within about an hour: N. J. Glassford, G. M. Eastwood, R. Bellomo, "Physiological changes
  after fluid bolus therapy in sepsis: a systematic review of contemporary data", Crit Care
  2014); about half the patients respond to fluid at all (F. Michard, J. L. Teboul,
  "Predicting fluid responsiveness in ICU patients", Chest 2002). Hypotension after about two
  recent boluses (a decaying count, tau 3 h) starts a vasopressor instead, titrated every 5 min
  towards MAP 65-70 and weaned above it. MAP rises over tens of minutes (first-order effect
  compartments, tau 15 min for fluid, 10 min for the vasopressor).
* Fever (>= 38.3 degC: N. P. O'Grady et al., "Guidelines for evaluation of new fever in
  critically ill adult patients: 2008 update", Crit Care Med 2008) is answered after 15 min plus
  an exponential wait (mean 30 min) by paracetamol, at most every 6 h (P. Young et al.,
  "Acetaminophen for Fever in Critically Ill Patients with Suspected Infection", N Engl J Med
  2015, 1 g every 6 h). Its effect peaks after about 1.5 h at about 0.7 degC and fades over
  the next hours (tau 4 h); it also lowers MAP, by 8 mmHg per degC of effect (H. M.
  Schell-Chaple et al., "Effects of IV Acetaminophen on Core Body Temperature and Hemodynamic
  Responses in Febrile Critically Ill Adults", Crit Care Med 2017: time-weighted temperature
  -0.47 degC, MAP -7 mmHg over 4 h).
* Hypoxaemia (SpO2 < 90 %) is answered within minutes by more inspired oxygen, weaned slowly
  while SpO2 > 96 % (B. R. O'Driscoll et al., "BTS guideline for oxygen use in adults in
  healthcare and emergency settings", Thorax 2017: target ranges, titrate down when above).
* :attr:`Observation.alert` marks when nurses chart more often (an episode rising past a third
  of its severity, MAP < 65, SpO2 < 90): the generator adds readings every ~15 min then.

MAP is not simulated independently: it is DBP + (SBP - DBP) / 3 of the latent, as a monitor
computes it. Replays are bit-exact: given a state and the same innovations, :func:`step`
returns the same numbers whatever the batch around it (no BLAS reductions; every array fed to
a transcendental function is contiguous). Measurement noise, rounding and charting are the
generator's (:mod:`vitalfm.synthetic.measurement`, :mod:`vitalfm.synthetic.chart_schedule`).

The grid, the signal order and the state containers are in
:mod:`vitalfm.synthetic.physiology_state`; the treatment decisions (hypotension, fever,
hypoxaemia) in :mod:`vitalfm.synthetic.treatments`.
"""

from __future__ import annotations

import numpy as np

from vitalfm.synthetic.physiology_state import (
    DBP,
    HR,
    N_NORMALS,
    N_SIGNALS,
    N_UNIFORMS,
    OXY,
    RR,
    SBP,
    SPO2,
    STEP_MIN,
    TEMP,
    U_EPISODE,
    U_SEVERITY,
    Observation,
    Params,
    State,
    Trajectory,
    hazard,
    relax,
)
from vitalfm.synthetic.treatments import (
    ANTIPYRETIC_DBP,
    ANTIPYRETIC_GAIN,
    ANTIPYRETIC_OFF_TAU_MIN,
    ANTIPYRETIC_ON_TAU_MIN,
    ANTIPYRETIC_SBP,
    FLUID_GAIN,
    FLUID_OFF_TAU_MIN,
    FLUID_ON_TAU_MIN,
    FLUID_RECENT_TAU_MIN,
    FLUID_RESPONDER_P,
    HYPOXAEMIA,
    MAP_HYPOTENSION,
    O2_TAU_MIN,
    PRESSOR_TAU_MIN,
    decide_treatments,
)

# population baseline mean and between-patient SD (OXY: log PaO2, about 100 mmHg)
BASELINE_MEAN = np.array([86.0, 121.0, 62.0, 18.5, np.log(100.0), 36.9])
BASELINE_SD = np.array([12.0, 14.0, 8.0, 3.0, 0.22, 0.3])
# circadian amplitude (peak-to-mean)
CIRCADIAN_AMP = np.array([4.0, 5.0, 3.0, 0.8, 0.02, 0.3])
# fast OU noise: stationary SD and correlation time (minutes)
NOISE_SD = np.array([6.0, 9.0, 5.0, 2.5, 0.08, 0.2])
NOISE_TAU_MIN = np.array([60.0, 90.0, 90.0, 45.0, 60.0, 180.0])
# slow OU drift of the patient's level
DRIFT_SD = np.array([5.0, 7.0, 4.0, 1.5, 0.10, 0.15])
DRIFT_TAU_MIN = np.array([480.0, 600.0, 600.0, 480.0, 720.0, 720.0])
# deterioration effect at full level (HR also rises through temperature: +15 at full level)
EPISODE_EFFECT = np.array([17.0, -30.0, -14.0, 9.0, -0.5, 1.8])
# physiological limits of the latent (measurement artefacts are added later)
LOWER = np.array([30.0, 55.0, 25.0, 5.0, np.log(30.0), 34.0])
UPPER = np.array([200.0, 230.0, 140.0, 50.0, np.log(600.0), 41.5])
HR_PER_DEGREE = 8.35

# episodes: onset hazard per hour = ONSET_EARLY * exp(-t / ONSET_TAU_H) + ONSET_LATE
ONSET_EARLY_PER_H = 1.0 / 12.0
ONSET_TAU_H = 24.0
ONSET_LATE_PER_H = 1.0 / 72.0
REFRACTORY_MIN = 360.0  # no new episode within 6 h of the last one ending
EPISODE_AT_ADMISSION = 0.35  # of septic stays, already deteriorating at admission
SEVERITY = (0.6, 1.0)
RISE_RATE_PER_H = (1.6, 6.4)  # logistic rate: 5 % -> 95 % of severity in 1-4 h
RECOVERY_RATE_PER_H = (0.4, 1.6)  # 97 % -> 2 % in 4-16 h
ONSET_LEVEL = 0.03  # fraction of severity when an episode starts
PLATEAU_LEVEL = 0.95
PLATEAU_MIN_MIN = 120.0
PLATEAU_EXIT_MEAN_MIN = 240.0
END_LEVEL = 0.02
ALERT_LEVEL = 0.35  # of severity: a rising episode makes nurses chart more often
NEVER = 1e9  # minutes since an event that never happened

# innovation correlations (SBP with DBP, HR with RR), applied column by column (not with a
# BLAS matmul, whose rounding may depend on the batch size: replays must be bit-exact)
CORR_SBP_DBP = 0.75
CORR_HR_RR = 0.4


def _correlate(z: np.ndarray) -> np.ndarray:
    """Correlated standard normals (B, 6) from independent ones (Cholesky factor)."""
    out = z.copy()
    out[:, DBP] = CORR_SBP_DBP * z[:, SBP] + np.sqrt(1.0 - CORR_SBP_DBP**2) * z[:, DBP]
    out[:, RR] = CORR_HR_RR * z[:, HR] + np.sqrt(1.0 - CORR_HR_RR**2) * z[:, RR]
    return out


_PHI_NOISE = np.exp(-STEP_MIN / NOISE_TAU_MIN)
_PHI_DRIFT = np.exp(-STEP_MIN / DRIFT_TAU_MIN)
_INNOV_NOISE = np.sqrt(1.0 - _PHI_NOISE**2) * NOISE_SD
_INNOV_DRIFT = np.sqrt(1.0 - _PHI_DRIFT**2) * DRIFT_SD

# per-step moves of the treatments' effect compartments and decaying doses
_A_FLUID_ON, _D_FLUID_OFF = relax(FLUID_ON_TAU_MIN), 1.0 - relax(FLUID_OFF_TAU_MIN)
_A_PRESSOR = relax(PRESSOR_TAU_MIN)
_D_FLUID_RECENT = 1.0 - relax(FLUID_RECENT_TAU_MIN)
_A_APY_ON, _D_APY_OFF = relax(ANTIPYRETIC_ON_TAU_MIN), 1.0 - relax(ANTIPYRETIC_OFF_TAU_MIN)
_A_O2 = relax(O2_TAU_MIN)


def saturation(pao2: np.ndarray) -> np.ndarray:
    """Severinghaus (1979) oxygen dissociation curve: SaO2 in % from PO2 in mmHg."""
    return 100.0 / (1.0 + 23400.0 / (pao2 * (pao2 * pao2 + 150.0)))


def draw_baselines(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-patient baselines, shape (n, 6); SBP at least 25 mmHg above DBP."""
    base = BASELINE_MEAN + BASELINE_SD * rng.standard_normal((n, N_SIGNALS))
    base[:, SBP] = np.maximum(base[:, SBP], base[:, DBP] + 25.0)
    return base


def draw_params(
    rng: np.random.Generator, baseline: np.ndarray, tod0_min: np.ndarray, septic: np.ndarray
) -> Params:
    """Static per-stay parameters besides the caller's baselines and admission clock time."""
    n = baseline.shape[0]
    u = rng.random((n, 2))
    responder = u[:, 0] < FLUID_RESPONDER_P
    lo_r, hi_r = FLUID_GAIN["responder"]
    lo_n, hi_n = FLUID_GAIN["non_responder"]
    gain = np.where(responder, lo_r + (hi_r - lo_r) * u[:, 1], lo_n + (hi_n - lo_n) * u[:, 1])
    return Params(
        baseline=np.asarray(baseline, dtype=np.float64),
        peak_h=rng.normal(17.0, 1.5, n),
        tod0_min=np.asarray(tod0_min, dtype=np.float64),
        septic=np.asarray(septic, dtype=bool),
        fluid_gain=gain,
    )


def initial_state(rng: np.random.Generator, params: Params) -> State:
    """The state at grid point 0: stationary noise and drift, some septic stays already in the
    rising phase of an episode, no treatment."""
    n = params.septic.size
    z = rng.standard_normal((n, N_NORMALS))
    u = rng.random((n, 3))
    in_episode = params.septic & (u[:, 0] < EPISODE_AT_ADMISSION)
    severity = SEVERITY[0] + (SEVERITY[1] - SEVERITY[0]) * u[:, 1]
    rate = RISE_RATE_PER_H[0] + (RISE_RATE_PER_H[1] - RISE_RATE_PER_H[0]) * u[:, 2]
    level = severity * (0.05 + 0.55 * u[:, 0] / EPISODE_AT_ADMISSION)
    zeros = np.zeros(n)
    return State(
        k=np.zeros(n, dtype=np.int64),
        noise=NOISE_SD * _correlate(z[:, :N_SIGNALS]),
        drift=DRIFT_SD * _correlate(z[:, N_SIGNALS:]),
        ep_phase=np.where(in_episode, 1, 0).astype(np.int8),
        ep_time=np.where(in_episode, 0.0, NEVER),
        ep_severity=np.where(in_episode, severity, 0.0),
        ep_level=np.where(in_episode, level, 0.0),
        ep_rate=np.where(in_episode, rate, 0.0),
        hypo_wait=zeros - 1.0,
        fluid_dose=zeros.copy(),
        fluid_effect=zeros.copy(),
        fluid_recent=zeros.copy(),
        pressor_target=zeros.copy(),
        pressor=zeros.copy(),
        fever_wait=zeros - 1.0,
        apy_dose=zeros.copy(),
        apy_effect=zeros.copy(),
        since_apy=zeros + NEVER,
        hypox_wait=zeros - 1.0,
        o2_set=zeros.copy(),
        o2_effect=zeros.copy(),
    )


def observe(params: Params, state: State) -> Observation:
    """The clean latent signals of a state (a pure function of it)."""
    clock_h = (params.tod0_min + state.k * float(STEP_MIN)) / 60.0
    circ = np.cos(2.0 * np.pi * (clock_h - params.peak_h) / 24.0)
    # channels on the first axis (C order), so that every row fed to exp is contiguous
    x = np.array(params.baseline.T, order="C")
    x += CIRCADIAN_AMP[:, None] * circ
    x += state.noise.T
    x += state.drift.T
    x += EPISODE_EFFECT[:, None] * state.ep_level
    apy = ANTIPYRETIC_GAIN * state.apy_effect
    x[TEMP] -= apy
    fever = x[TEMP] - params.baseline[:, TEMP] - CIRCADIAN_AMP[TEMP] * circ
    x[HR] += HR_PER_DEGREE * fever
    support = params.fluid_gain * state.fluid_effect + state.pressor
    x[SBP] += support - ANTIPYRETIC_SBP * apy
    x[DBP] += support - ANTIPYRETIC_DBP * apy
    x[OXY] += state.o2_effect
    np.clip(x, LOWER[:, None], UPPER[:, None], out=x)
    x[SBP] = np.maximum(x[SBP], x[DBP] + 15.0)
    x[SPO2] = saturation(np.exp(x[OXY]))
    mbp = x[DBP] + (x[SBP] - x[DBP]) / 3.0
    rising = (state.ep_phase == 1) & (state.ep_level > ALERT_LEVEL * state.ep_severity)
    alert = rising | (mbp < MAP_HYPOTENSION) | (x[SPO2] < HYPOXAEMIA)
    return Observation(
        values=np.ascontiguousarray(x.T), mbp=mbp, level=state.ep_level.copy(), alert=alert
    )


def _logistic(level: np.ndarray, severity: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Move a logistic curve with ceiling ``severity`` by one step: factor exp(-r dt) rises,
    exp(+r dt) falls. Without an episode (level = severity = 0) it stays 0."""
    ratio = np.divide(severity, level, out=np.ones_like(level), where=level > 0.0)
    return severity / (1.0 + (ratio - 1.0) * factor)


def step(params: Params, state: State, z: np.ndarray, u: np.ndarray) -> tuple[State, Observation]:
    """One 5-minute transition of every stay, and the new state's observation.

    ``z``: (B, N_NORMALS) standard normals; ``u``: (B, N_UNIFORMS) uniforms on [0, 1). The new
    observation equals ``observe(params, new_state)``: treatment decisions made from it only
    change doses, targets and timers, which act on the signals from the next step on.
    """
    dt = float(STEP_MIN)
    k = state.k + 1
    noise = _PHI_NOISE * state.noise + _INNOV_NOISE * _correlate(z[:, :N_SIGNALS])
    drift = _PHI_DRIFT * state.drift + _INNOV_DRIFT * _correlate(z[:, N_SIGNALS:])

    # treatment effect compartments follow their doses/targets; doses wear off
    fluid_effect = state.fluid_effect + (state.fluid_dose - state.fluid_effect) * _A_FLUID_ON
    fluid_dose = state.fluid_dose * _D_FLUID_OFF
    pressor = state.pressor + (state.pressor_target - state.pressor) * _A_PRESSOR
    apy_effect = state.apy_effect + (state.apy_dose - state.apy_effect) * _A_APY_ON
    apy_dose = state.apy_dose * _D_APY_OFF
    o2_effect = state.o2_effect + (state.o2_set - state.o2_effect) * _A_O2

    # episode: logistic rise/plateau/recovery, phase changes by level or hazard
    phase, sev = state.ep_phase, state.ep_severity
    rate_h = state.ep_rate * (dt / 60.0)
    level = _logistic(state.ep_level, sev, np.exp(np.where(phase == 3, rate_h, -rate_h)))
    ep_time = state.ep_time + dt
    u_ep = u[:, U_EPISODE]
    t_h = k * (dt / 60.0)
    onset_h = 1.0 - np.exp(
        -(ONSET_EARLY_PER_H * np.exp(-t_h / ONSET_TAU_H) + ONSET_LATE_PER_H) * (dt / 60.0)
    )
    onset = (phase == 0) & params.septic & (ep_time >= REFRACTORY_MIN) & (u_ep < onset_h)
    exit_h = np.where(ep_time >= PLATEAU_MIN_MIN, hazard(PLATEAU_EXIT_MEAN_MIN), 0.0)
    to_recovery = (phase == 2) & (u_ep < exit_h)
    to_plateau = (phase == 1) & (level >= PLATEAU_LEVEL * sev)
    ended = (phase == 3) & (level < END_LEVEL * sev)
    # u / hazard is a fresh uniform given the event: it sets the new rate
    w_onset = u_ep / np.maximum(onset_h, 1e-300)
    w_exit = u_ep / np.maximum(exit_h, 1e-300)
    severity = SEVERITY[0] + (SEVERITY[1] - SEVERITY[0]) * u[:, U_SEVERITY]
    rise = RISE_RATE_PER_H[0] + (RISE_RATE_PER_H[1] - RISE_RATE_PER_H[0]) * w_onset
    recover = RECOVERY_RATE_PER_H[0] + (RECOVERY_RATE_PER_H[1] - RECOVERY_RATE_PER_H[0]) * w_exit
    new_phase = np.where(onset, 1, np.where(to_plateau, 2, np.where(to_recovery, 3, phase)))
    new_phase = np.where(ended, 0, new_phase).astype(np.int8)
    changed = onset | to_plateau | to_recovery | ended
    sev = np.where(onset, severity, np.where(ended, 0.0, sev))
    level = np.where(onset, ONSET_LEVEL * severity, np.where(ended, 0.0, level))
    rate = np.where(onset, rise, np.where(to_recovery, recover, state.ep_rate))
    rate = np.where(ended, 0.0, rate)

    new = State(
        k=k,
        noise=noise,
        drift=drift,
        ep_phase=new_phase,
        ep_time=np.where(changed, 0.0, ep_time),
        ep_severity=sev,
        ep_level=level,
        ep_rate=rate,
        hypo_wait=state.hypo_wait,
        fluid_dose=fluid_dose,
        fluid_effect=fluid_effect,
        fluid_recent=state.fluid_recent * _D_FLUID_RECENT,
        pressor_target=state.pressor_target,
        pressor=pressor,
        fever_wait=state.fever_wait,
        apy_dose=apy_dose,
        apy_effect=apy_effect,
        since_apy=state.since_apy + dt,
        hypox_wait=state.hypox_wait,
        o2_set=state.o2_set,
        o2_effect=o2_effect,
    )
    obs = observe(params, new)
    decide_treatments(new, obs, u)
    return new, obs


def draw_innovations(rng: np.random.Generator, n_steps: int, n: int) -> tuple[np.ndarray, ...]:
    """Innovations for ``n_steps`` transitions of ``n`` stays: normals (T, n, N_NORMALS) and
    uniforms (T, n, N_UNIFORMS), drawn in single precision (twice as fast, plenty for noise;
    everything computed from them is double)."""
    z = rng.standard_normal((n_steps, n, N_NORMALS), dtype=np.float32)
    return z, rng.random((n_steps, n, N_UNIFORMS), dtype=np.float32)


def simulate(
    params: Params, start: State, z: np.ndarray, u: np.ndarray, *, keep_states: bool = True
) -> Trajectory:
    """Run :func:`step` over innovations ``z`` (T, B, N_NORMALS) and ``u`` (T, B, N_UNIFORMS)
    from ``start``: a trajectory of T + 1 grid points (the first is ``start``).
    ``keep_states=False`` keeps only the first and last state (saves memory)."""
    states = [start]
    obs = [observe(params, start)]
    state = start
    for t in range(z.shape[0]):
        state, o = step(params, state, z[t], u[t])
        if keep_states:
            states.append(state)
        obs.append(o)
    if not keep_states and z.shape[0]:
        states.append(state)
    return Trajectory(params=params, states=State.stack(states), obs=Observation.stack(obs))


def draw_group(
    rng: np.random.Generator,
    baselines: np.ndarray,
    n_points: int,
    tod0_min: np.ndarray,
    septic: np.ndarray,
) -> tuple[Params, State, np.ndarray, np.ndarray]:
    """Everything random about a group of stays, in the generator's order: parameters, the
    initial state and the innovations of ``n_points - 1`` steps."""
    params = draw_params(rng, baselines, tod0_min, septic)
    start = initial_state(rng, params)
    z, u = draw_innovations(rng, n_points - 1, baselines.shape[0])
    return params, start, z, u


def simulate_stays(
    rng: np.random.Generator,
    baselines: np.ndarray,
    n_points: int,
    tod0_min: np.ndarray,
    septic: np.ndarray,
    *,
    keep_states: bool = True,
) -> Trajectory:
    """Simulate ``n_points`` grid points of every stay from :func:`draw_group`'s draws: what
    the generator does per group."""
    params, start, z, u = draw_group(rng, baselines, n_points, tod0_min, septic)
    return simulate(params, start, z, u, keep_states=keep_states)
