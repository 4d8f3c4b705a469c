"""A generic synthetic pretraining corpus (not vital signs) for the stand-in foundation models.

No pretrained weights can be downloaded, so the small stand-in models are pretrained on this
corpus first and adapted to vital signs afterwards: the study can then show a model pretrained
out of domain. The corpus mixes:

* ``kernel_synth``: Gaussian-process samples whose kernel is a random sum/product of up to
  :data:`MAX_KERNELS` kernels drawn from a bank (RBF, periodic, rational quadratic, linear,
  white noise, constant), after KernelSynth in the Chronos paper (Ansari et al., 2024);
* ``ar``: stable AR(p) processes; ``trend``: linear, piecewise linear, exponential, saturating;
  ``seasonal``: sums of sinusoids with harmonics; ``level_shift``; ``spikes``;
  ``random_walk``; ``mixture``: trend + seasonality + noise, sometimes with shifts or spikes.

Every generator returns a standardised shape (mean 0, std 1); :func:`generate_corpus` then gives
each series a random level and scale spanning several orders of magnitude (negative levels too),
so models must learn scale invariance, and optionally cuts NaN gaps into it.

>>> corpus = generate_corpus(CorpusConfig(n_series=100, length=128, seed=3))
>>> corpus.shape, corpus.dtype
((100, 128), dtype('float32'))
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from vitalfm.errors import ConfigError

Generator = Callable[[np.random.Generator, int], np.ndarray]
Kernel = Callable[[np.ndarray], np.ndarray]
"""A covariance function: regular time grid of shape [L] -> covariance matrix [L, L]."""

MIN_LENGTH = 8
MAX_KERNELS = 5  # J in KernelSynth
MAX_GP_POINTS = 1024  # longer series are sampled on this many points and interpolated
MAX_AR_ORDER = 5
AR_BURN_IN = 200

# Periods in time steps. The first group is the KernelSynth bank (hourly, daily, weekly, ...
# grids); the second adds periods typical of minute and hour grids of monitoring data.
KERNEL_PERIODS: tuple[float, ...] = (
    24, 48, 96, 168, 336, 672, 7, 14, 30, 60, 365, 365.25, 4, 26, 52, 6, 12, 40, 10,
    5, 15, 120, 1440,
)  # fmt: skip
SEASONAL_PERIODS: tuple[float, ...] = (4, 5, 6, 7, 10, 12, 15, 24, 30, 48, 52, 60, 96, 168, 288)

# Level and scale given to every standardised shape (log10 ranges).
LOG10_SCALE_RANGE = (-2.0, 3.0)
LOG10_LEVEL_RATIO_RANGE = (-1.0, 2.0)  # |level| / scale
NEGATIVE_LEVEL_PROBABILITY = 0.25
ZERO_LEVEL_PROBABILITY = 0.15

_MAX_DRAWS = 5  # redraws of a degenerate (constant or non-finite) shape before giving up


# --- small helpers ---------------------------------------------------------------------------


def _standardize(values: np.ndarray) -> np.ndarray:
    """Mean 0, std 1; a (near) constant series is returned centred, not blown up."""
    centred = values - values.mean()
    std = centred.std()
    return centred / std if std > 1e-12 else centred


def _time_grid(length: int) -> np.ndarray:
    """Time in units of the window, so a period of ``p`` steps is ``p / length``."""
    return np.arange(length, dtype=np.float64) / length


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _white_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Gaussian noise, or heavy-tailed Student-t noise one time in four."""
    if rng.random() < 0.25:
        return rng.standard_t(df=float(rng.uniform(2.5, 6.0)), size=length)
    return rng.standard_normal(length)


# --- KernelSynth -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _lag_index(n_points: int) -> np.ndarray:
    steps = np.arange(n_points)
    index = np.abs(np.subtract.outer(steps, steps))
    index.flags.writeable = False
    return index


def _stationary(profile: Callable[[np.ndarray], np.ndarray]) -> Kernel:
    """A kernel k(s, t) = profile(|s - t|) on a regular time grid: the profile is evaluated
    once per lag and spread over the matrix, far cheaper than once per matrix entry."""

    def covariance(t: np.ndarray) -> np.ndarray:
        return profile(np.abs(t - t[0]))[_lag_index(t.size)]

    return covariance


def rbf_kernel(length_scale: float) -> Kernel:
    return _stationary(lambda lag: np.exp(-0.5 * (lag / length_scale) ** 2))


def periodic_kernel(period: float, length_scale: float = 1.0) -> Kernel:
    """Exp-sine-squared kernel; ``period`` in the units of the time grid."""
    return _stationary(
        lambda lag: np.exp(-2.0 * (np.sin(np.pi * lag / period) / length_scale) ** 2)
    )


def rational_quadratic_kernel(alpha: float, length_scale: float = 1.0) -> Kernel:
    return _stationary(lambda lag: (1.0 + lag**2 / (2.0 * alpha * length_scale**2)) ** -alpha)


def linear_kernel(offset: float) -> Kernel:
    def covariance(t: np.ndarray) -> np.ndarray:
        return offset + np.multiply.outer(t, t)

    return covariance


def white_noise_kernel(noise_level: float) -> Kernel:
    def covariance(t: np.ndarray) -> np.ndarray:
        return noise_level * np.eye(t.size)

    return covariance


def constant_kernel(value: float = 1.0) -> Kernel:
    def covariance(t: np.ndarray) -> np.ndarray:
        return np.full((t.size, t.size), value)

    return covariance


def kernel_bank(length: int) -> list[tuple[str, Kernel]]:
    """The KernelSynth bank for a series of ``length`` steps (periods given in steps)."""
    bank: list[tuple[str, Kernel]] = []
    bank += [(f"linear({c})", linear_kernel(c)) for c in (0.0, 1.0, 10.0)]
    bank += [(f"rbf({s})", rbf_kernel(s)) for s in (0.1, 1.0, 10.0)]
    bank += [(f"periodic({p})", periodic_kernel(p / length)) for p in KERNEL_PERIODS]
    bank += [(f"rq({a})", rational_quadratic_kernel(a)) for a in (0.1, 1.0, 10.0)]
    bank += [(f"white({w})", white_noise_kernel(w)) for w in (0.1, 1.0)]
    bank += [("constant", constant_kernel())]
    return bank


def sample_gaussian_process(
    rng: np.random.Generator, length: int, kernel: Kernel, jitter: float = 1e-6
) -> np.ndarray:
    """One zero-mean GP sample on ``length`` steps, through a Cholesky factor with jitter.

    The jitter grows tenfold while the factorisation fails (products of smooth kernels are
    numerically singular); an eigendecomposition is the last resort. Series longer than
    :data:`MAX_GP_POINTS` are sampled on a coarser grid and linearly interpolated (which
    smooths white-noise components), to keep the factorisation at most 1024 x 1024.
    """
    n_points = min(length, MAX_GP_POINTS)
    if length > n_points:
        t = np.linspace(0.0, (length - 1) / length, n_points)
    else:
        t = _time_grid(length)
    covariance = kernel(t)
    diagonal_scale = max(float(np.mean(np.diag(covariance))), 1e-12)
    normal = rng.standard_normal(n_points)
    sample: np.ndarray | None = None
    level = jitter
    while level <= 1e-1 and sample is None:
        try:
            factor = np.linalg.cholesky(covariance + level * diagonal_scale * np.eye(n_points))
            sample = factor @ normal
        except np.linalg.LinAlgError:
            level *= 10.0
    if sample is None:
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        sample = eigenvectors @ (np.sqrt(np.clip(eigenvalues, 0.0, None)) * normal)
    if length > n_points:
        sample = np.interp(_time_grid(length), t, sample)
    return sample


def random_kernel(rng: np.random.Generator, length: int) -> Kernel:
    """Up to :data:`MAX_KERNELS` bank kernels joined by random ``+`` or ``*`` (KernelSynth).

    A draw of constant kernels only would give a flat series, so it is redrawn.
    """
    bank = kernel_bank(length)
    while True:
        n_kernels = int(rng.integers(1, MAX_KERNELS + 1))
        chosen = rng.integers(0, len(bank), size=n_kernels)
        if any(bank[i][0] != "constant" for i in chosen):
            break
    operators = rng.random(n_kernels - 1) < 0.5  # True: sum, False: product
    kernels = [bank[i][1] for i in chosen]

    def covariance(t: np.ndarray) -> np.ndarray:
        total = kernels[0](t)
        for is_sum, kernel in zip(operators, kernels[1:], strict=True):
            total = total + kernel(t) if is_sum else total * kernel(t)
        return total

    return covariance


def kernel_synth(rng: np.random.Generator, length: int) -> np.ndarray:
    return _standardize(sample_gaussian_process(rng, length, random_kernel(rng, length)))


# --- classical components --------------------------------------------------------------------


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
    t = _time_grid(length)
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


# --- the corpus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusConfig:
    """What to generate. ``weights`` maps generator names to mixing weights; names left out
    get weight 0; ``None`` means :data:`DEFAULT_WEIGHTS`."""

    n_series: int = 4000
    length: int = 256
    seed: int = 0
    missing_probability: float = 0.1  # chance a series gets NaN gaps
    weights: Mapping[str, float] | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _validate(config: CorpusConfig) -> tuple[list[str], np.ndarray]:
    """Check ``config``; return the generator names and their mixing probabilities."""
    if not _is_int(config.n_series) or config.n_series < 1:
        raise ConfigError(
            f"corpus n_series must be a whole number >= 1, got {config.n_series!r}",
            "set n_series to the number of series to generate, e.g. 4000",
        )
    if not _is_int(config.length) or config.length < MIN_LENGTH:
        raise ConfigError(
            f"corpus length must be a whole number >= {MIN_LENGTH}, got {config.length!r}",
            f"set length to the series length in time steps, at least {MIN_LENGTH} (e.g. 256)",
        )
    if not _is_int(config.seed) or config.seed < 0:
        raise ConfigError(
            f"corpus seed must be a whole number >= 0, got {config.seed!r}",
            "set seed to a non-negative integer such as 0",
        )
    probability = config.missing_probability
    if not isinstance(probability, numbers.Real) or not 0.0 <= probability <= 1.0:
        raise ConfigError(
            f"corpus missing_probability must lie in [0, 1], got {probability!r}",
            "set missing_probability to the chance that a series gets NaN gaps, e.g. 0.1",
        )
    weights = DEFAULT_WEIGHTS if config.weights is None else dict(config.weights)
    unknown = sorted(str(name) for name in weights if name not in GENERATORS)
    if unknown:
        raise ConfigError(
            f"corpus weights name unknown generators: {', '.join(unknown)}",
            f"use only these generator names: {', '.join(GENERATORS)}",
        )
    bad = {
        name: value
        for name, value in weights.items()
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0
    }
    if bad:
        raise ConfigError(
            f"corpus weights must be finite numbers >= 0, got {bad!r}",
            "give every generator a non-negative weight (0 leaves it out)",
        )
    if sum(weights.values()) <= 0:
        raise ConfigError(
            "corpus weights are all zero, so no generator can be chosen",
            "give at least one generator a positive weight",
        )
    names = [name for name in GENERATORS if weights.get(name, 0.0) > 0]
    probabilities = np.array([weights[name] for name in names], dtype=np.float64)
    return names, probabilities / probabilities.sum()


def random_level_and_scale(rng: np.random.Generator, shape: np.ndarray) -> np.ndarray:
    """Map a standardised shape to a random scale (log-uniform over :data:`LOG10_SCALE_RANGE`)
    and level (zero, or +/- scale times a log-uniform ratio), in float64."""
    scale = 10.0 ** rng.uniform(*LOG10_SCALE_RANGE)
    draw = rng.random()
    if draw < ZERO_LEVEL_PROBABILITY:
        level = 0.0
    else:
        level = scale * 10.0 ** rng.uniform(*LOG10_LEVEL_RATIO_RANGE)
        if draw < ZERO_LEVEL_PROBABILITY + NEGATIVE_LEVEL_PROBABILITY:
            level = -level
    return level + scale * shape.astype(np.float64)


def inject_missing(rng: np.random.Generator, series: np.ndarray) -> np.ndarray:
    """Cut 1-4 NaN runs into ``series`` (in place), together at most half of it."""
    length = series.size
    budget = length // 2
    for _ in range(int(rng.integers(1, 5))):
        run = int(min(budget, 1 + rng.geometric(p=min(1.0, 8.0 / length))))
        if run < 1:
            break
        start = int(rng.integers(0, length - run + 1))
        series[start : start + run] = np.nan
        budget -= run
    return series


def _pick_generator(rng: np.random.Generator, names: list[str], probabilities: np.ndarray) -> str:
    return names[int(rng.choice(len(names), p=probabilities))]


def _series_rng(config: CorpusConfig, index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, index])


def series_sources(config: CorpusConfig) -> list[str]:
    """The generator name behind each row of ``generate_corpus(config)``."""
    names, probabilities = _validate(config)
    return [
        _pick_generator(_series_rng(config, index), names, probabilities)
        for index in range(config.n_series)
    ]


def generate_corpus(config: CorpusConfig) -> np.ndarray:
    """float32 ``[n_series, length]``: byte-identical for a given config.

    Series ``i`` draws only from ``default_rng([seed, i])``, so a row does not depend on the
    other rows, on ``n_series`` or on global RNG state. Rows are finite except injected NaNs.
    """
    names, probabilities = _validate(config)
    corpus = np.empty((config.n_series, config.length), dtype=np.float32)
    for index in range(config.n_series):
        rng = _series_rng(config, index)
        generator = GENERATORS[_pick_generator(rng, names, probabilities)]
        for _ in range(_MAX_DRAWS):
            shape = generator(rng, config.length)
            if np.all(np.isfinite(shape)) and shape.std() > 1e-3:
                break
        else:  # pragma: no cover - the generators guard against this themselves
            shape = rng.standard_normal(config.length)
        series = random_level_and_scale(rng, shape).astype(np.float32)
        if rng.random() < config.missing_probability:
            inject_missing(rng, series)
        corpus[index] = series
    return corpus


def corpus_summary(corpus: np.ndarray) -> dict[str, float | int]:
    """Counts, NaN fractions and quantiles (5/50/95 %) of per-series std and mean."""
    if corpus.ndim != 2:
        raise ValueError(f"corpus must be 2-d [n_series, length], got shape {corpus.shape}")
    missing = np.isnan(corpus)
    observed = ~missing.all(axis=1)
    values = corpus[observed].astype(np.float64)
    summary: dict[str, float | int] = {
        "n_series": int(corpus.shape[0]),
        "length": int(corpus.shape[1]),
        "nan_fraction": float(missing.mean()) if corpus.size else 0.0,
        "series_with_nan": int(missing.any(axis=1).sum()),
        "series_all_nan": int((~observed).sum()),
    }
    if values.shape[0] == 0:
        return summary
    stds = np.nanstd(values, axis=1)
    means = np.nanmean(values, axis=1)
    for name, per_series in (("std", stds), ("mean", means)):
        for quantile in (5, 50, 95):
            summary[f"{name}_q{quantile:02d}"] = float(np.percentile(per_series, quantile))
    positive = stds[stds > 0]
    summary["log10_std_span"] = (
        float(np.log10(positive.max() / positive.min())) if positive.size else 0.0
    )
    return summary
