"""A generic synthetic pretraining corpus (not vital signs) for the stand-in foundation models.

No pretrained weights can be downloaded, so the small stand-in models are pretrained on this
corpus first and adapted to vital signs afterwards: the study can then show a model pretrained
out of domain. The corpus mixes:

* ``kernel_synth``: Gaussian-process samples whose kernel is a random sum/product of up to
  :data:`~vitalfm.synthetic.corpus_kernels.MAX_KERNELS` kernels drawn from a bank (RBF,
  periodic, rational quadratic, linear, white noise, constant), after KernelSynth in the
  Chronos paper (Ansari et al., 2024);
* ``ar``: stable AR(p) processes; ``trend``: linear, piecewise linear, exponential, saturating;
  ``seasonal``: sums of sinusoids with harmonics; ``level_shift``; ``spikes``;
  ``random_walk``; ``mixture``: trend + seasonality + noise, sometimes with shifts or spikes.

Every generator returns a standardised shape (mean 0, std 1); :func:`generate_corpus` then gives
each series a random level and scale spanning several orders of magnitude (negative levels too),
so models must learn scale invariance, and optionally cuts NaN gaps into it.

The kernels live in :mod:`vitalfm.synthetic.corpus_kernels`, the generators of standardised
shapes in :mod:`vitalfm.synthetic.corpus_shapes`; this module validates a :class:`CorpusConfig`
and assembles the corpus.

>>> corpus = generate_corpus(CorpusConfig(n_series=100, length=128, seed=3))
>>> corpus.shape, corpus.dtype
((100, 128), dtype('float32'))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vitalfm.errors import ConfigError
from vitalfm.synthetic.corpus_shapes import DEFAULT_WEIGHTS, GENERATORS

MIN_LENGTH = 8

# Level and scale given to every standardised shape (log10 ranges).
LOG10_SCALE_RANGE = (-2.0, 3.0)
LOG10_LEVEL_RATIO_RANGE = (-1.0, 2.0)  # |level| / scale
NEGATIVE_LEVEL_PROBABILITY = 0.25
ZERO_LEVEL_PROBABILITY = 0.15

_MAX_DRAWS = 5  # redraws of a degenerate (constant or non-finite) shape before giving up


@dataclass(frozen=True)
class CorpusConfig:
    """What to generate. ``weights`` maps generator names to mixing weights; names left out
    get weight 0; ``None`` means :data:`~vitalfm.synthetic.corpus_shapes.DEFAULT_WEIGHTS`."""

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
