"""The corpus's shape generators: standardised series (mean 0, std 1) of one kind each, keyed by
name in :data:`GENERATORS` (``kernel_synth``, ``ar``, ``trend``, ``seasonal``, ``level_shift``,
``spikes``, ``random_walk``, ``mixture``), and their default mixing weights.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vitalfm.synthetic.corpus_kernels import (
    random_kernel,
    rbf_kernel,
    sample_gaussian_process,
    time_grid,
)

Generator = Callable[[np.random.Generator, int], np.ndarray]
"""A shape generator: ``(rng, length)`` -> a standardised series of ``length`` steps."""

MAX_AR_ORDER = 5
AR_BURN_IN = 200
# periods in time steps the seasonal generator prefers (it also draws random ones)
SEASONAL_PERIODS: tuple[float, ...] = (4, 5, 6, 7, 10, 12, 15, 24, 30, 48, 52, 60, 96, 168, 288)


def _standardize(values: np.ndarray) -> np.ndarray:
    """Mean 0, std 1; a (near) constant series is returned centred, not blown up."""
    centred = values - values.mean()
    std = centred.std()
    return centred / std if std > 1e-12 else centred


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _white_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Gaussian noise, or heavy-tailed Student-t noise one time in four."""
    if rng.random() < 0.25:
        return rng.standard_t(df=float(rng.uniform(2.5, 6.0)), size=length)
    return rng.standard_normal(length)


def kernel_synth(rng: np.random.Generator, length: int) -> np.ndarray:
    """A Gaussian-process sample under a random KernelSynth kernel."""
    return _standardize(sample_gaussian_process(rng, length, random_kernel(rng, length)))


def stable_ar_coefficients(rng: np.random.Generator, order: int) -> np.ndarray:
    """AR coefficients ``phi`` (x_t = sum_k phi_k x_{t-k} + e_t) of a stationary process.

    Drawn through the roots of the characteristic polynomial, all strictly inside the unit
    circle (real roots or complex-conjugate pairs), which guarantees stationarity.
    """
    roots: list[complex] = []
    while len(roots) < order:
        modulus = rng.uniform(0.05, 0.97)
        if order - len(roots) >= 2 and rng.random() < 0.5:
            angle = rng.uniform(0.05, np.pi - 0.05)
            root = modulus * np.exp(1j * angle)
            roots += [root, np.conj(root)]
        else:
            roots.append(modulus * (1.0 if rng.random() < 0.7 else -1.0))
    polynomial = np.real(np.poly(roots))  # z^p - phi_1 z^{p-1} - ... - phi_p
    return -polynomial[1:]


def ar_process(rng: np.random.Generator, length: int) -> np.ndarray:
    order = int(rng.integers(1, MAX_AR_ORDER + 1))
    phi = stable_ar_coefficients(rng, order)
    innovations = _white_noise(rng, length + AR_BURN_IN).tolist()
    # A plain-float loop: numpy call overhead per step would dominate at these tiny orders.
    oldest_first = phi[::-1].tolist()
    values = [0.0] * len(innovations)
    for step in range(order, len(values)):
        total = innovations[step]
        for weight, past in zip(oldest_first, values[step - order : step], strict=True):
            total += weight * past
        values[step] = total
    return _standardize(np.asarray(values[AR_BURN_IN:]))


def trend(rng: np.random.Generator, length: int) -> np.ndarray:
    """Linear, piecewise linear, exponential or saturating (logistic / 1 - e^-t) trend."""
    t = time_grid(length)
    kind = rng.integers(4)
    if kind == 0:
        shape = rng.normal() * t
    elif kind == 1:
        n_knots = int(rng.integers(1, 5))
        knots = np.sort(rng.uniform(0.05, 0.95, size=n_knots))
        slopes = rng.normal(size=n_knots + 1)
        shape = slopes[0] * t
        for knot, slope_change in zip(knots, np.diff(slopes), strict=True):
            shape = shape + slope_change * np.clip(t - knot, 0.0, None)
    elif kind == 2:
        rate = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 5.0)
        shape = np.exp(rate * t)
    else:
        centre = rng.uniform(0.0, 1.0)
        steepness = _log_uniform(rng, 3.0, 60.0)
        if rng.random() < 0.5:
            shape = 1.0 / (1.0 + np.exp(-steepness * (t - centre)))
        else:
            shape = 1.0 - np.exp(-steepness * np.clip(t - centre, 0.0, None))
        if rng.random() < 0.5:
            shape = -shape
    shape = _standardize(shape)
    return _standardize(shape + rng.uniform(0.0, 0.15) * rng.standard_normal(length))


def _sinusoids(rng: np.random.Generator, length: int) -> np.ndarray:
    steps = np.arange(length, dtype=np.float64)
    typical = [p for p in SEASONAL_PERIODS if p <= length / 1.5]
    total = np.zeros(length)
    for _ in range(int(rng.integers(1, 4))):
        if typical and rng.random() < 0.6:
            period = float(rng.choice(typical))
        else:
            period = _log_uniform(rng, 3.0, max(4.0, length / 1.5))
        amplitude = _log_uniform(rng, 0.2, 1.0)
        for harmonic in range(1, int(rng.integers(1, 4)) + 1):
            phase = rng.uniform(0.0, 2.0 * np.pi)
            total += amplitude / harmonic * np.sin(2.0 * np.pi * harmonic * steps / period + phase)
    return total


def seasonal(rng: np.random.Generator, length: int) -> np.ndarray:
    """Sum of 1-3 sinusoids (typical periods or random ones) with up to 3 harmonics, plus noise."""
    shape = _standardize(_sinusoids(rng, length))
    return _standardize(shape + rng.uniform(0.0, 0.3) * rng.standard_normal(length))


def level_shift(rng: np.random.Generator, length: int) -> np.ndarray:
    """Piecewise constant level with 1-4 abrupt shifts, plus noise."""
    n_shifts = int(rng.integers(1, 5))
    positions = np.sort(rng.choice(np.arange(1, length), size=n_shifts, replace=False))
    levels = np.cumsum(rng.normal(size=n_shifts + 1))
    shape = np.repeat(levels, np.diff(np.concatenate([[0], positions, [length]])))
    if np.ptp(shape) < 1e-6:
        shape[positions[0] :] += 1.0
    noise = rng.uniform(0.02, 0.3) * np.ptp(shape) * rng.standard_normal(length)
    return _standardize(shape + noise)


def spikes(rng: np.random.Generator, length: int) -> np.ndarray:
    """A quiet base (noise, AR or smooth GP) with a few large outliers, some decaying."""
    base_kind = rng.integers(3)
    if base_kind == 0:
        base = rng.standard_normal(length)
    elif base_kind == 1:
        base = ar_process(rng, length)
    else:
        base = _standardize(sample_gaussian_process(rng, length, rbf_kernel(0.1)))
    n_spikes = int(rng.integers(1, max(2, length // 32) + 1))
    positions = rng.integers(0, length, size=n_spikes)
    magnitudes = rng.choice([-1.0, 1.0], size=n_spikes) * rng.uniform(4.0, 12.0, n_spikes)
    steps = np.arange(length)
    for position, magnitude in zip(positions, magnitudes, strict=True):
        if rng.random() < 0.3:
            decay = rng.uniform(1.0, 10.0)
            after = steps >= position
            base[after] += magnitude * np.exp(-(steps[after] - position) / decay)
        else:
            base[position] += magnitude
    return _standardize(base)


def random_walk(rng: np.random.Generator, length: int) -> np.ndarray:
    """Cumulative sum of Gaussian or heavy-tailed steps, with an optional drift."""
    steps = _white_noise(rng, length)
    if rng.random() < 0.3:
        steps = steps + rng.normal(scale=0.3)
    return _standardize(np.cumsum(steps))


def mixture(rng: np.random.Generator, length: int) -> np.ndarray:
    """Trend + seasonality + noise, each optional and randomly weighted, seasonality sometimes
    multiplicative, with an occasional level shift or spikes on top."""
    noise_kind = rng.integers(3)
    if noise_kind == 0:
        noise = rng.standard_normal(length)
    elif noise_kind == 1:
        noise = ar_process(rng, length)
    else:
        noise = kernel_synth(rng, length)
    has_trend, has_season = rng.random(2) < np.array([0.7, 0.8])
    if not (has_trend or has_season):
        has_season = True
    total = rng.uniform(0.05, 0.6) * noise
    season = seasonal(rng, length) if has_season else np.zeros(length)
    if has_trend:
        slope = trend(rng, length) * rng.uniform(0.3, 2.0)
        if has_season and rng.random() < 0.3:
            # Multiplicative seasonality: the amplitude follows a positive version of the trend.
            envelope = 1.0 + (slope - slope.min()) / max(np.ptp(slope), 1e-12)
            total = total + slope + rng.uniform(0.2, 1.0) * envelope * season
        else:
            total = total + slope + rng.uniform(0.2, 1.5) * season
    else:
        total = total + rng.uniform(0.2, 1.5) * season
    extra = rng.random()
    if extra < 0.15:
        total = total + rng.uniform(0.3, 2.0) * level_shift(rng, length)
    elif extra < 0.3:
        total = total + rng.uniform(0.1, 0.5) * spikes(rng, length)
    return _standardize(total)


_SHAPE_GENERATORS: dict[str, Generator] = {
    "kernel_synth": kernel_synth,
    "ar": ar_process,
    "trend": trend,
    "seasonal": seasonal,
    "level_shift": level_shift,
    "spikes": spikes,
    "random_walk": random_walk,
    "mixture": mixture,
}

# GP samples and mixtures are the richest sources, so they get twice the share of the others.
DEFAULT_WEIGHTS: dict[str, float] = {name: 1.0 for name in _SHAPE_GENERATORS} | {
    "kernel_synth": 2.0,
    "mixture": 2.0,
}


def _as_float32(generator: Generator) -> Generator:
    def wrapped(rng: np.random.Generator, length: int) -> np.ndarray:
        return generator(rng, length).astype(np.float32)

    wrapped.__name__ = generator.__name__
    wrapped.__doc__ = generator.__doc__
    return wrapped


GENERATORS: dict[str, Generator] = {
    name: _as_float32(func) for name, func in _SHAPE_GENERATORS.items()
}
"""Generator name -> function of ``(rng, length)`` returning a standardised float32 series."""
