"""KernelSynth's kernels for the synthetic pretraining corpus: a bank of covariance functions
(RBF, periodic, rational quadratic, linear, white noise, constant), random sums and products
of them, and Gaussian-process sampling (after KernelSynth in the Chronos paper, Ansari et al.,
2024).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

Kernel = Callable[[np.ndarray], np.ndarray]
"""A covariance function: regular time grid of shape [L] -> covariance matrix [L, L]."""

MAX_KERNELS = 5  # J in KernelSynth
MAX_GP_POINTS = 1024  # longer series are sampled on this many points and interpolated

# Periods in time steps. The first group is the KernelSynth bank (hourly, daily, weekly, ...
# grids); the second adds periods typical of minute and hour grids of monitoring data.
KERNEL_PERIODS: tuple[float, ...] = (
    24, 48, 96, 168, 336, 672, 7, 14, 30, 60, 365, 365.25, 4, 26, 52, 6, 12, 40, 10,
    5, 15, 120, 1440,
)  # fmt: skip


def time_grid(length: int) -> np.ndarray:
    """Time in units of the window, so a period of ``p`` steps is ``p / length``."""
    return np.arange(length, dtype=np.float64) / length


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
        t = time_grid(length)
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
        sample = np.interp(time_grid(length), t, sample)
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
