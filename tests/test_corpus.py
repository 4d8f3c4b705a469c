"""The synthetic pretraining corpus: determinism, coverage of scales, gaps, and real properties of
the generators (periodic GP samples repeat at their period, AR processes are stationary)."""

from __future__ import annotations

import numpy as np
import pytest

from vitalfm.errors import ConfigError
from vitalfm.synthetic.corpus import CorpusConfig, corpus_summary, generate_corpus, series_sources
from vitalfm.synthetic.corpus_kernels import (
    kernel_bank,
    periodic_kernel,
    rbf_kernel,
    sample_gaussian_process,
    white_noise_kernel,
)
from vitalfm.synthetic.corpus_shapes import GENERATORS, stable_ar_coefficients

SMALL = CorpusConfig(n_series=60, length=64, seed=7)


def _lag_correlation(series: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(series[:-lag], series[lag:])[0, 1])


# --- determinism -----------------------------------------------------------------------------


def test_same_config_gives_identical_bytes_whatever_the_global_rng_state() -> None:
    np.random.seed(1)
    first = generate_corpus(SMALL)
    np.random.seed(2)
    np.random.standard_normal(1000)
    second = generate_corpus(SMALL)
    assert first.tobytes() == second.tobytes()


def test_different_seeds_give_different_corpora() -> None:
    first = generate_corpus(SMALL)
    other = generate_corpus(CorpusConfig(n_series=60, length=64, seed=8))
    assert first.tobytes() != other.tobytes()
    # Not merely one row: the seeds must give unrelated series.
    rows_equal = [np.array_equal(a, b, equal_nan=True) for a, b in zip(first, other, strict=True)]
    assert sum(rows_equal) == 0


def test_a_row_does_not_depend_on_how_many_rows_are_generated() -> None:
    few = generate_corpus(CorpusConfig(n_series=5, length=64, seed=7))
    many = generate_corpus(SMALL)
    assert few.tobytes() == many[:5].tobytes()


def test_shape_and_dtype() -> None:
    corpus = generate_corpus(CorpusConfig(n_series=13, length=37, seed=0))
    assert corpus.shape == (13, 37)
    assert corpus.dtype == np.float32


# --- generators ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("length", [8, 37, 256])
def test_every_generator_gives_finite_varying_series_of_the_requested_length(
    name: str, length: int
) -> None:
    for seed in range(8):
        series = GENERATORS[name](np.random.default_rng([seed, length]), length)
        assert series.shape == (length,)
        assert series.dtype == np.float32
        assert np.all(np.isfinite(series)), f"{name} seed {seed}"
        assert series.std() > 0.5, f"{name} seed {seed} is (nearly) constant"
        assert np.unique(series).size > 2, f"{name} seed {seed} takes only two values"


def test_gaussian_process_with_a_periodic_kernel_repeats_at_its_period() -> None:
    """Period 24 steps on a 240-step grid: samples correlate ~1 at lag 24, weakly at lag 12."""
    length, period = 240, 24
    rng = np.random.default_rng(0)
    kernels = [periodic_kernel(period / length), dict(kernel_bank(length))["periodic(24)"]]
    for kernel in kernels:
        at_period, at_half_period = [], []
        for _ in range(10):
            sample = sample_gaussian_process(rng, length, kernel)
            at_period.append(_lag_correlation(sample, period))
            at_half_period.append(_lag_correlation(sample, period // 2))
        assert min(at_period) > 0.95
        assert np.mean(at_half_period) < 0.5


def test_gaussian_process_with_a_smooth_kernel_is_not_periodic_but_smooth() -> None:
    """Control for the periodic test: an RBF sample correlates strongly at lag 1 only."""
    rng = np.random.default_rng(1)
    sample = sample_gaussian_process(rng, 240, rbf_kernel(0.05))
    assert _lag_correlation(sample, 1) > 0.95
    assert _lag_correlation(sample, 120) < 0.9


def test_gaussian_process_with_a_white_noise_kernel_is_uncorrelated() -> None:
    sample = sample_gaussian_process(np.random.default_rng(3), 1000, white_noise_kernel(1.0))
    assert abs(_lag_correlation(sample, 1)) < 0.1
    assert 0.8 < sample.std() < 1.2


def test_long_gaussian_process_samples_are_finite() -> None:
    sample = sample_gaussian_process(np.random.default_rng(2), 1500, periodic_kernel(0.1))
    assert sample.shape == (1500,)
    assert np.all(np.isfinite(sample))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_ar_coefficients_have_all_characteristic_roots_inside_the_unit_circle(order: int) -> None:
    rng = np.random.default_rng(order)
    for _ in range(50):
        phi = stable_ar_coefficients(rng, order)
        assert phi.shape == (order,)
        roots = np.roots(np.concatenate([[1.0], -phi]))
        assert np.all(np.abs(roots) < 1.0)


def test_ar_series_are_stationary() -> None:
    """Both halves of a long AR series have similar spread (an explosive or unit-root process
    would not) and no value runs away from the rest."""
    for seed in range(40):
        series = GENERATORS["ar"](np.random.default_rng(seed), 2000).astype(np.float64)
        ratio = series[:1000].std() / series[1000:].std()
        assert 1 / 3 < ratio < 3, f"seed {seed}: half-std ratio {ratio:.2f}"
        assert np.abs(series).max() < 30


# --- the corpus ------------------------------------------------------------------------------


def test_corpus_spans_orders_of_magnitude_and_both_signs() -> None:
    corpus = generate_corpus(CorpusConfig(n_series=400, length=64, seed=3))
    summary = corpus_summary(corpus)
    assert np.log10(summary["std_q95"] / summary["std_q05"]) > 2
    assert summary["log10_std_span"] > 3
    means = np.nanmean(corpus, axis=1)
    assert (means < 0).mean() > 0.1
    assert (means > 0).mean() > 0.3
    assert (np.abs(means) > 100).mean() > 0.1


def test_missing_values_match_the_probability() -> None:
    config = CorpusConfig(n_series=1000, length=32, seed=4, missing_probability=0.3)
    corpus = generate_corpus(config)
    with_gaps = np.isnan(corpus).any(axis=1)
    assert 0.25 < with_gaps.mean() < 0.35  # binomial sd ~0.015
    assert not np.isinf(corpus).any()
    # Gaps never swallow a series: at most half of each row is missing.
    assert np.isnan(corpus).mean(axis=1).max() <= 0.5


def test_no_missing_values_at_probability_zero_and_gaps_in_every_series_at_one() -> None:
    none_missing = generate_corpus(CorpusConfig(n_series=200, length=32, missing_probability=0.0))
    assert np.all(np.isfinite(none_missing))
    all_gapped = generate_corpus(CorpusConfig(n_series=200, length=32, missing_probability=1.0))
    assert np.isnan(all_gapped).any(axis=1).all()
    assert corpus_summary(all_gapped)["series_all_nan"] == 0


def test_weights_choose_the_generators() -> None:
    only_ar = CorpusConfig(n_series=50, length=32, weights={"ar": 1.0, "trend": 0.0})
    assert set(series_sources(only_ar)) == {"ar"}
    default_sources = series_sources(CorpusConfig(n_series=1000))
    assert set(default_sources) == set(GENERATORS)
    # Kernel-synth gets twice the default share of, e.g., trends.
    assert default_sources.count("kernel_synth") > 1.4 * default_sources.count("trend")
    trends = generate_corpus(CorpusConfig(n_series=10, length=32, weights={"trend": 1.0}))
    ar_series = generate_corpus(CorpusConfig(n_series=10, length=32, weights={"ar": 1.0}))
    assert trends.tobytes() != ar_series.tobytes()


def test_summary_counts_on_a_hand_built_corpus() -> None:
    corpus = np.array(
        [[1.0, 2.0, 3.0, 4.0], [np.nan, 10.0, 30.0, np.nan], [np.nan] * 4], dtype=np.float32
    )
    summary = corpus_summary(corpus)
    assert summary["n_series"] == 3
    assert summary["length"] == 4
    assert summary["nan_fraction"] == pytest.approx(6 / 12)
    assert summary["series_with_nan"] == 2
    assert summary["series_all_nan"] == 1
    assert summary["mean_q50"] == pytest.approx((2.5 + 20.0) / 2)
    low_std = float(np.std([1.0, 2.0, 3.0, 4.0]))
    assert summary["std_q05"] == pytest.approx(low_std + 0.05 * (10.0 - low_std))


# --- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (CorpusConfig(n_series=0), "n_series"),
        (CorpusConfig(length=7), "length"),
        (CorpusConfig(length=64.0), "length"),  # type: ignore[arg-type]
        (CorpusConfig(seed=-1), "seed"),
        (CorpusConfig(missing_probability=1.5), "missing_probability"),
        (CorpusConfig(missing_probability=-0.1), "missing_probability"),
        (CorpusConfig(weights={"arima": 1.0}), "arima"),
        (CorpusConfig(weights={"ar": -1.0}), ">= 0"),
        (CorpusConfig(weights={"ar": float("nan")}), ">= 0"),
        (CorpusConfig(weights={"ar": 0.0}), "all zero"),
    ],
)
def test_bad_config_raises_a_config_error_naming_the_problem_and_the_fix(
    config: CorpusConfig, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        generate_corpus(config)
    assert problem in caught.value.problem
    assert caught.value.fix
    assert "How to fix" in str(caught.value)


def test_unknown_generator_error_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as caught:
        generate_corpus(CorpusConfig(weights={"arima": 1.0}))
    for name in GENERATORS:
        assert name in caught.value.fix
