"""Bootstrap weights: resample patients (not windows), and seeds, with replacement.

A resample draws P patients from the P with replacement; ``weights[b, p]`` is how often
patient p was drawn in resample b. Per-patient sums times these weights give each resample's
sums exactly, so thousands of resamples of every metric cost one matrix product. Windows of
one patient are correlated; resampling patients keeps that dependence inside each draw.
"""

from __future__ import annotations

import numpy as np


def patient_weights(n_patients: int, resamples: int, seed: int) -> np.ndarray:
    """float64 [resamples, n_patients]: draw counts of each patient per resample."""
    rng = np.random.default_rng(seed)
    if n_patients == 0:
        return np.zeros((resamples, 0))
    draws = rng.integers(0, n_patients, size=(resamples, n_patients))
    offsets = (np.arange(resamples) * n_patients)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n_patients)
    return counts.reshape(resamples, n_patients).astype(np.float64)


def seed_weights(seeds: list[int] | tuple[int, ...], resamples: int, seed: int) -> np.ndarray:
    """float64 [resamples, len(seeds)]: draw counts of each training seed per resample.

    Seeds are resampled with replacement, independently of patients (from their own stream),
    so that intervals reflect training variance as well as patient variance.
    """
    rng = np.random.default_rng([seed, 1])
    n = len(seeds)
    draws = rng.integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n)
    return counts.reshape(resamples, n).astype(np.float64)


def resample_sums(weights: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """[B, ...] resampled totals from per-patient ``sums`` [P, ...]."""
    flat = sums.reshape(sums.shape[0], -1)
    return (weights @ flat).reshape((weights.shape[0], *sums.shape[1:]))


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 of [B, ...], ignoring NaN resamples (a resample can
    draw no patient with points in a small cell); NaN where all are NaN."""
    tail = 100 * (1 - level) / 2
    samples = np.asarray(samples, dtype=np.float64)
    shape = samples.shape[1:]
    flat = samples.reshape(samples.shape[0], -1)
    low = np.full(flat.shape[1], np.nan)
    high = np.full(flat.shape[1], np.nan)
    finite = np.isfinite(flat)
    whole = finite.all(axis=0)  # np.percentile is vectorised; nanpercentile loops per column
    if whole.any():
        low[whole], high[whole] = np.percentile(flat[:, whole], [tail, 100 - tail], axis=0)
    partial = finite.any(axis=0) & ~whole
    if partial.any():
        part = np.where(finite[:, partial], flat[:, partial], np.nan)
        low[partial], high[partial] = np.nanpercentile(part, [tail, 100 - tail], axis=0)
    return low.reshape(shape), high.reshape(shape)
