"""Latent vital-sign trajectories of ICU stays on a 5-minute grid, vectorised over stays.

Model, per stay and vital:  value(t) = baseline + circadian(t) + OU noise(t) + episode(t) * effect

* baseline: per patient, with a small per-stay perturbation (drawn by the caller);
* circadian: a 24 h cosine with a per-stay peak time in the late afternoon;
* noise: an Ornstein-Uhlenbeck process sampled exactly on the grid (an AR(1)), with correlated
  innovations (SBP with DBP, HR with RR);
* episodes (sepsis stays only): a deterioration profile in [0, 1] (smooth rise, plateau,
  slower recovery) that raises HR, RR and temperature and lowers blood pressure and SpO2.

MAP is not simulated independently: it is DBP + (SBP - DBP) / 3, as a monitor computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_MIN = 5
# order of the simulated vitals (axis 1 of the arrays)
HR, SBP, DBP, RR, SPO2, TEMP = range(6)
N_SIGNALS = 6

# population baseline mean and between-patient SD
BASELINE_MEAN = np.array([86.0, 121.0, 62.0, 18.5, 97.0, 36.9])
BASELINE_SD = np.array([12.0, 14.0, 8.0, 3.0, 1.3, 0.3])
# circadian amplitude (peak-to-mean)
CIRCADIAN_AMP = np.array([4.0, 5.0, 3.0, 0.8, 0.2, 0.3])
# OU noise: stationary SD and correlation time (minutes)
NOISE_SD = np.array([6.0, 9.0, 5.0, 2.5, 1.0, 0.2])
NOISE_TAU_MIN = np.array([60.0, 90.0, 90.0, 45.0, 60.0, 180.0])
# deterioration effect at full severity
EPISODE_EFFECT = np.array([32.0, -30.0, -14.0, 9.0, -5.0, 1.8])
# physiological limits of the latent state (measurement artefacts are added later)
LOWER = np.array([30.0, 55.0, 25.0, 5.0, 70.0, 34.0])
UPPER = np.array([200.0, 230.0, 140.0, 50.0, 100.0, 41.5])

_CORR = np.eye(N_SIGNALS)
_CORR[SBP, DBP] = _CORR[DBP, SBP] = 0.75
_CORR[HR, RR] = _CORR[RR, HR] = 0.4
_CHOL = np.linalg.cholesky(_CORR)


def draw_baselines(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-patient baselines, shape (n, 6); SBP at least 25 mmHg above DBP."""
    base = BASELINE_MEAN + BASELINE_SD * rng.standard_normal((n, N_SIGNALS))
    base[:, SBP] = np.maximum(base[:, SBP], base[:, DBP] + 25.0)
    base[:, SPO2] = np.minimum(base[:, SPO2], 99.5)
    return base


@dataclass
class Latent:
    """Latent signals for a group of stays, padded to the longest stay.

    ``values``: (S, 6, T) in HR, SBP, DBP, RR, SpO2, temperature (°C) order;
    ``mbp``: (S, T); ``profile``: (S, T) deterioration in [0, 1]; ``n_steps``: (S,) valid
    grid points per stay (grid point k is ``k * STEP_MIN`` minutes after intime).
    """

    values: np.ndarray
    mbp: np.ndarray
    profile: np.ndarray
    n_steps: np.ndarray


def episode_profile(
    rng: np.random.Generator, septic: np.ndarray, length_min: np.ndarray, n_grid: int
) -> np.ndarray:
    """Deterioration profiles (S, T): 1-2 episodes per septic stay, zero elsewhere."""
    s = septic.size
    t = np.arange(n_grid) * float(STEP_MIN)
    profile = np.zeros((s, n_grid))
    n_ep = np.where(septic, 1 + (rng.random(s) < 0.35), 0)
    for e in range(2):
        # draws are made for every stay so the stream does not depend on which are septic
        onset_frac = rng.uniform(0.0, 0.55, s) if e == 0 else rng.uniform(0.35, 0.8, s)
        rise = rng.uniform(60.0, 240.0, s)
        plateau = rng.uniform(180.0, 720.0, s)
        recovery = rng.uniform(240.0, 960.0, s)
        severity = rng.uniform(0.6, 1.0, s)
        active = np.flatnonzero(n_ep > e)
        if active.size == 0:
            continue
        on = (onset_frac * length_min)[active, None]
        down = on + (rise + plateau)[active, None]
        # smooth rise (half cosine), plateau, slower smooth recovery
        up = np.clip((t - on) / rise[active, None], 0.0, 1.0)
        fall = np.clip((t - down) / recovery[active, None], 0.0, 1.0)
        p = (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 + 0.5 * np.cos(np.pi * fall))
        profile[active] = np.maximum(profile[active], p * severity[active, None])
    return profile


_AR_BLOCK = 48


def ar1(z: np.ndarray, tau_min: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Stationary OU noise sampled every STEP_MIN minutes, shape (S, V, T), from standard
    normal draws ``z`` of that shape: x_k = phi x_(k-1) + sqrt(1 - phi^2) sd e_k, where the
    innovations e are ``z`` correlated across vitals by :data:`_CORR`.

    Solved block by block with a lower-triangular matrix of powers of phi (exact, vectorised)
    instead of a Python loop over thousands of grid points.
    """
    s, v, t = z.shape
    phi = np.exp(-STEP_MIN / tau_min)  # (V,)
    e = np.tensordot(_CHOL, z, axes=([1], [1]))  # (V, S, T): batched matmuls below use BLAS
    w = e * (np.sqrt(1.0 - phi**2) * sd)[:, None, None]
    w[:, :, 0] = e[:, :, 0] * sd[:, None]  # stationary start
    lag = np.arange(_AR_BLOCK)[:, None] - np.arange(_AR_BLOCK)[None, :]
    powers = phi[:, None, None] ** np.maximum(lag, 0)[None]
    upper = np.where(lag[None] >= 0, powers, 0.0).transpose(0, 2, 1)  # (V, B, B), [j, i]
    carry_gain = phi[:, None] ** np.arange(1, _AR_BLOCK + 1)[None, :]  # (V, B)
    out = np.empty_like(w)
    carry = np.zeros((v, s))
    for k0 in range(0, t, _AR_BLOCK):
        k1 = min(t, k0 + _AR_BLOCK)
        b = k1 - k0
        block = w[:, :, k0:k1] @ upper[:, :b, :b]
        block += carry[:, :, None] * carry_gain[:, None, :b]
        out[:, :, k0:k1] = block
        carry = block[:, :, -1]
    return out.transpose(1, 0, 2)


def simulate(
    rng: np.random.Generator,
    baselines: np.ndarray,
    length_min: np.ndarray,
    tod_start_min: np.ndarray,
    septic: np.ndarray,
) -> Latent:
    """Latent trajectories for S stays.

    ``baselines`` (S, 6); ``length_min`` stay lengths in minutes; ``tod_start_min`` the clock
    time of intime in minutes after midnight; ``septic`` which stays have episodes.
    """
    s = baselines.shape[0]
    n_steps = (length_min // STEP_MIN).astype(np.int64) + 1
    n_grid = int(n_steps.max())
    t = np.arange(n_grid) * float(STEP_MIN)

    # circadian: peak around 16-18 h; temperature and HR peak together
    peak_h = rng.normal(17.0, 1.5, s)
    clock_h = (tod_start_min[:, None] + t[None, :]) / 60.0
    circ = np.cos(2.0 * np.pi * (clock_h - peak_h[:, None]) / 24.0)  # (S, T)

    noise = ar1(rng.standard_normal((s, N_SIGNALS, n_grid)), NOISE_TAU_MIN, NOISE_SD)

    profile = episode_profile(rng, septic, length_min, n_grid)
    values = (
        baselines[:, :, None]
        + CIRCADIAN_AMP[None, :, None] * circ[:, None, :]
        + noise
        + EPISODE_EFFECT[None, :, None] * profile[:, None, :]
    )
    values = np.clip(values, LOWER[None, :, None], UPPER[None, :, None])
    values[:, SBP] = np.maximum(values[:, SBP], values[:, DBP] + 15.0)
    mbp = values[:, DBP] + (values[:, SBP] - values[:, DBP]) / 3.0
    return Latent(values=values, mbp=mbp, profile=profile, n_steps=n_steps)
