"""Patient isolation of the sampling families' random draws (issue 17).

With ``predict(..., seeds=...)`` (one seed per series) a series' sample paths depend only on
its own context, time axis and seed: reordering the batch, changing the other series or
replacing them by padding rows (same batch size) leaves them bit-identical, and another seed
gives other paths. Families: Chronos-T5 (fast and library samplers), MOIRAI 1.x (fast and
library, a fixed patch size and ``auto``), Lag-Llama (with and without the KV cache), DLinear.
The seeded samplers draw from the same distributions as the unseeded ones (checked exactly
for our own draws, and against the libraries' samplers run on the one series).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from vitalfm.models.base import Forecaster, ModelError, TimeAxis, eval_mode
from vitalfm.models.chronos import ChronosForecaster
from vitalfm.models.lag_llama import LagLlamaForecaster
from vitalfm.models.moirai import MoiraiForecaster
from vitalfm.models.moirai.inputs import moirai_inputs
from vitalfm.models.randomness import (
    check_seeds,
    row_generators,
    row_normals,
    row_student_t,
    seeded_rows,
)
from vitalfm.models.registry import forecaster_class

#: Eight rows a call: on a CPU with AVX-512, MKL's kernels for a few rows (e.g. nn.Linear to one
#: output on 6 rows) round a row differently by its position, a kernel effect (the engine's
#: fixed-shape calls) rather than a random draw, which this module tests.
HORIZON, SAMPLES, ROWS = 12, 8, 8

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pool(count: int = 12) -> tuple[torch.Tensor, TimeAxis, np.ndarray]:
    """The first ``count`` of 12 distinct series of 24 points (gaps, a leading gap, another
    level), their time axis and seeds."""
    rng = np.random.default_rng(0)
    values = 80 + rng.normal(0, 3, (12, 24)).cumsum(axis=1)
    values[rng.random(values.shape) < 0.15] = np.nan
    values[1, :6] = np.nan
    values[4] += 40
    starts = 1_600_000_000 + rng.integers(0, 10**6, 12) * 900
    seeds = rng.integers(0, 2**63, 12, dtype=np.int64)
    context = torch.tensor(values[:count], dtype=torch.float32)
    return context, TimeAxis(starts[:count], 900), seeds[:count]


def predict(model: Forecaster, context: torch.Tensor, time: TimeAxis, seeds: Any) -> torch.Tensor:
    """``model.predict(..., seeds=seeds)``'s samples. MOIRAI's ``predict`` passes ``seeds`` on
    to ``_forecast`` (with the engine's change); before it does, ``_forecast`` is called as
    ``predict`` calls it."""
    if "seeds" in inspect.signature(model.predict).parameters:
        forecast = model.predict(context, HORIZON, SAMPLES, time=time, seeds=seeds)
    else:
        assert isinstance(model, MoiraiForecaster)
        with torch.no_grad():
            eval_mode(model.module)
            forecast = model._forecast(context, HORIZON, SAMPLES, seeds=seeds)
    assert forecast.samples is not None
    return forecast.samples


def chronos_t5(sampler: str) -> Forecaster:
    model = ChronosForecaster.standin("chronos-t5", horizon=HORIZON, seed=0)
    model.configure({"sampler": sampler})
    return model


def moirai(patch_size: int | str, sampler: str) -> Forecaster:
    model = MoiraiForecaster.standin("moirai", horizon=HORIZON, seed=0)
    model.configure({"patch_size": patch_size})
    model.sampler = sampler
    return model


def lag_llama(use_kv_cache: bool) -> Forecaster:
    model = LagLlamaForecaster.standin("lag-llama", horizon=HORIZON, seed=0)
    model.configure({"use_kv_cache": use_kv_cache})
    return model


def dlinear() -> Forecaster:
    return forecaster_class("dlinear").from_scratch({}, 24, HORIZON, 0)


MODELS: dict[str, Callable[[], Forecaster]] = {
    "chronos-t5 fast": lambda: chronos_t5("fast"),
    "chronos-t5 library": lambda: chronos_t5("library"),
    "moirai auto fast": lambda: moirai("auto", "fast"),
    "moirai 16 fast": lambda: moirai(16, "fast"),
    "moirai auto library": lambda: moirai("auto", "library"),
    "lag-llama cached": lambda: lag_llama(True),
    "lag-llama recomputed": lambda: lag_llama(False),
    "dlinear": dlinear,
}

#: Batches of the pool's series (same size); series 0 is the one followed.
BATCHES = {
    "as first seen": [0, 1, 2, 3, 4, 5, 6, 7],
    "reordered": [3, 5, 2, 7, 1, 6, 0, 4],
    "other series": [8, 10, 9, 11, 0, 4, 2, 3],
    "others removed, padded with one series": [11, 11, 11, 0, 11, 11, 11, 11],
    "padded with itself": [0] * 8,
}


@pytest.mark.parametrize("name", MODELS)
def test_a_series_samples_do_not_depend_on_its_batch(name: str) -> None:
    model = MODELS[name]()
    context, time, seeds = pool()

    def followed(ids: list[int], seeds: np.ndarray = seeds) -> torch.Tensor:
        """Series 0's samples in the batch ``ids``."""
        axis = TimeAxis(time.start_s[ids], time.step_s)
        samples = predict(model, context[ids], axis, seeds[ids])
        assert samples.shape == (ROWS, SAMPLES, HORIZON)
        assert torch.isfinite(samples).all()
        return samples[ids.index(0)]

    reference = followed(BATCHES["as first seen"])
    for batch, ids in BATCHES.items():
        assert torch.equal(followed(ids), reference), f"{name}: series 0 changed ({batch})"
    reseeded = seeds.copy()
    reseeded[0] += 1
    assert not torch.equal(followed(BATCHES["reordered"], reseeded), reference)
    # two rows with the same series and seed draw the same paths; other seeds, other paths
    ids = [2, 2, 3, 4, 5, 6, 7, 8]
    same = predict(model, context[ids], TimeAxis(time.start_s[ids], 900), seeds[ids])
    assert torch.equal(same[0], same[1]) and not torch.equal(same[0], same[2])


@pytest.mark.parametrize(
    "name", ["chronos-t5 fast", "moirai 16 fast", "lag-llama cached", "dlinear"]
)
def test_without_seeds_the_global_generator_still_decides(name: str) -> None:
    """seeds=None keeps the families' old behaviour: draws from torch's global generator."""
    model = MODELS[name]()
    context, time, _ = pool(ROWS)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(predict(model, context, time, None))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


# --- the seeded draws' distributions ---------------------------------------------------------


def test_t5_seeded_fast_sampler_draws_the_pipelines_top_k_distribution() -> None:
    """The inverse-CDF draw picks each of the top-k tokens with the pipeline's probability
    (top-k, temperature; EOS excluded): a chi-square test on 4,000 first-step draws."""
    from dataclasses import replace

    model = chronos_t5("fast")
    pipeline = model.pipeline
    pipeline.model.config = replace(pipeline.model.config, top_k=20, temperature=0.7)
    with torch.no_grad():  # sharpen the random model so its distribution has structure
        model.module.lm_head.weight.mul_(150)
    context, _, seeds = pool(2)
    draws = 4000
    samples = model.predict(context, 1, draws, seeds=seeds[:2]).samples[:, :, 0]
    ids, attention, scale = pipeline.tokenizer.context_input_transform(context)
    config = pipeline.model.config
    with torch.no_grad():
        start = torch.full((2, 1), model.module.config.decoder_start_token_id)
        logits = model.module(
            input_ids=ids, attention_mask=attention, decoder_input_ids=start
        ).logits[:, -1]
    logits[:, config.eos_token_id] = float("-inf")
    values, tokens = logits.topk(20, dim=-1)
    probs = torch.softmax(values.double() / 0.7, dim=-1)
    token_values = pipeline.tokenizer.output_transform(tokens[:, None, :], scale)[:, 0]
    for row in range(2):
        counts = (samples[row][:, None] == token_values[row][None, :]).sum(dim=0)
        assert int(counts.sum()) == draws  # every draw is one of the top-k tokens
        expected = probs[row] * draws  # descending, as topk sorts
        keep = int((expected >= 5).sum())  # chi-square's validity: the rest pooled into the
        observed, expected = counts[:keep].double(), expected[:keep].clone()  # last kept bin
        observed[-1] += counts[keep:].sum()
        expected[-1] += probs[row, keep:].sum() * draws
        expected *= draws / expected.sum()  # the probabilities' rounding, out of the sum
        assert stats.chisquare(observed.numpy(), expected.numpy()).pvalue > 1e-3


def test_row_student_t_draws_the_student_t() -> None:
    generators = row_generators(np.array([1, 2, 3, 4], dtype=np.int64), torch.device("cpu"))
    paths = 4 * 5000
    df = torch.full((paths,), 3.5)
    normals = row_normals(generators, (5000,)).reshape(-1)
    draws = row_student_t(
        df, torch.full((paths,), 1.0), torch.full((paths,), 2.0), generators, normals
    )
    assert stats.kstest(draws.numpy(), stats.t(3.5, loc=1.0, scale=2.0).cdf).pvalue > 1e-3
    torch.manual_seed(0)
    reference = torch.distributions.StudentT(3.5, 1.0, 2.0).sample((paths,))
    assert stats.ks_2samp(draws.numpy(), reference.numpy()).pvalue > 1e-3


def test_seeded_library_samplers_equal_the_library_on_the_one_series() -> None:
    """Chronos-T5's and MOIRAI's library samplers with seeds: row i is the library's own
    output for series i alone after ``torch.manual_seed(seeds[i])``."""
    context, time, seeds = pool(3)
    t5 = chronos_t5("library")
    mine = predict(t5, context, time, seeds[:3])
    for row in range(3):
        torch.manual_seed(int(seeds[row]))
        library = t5.pipeline.predict(
            context[row : row + 1], prediction_length=HORIZON, num_samples=SAMPLES
        )
        assert torch.equal(mine[row], library[0])
    model = moirai(8, "library")
    mine = predict(model, context, time, seeds[:3])
    net = model._net
    for row in range(3):
        torch.manual_seed(int(seeds[row]))
        inputs = (t[row : row + 1] for t in moirai_inputs(context))
        with (
            torch.no_grad(),
            net.hparams_context(
                prediction_length=HORIZON, context_length=24, patch_size=8, num_samples=SAMPLES
            ),
        ):
            library = net(*inputs)
        assert torch.equal(mine[row], library[0].float())


def test_seeded_dlinear_samples_gluonts_distribution_of_the_row() -> None:
    model = dlinear()
    context, time, seeds = pool(3)
    mine = predict(model, context, time, seeds[:3])
    past, observed, our_loc, our_scale = model._past(context)
    with torch.no_grad():
        args, loc, scale = model.module(past_target=past, past_observed_values=observed)
    for row in range(3):
        rows = slice(row, row + 1)
        distribution = model.module.distr_output.distribution(
            tuple(a[rows] for a in args), loc=loc[rows], scale=scale[rows]
        )
        torch.manual_seed(int(seeds[row]))
        library = distribution.sample((SAMPLES,))[:, 0] * our_scale[row] + our_loc[row]
        assert torch.equal(mine[row], library.float())


# --- the helpers -----------------------------------------------------------------------------


def test_seeded_rows_leaves_the_global_generator_as_it_was() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    with seeded_rows(torch.device("cpu")) as reseed:
        reseed(11)
        first = torch.rand(2)
        reseed(11)
        assert torch.equal(torch.rand(2), first)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        (np.arange(3, dtype=np.int64), r"one integer per series: got int64 of shape \(3,\)"),
        (np.zeros(4), "one integer per series: got float64"),
        (np.array([0, 1, -1, 2]), r"in \[0, 2\*\*63\): got -1"),
        ([1, 2, 3, 4], None),
    ],
)
def test_seeds_are_checked(seeds: Any, message: str | None) -> None:
    if message is None:
        assert check_seeds(seeds, 4).dtype == np.int64
        return
    with pytest.raises(ModelError, match=message):
        check_seeds(seeds, 4)
    with pytest.raises(ModelError, match=message):
        dlinear().predict(pool(4)[0], HORIZON, 2, seeds=seeds)
