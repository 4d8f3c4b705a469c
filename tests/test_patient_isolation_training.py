"""Patient isolation in training: a series' training loss depends on that series alone.

Every family's ``loss(batch, reduction="none")`` gives one loss per series [B] from the same
forward pass as the training loss (``reduction="mean"``, what the Trainer minimises). In eval
mode (no dropout) and for a fixed number of rows, a series' loss is bit-identical whatever
other series share its batch, in whatever order, even series in other units with most of
their points missing: no family mixes the rows of a training batch (Chronos-2's group
attention keeps each row its own group; MOIRAI packs each row as its own sample; every scaler
is per series). The training loss is the pooling of these per-series losses the family
declares (``Forecaster.loss_pooling``), and a series' loss is what the training loss would be
for that series alone. With another number of rows a series' loss may differ by rounding
(~1e-7 relative): some CPU kernels choose their path by the batch's shape. A series' gradient
is the same, to float rounding, whatever shares its batch: backward sums a weight's gradient
over all rows and positions, and where the batch changes, that sum's blocking (so its
rounding) may change, though the other rows add exact zeros.

Train mode draws dropout masks for the whole batch tensor, so there a row's noise (not its
distribution) depends on its position; the tests run in eval mode, as validation does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from vitalfm.engine.training_data import WindowTrainingData
from vitalfm.models.base import Forecaster, ModelError, SeriesBatch, TimeAxis
from vitalfm.models.registry import forecaster_class
from vitalfm.models.series_loss import POOLINGS
from vitalfm.testing import TINY_BASELINES, toy_windows

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

VITALS = ("heart_rate", "mbp")
RANGES = {"heart_rate": (0.0, 300.0), "mbp": (0.0, 190.0)}
ROWS = 8  # every batch of a test has this many rows
TRIALS = 3


def _standin(family: str, name: str) -> Callable[[], Forecaster]:
    return lambda: forecaster_class(family).standin(name, horizon=12, seed=0)


def _scratch(family: str) -> Callable[[], Forecaster]:
    options = TINY_BASELINES[family].get("options", {})
    return lambda: forecaster_class(family).from_scratch(options, 24, 12, seed=0)


FAMILIES: dict[str, Callable[[], Forecaster]] = {
    "chronos-t5": _standin("chronos", "chronos-t5"),
    "chronos-bolt": _standin("chronos", "chronos-bolt"),
    "chronos-2": _standin("chronos", "chronos-2"),
    "moirai": _standin("moirai", "moirai"),  # the stand-in averages all five patch sizes
    "moirai-2": _standin("moirai", "moirai-2"),
    "lag-llama": _standin("lag_llama", "lag-llama"),
    "nhits": _scratch("nhits"),
    "nbeats": _scratch("nbeats"),
    "dlinear": _scratch("dlinear"),
    "persistence": _scratch("persistence"),
}


@pytest.fixture(scope="module")
def models() -> dict[str, Forecaster]:
    built = {}
    for name, build in FAMILIES.items():
        forecaster = build()
        forecaster.module.eval()
        built[name] = forecaster
    return built


@pytest.fixture(scope="module")
def pool() -> SeriesBatch:
    """The engine's training examples, with edge cases: a constant (single-reading) context,
    a short history, a target with one observed point."""
    data = WindowTrainingData(
        toy_windows("train"), toy_windows("validation", seed=1), VITALS, 0, 64, RANGES
    )
    batch = data.train.batch(np.arange(len(data.train)))
    context, target = batch.context.clone(), batch.target.clone()
    context[0] = float("nan")
    context[0, -2] = 97.0
    context[1, :15] = float("nan")
    target[2, 1:] = float("nan")
    target[2, 0] = 71.0
    return SeriesBatch(context, target, batch.time)


def strangers(pool: SeriesBatch, rows: np.ndarray, seed: int) -> SeriesBatch:
    """Other patients unlike any in the pool: other units (x 40 + 1000), most points missing."""
    rng = np.random.default_rng(seed)
    batch = pool[rows]
    context = batch.context * 40 + 1000
    target = batch.target * 40 + 1000
    context[torch.from_numpy(rng.random(context.shape) < 0.6)] = float("nan")
    context[:, -1] = batch.context[:, -1] * 40 + 1000  # keep some of each context
    target[torch.from_numpy(rng.random(target.shape) < 0.6)] = float("nan")
    target[:, 0] = batch.target[:, 0] * 40 + 1000
    return SeriesBatch(context, target, batch.time)


def concat(parts: list[SeriesBatch], order: np.ndarray) -> SeriesBatch:
    """The rows of ``parts`` stacked, then reordered by ``order``."""
    times = [p.time for p in parts]
    assert all(t is not None for t in times)
    start_s = np.concatenate([t.start_s for t in times if t is not None])[order]
    return SeriesBatch(
        torch.cat([p.context for p in parts])[order],
        torch.cat([p.target for p in parts])[order],
        TimeAxis(start_s, parts[0].time.step_s if parts[0].time else 900),
    )


def series_losses(forecaster: Forecaster, batch: SeriesBatch) -> torch.Tensor:
    with torch.no_grad():
        losses = forecaster.loss(batch, reduction="none")
    assert losses.shape == (len(batch),)
    assert torch.isfinite(losses).all()
    return losses


Company = tuple[SeriesBatch, np.ndarray]


def batches_around(pool: SeriesBatch, seed: int) -> tuple[SeriesBatch, list[Company]]:
    """A batch of ``ROWS`` series, and the same series in other company, each as (batch,
    where each of its rows comes from: the row of the first batch, or -1 for another series):
    shuffled; half of them beside other pool series; half beside strangers, reversed."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(pool), 3 * ROWS, replace=False)
    mine, others, odd = rows[:ROWS], rows[ROWS : 2 * ROWS], rows[2 * ROWS :]
    half = ROWS // 2
    kept = np.concatenate([np.arange(half), np.full(ROWS - half, -1)])
    shuffled, mixed = rng.permutation(ROWS), rng.permutation(ROWS)
    reversed_rows = np.arange(ROWS)[::-1].copy()
    companies = [
        (concat([pool[mine]], shuffled), shuffled),
        (concat([pool[mine[:half]], pool[others[: ROWS - half]]], mixed), kept[mixed]),
        (
            concat([pool[mine[:half]], strangers(pool, odd[: ROWS - half], seed)], reversed_rows),
            kept[reversed_rows],
        ),
    ]
    return pool[mine], companies


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_series_loss_is_the_same_whatever_shares_its_batch(
    family: str, models: dict[str, Forecaster], pool: SeriesBatch
) -> None:
    forecaster = models[family]
    for trial in range(TRIALS):
        batch, companies = batches_around(pool, seed=trial)
        alone = series_losses(forecaster, batch)
        for company, origin in companies:
            losses = series_losses(forecaster, company)
            for row, i in enumerate(origin):
                if i >= 0:
                    assert torch.equal(losses[row], alone[i]), (
                        f"{family}: a series' loss changed with the batch around it "
                        f"({float(alone[i])!r} -> {float(losses[row])!r})"
                    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_other_batch_sizes_change_a_series_loss_by_rounding_at_most(
    family: str, models: dict[str, Forecaster], pool: SeriesBatch
) -> None:
    """Bit-identity holds for a fixed number of rows: with another batch size, some kernels
    (Chronos-2's and MOIRAI's attention and matrix products on CPU) take other paths and
    round differently (~1e-7 relative), which is all that changes."""
    forecaster = models[family]
    batch, _ = batches_around(pool, seed=5)
    reference = series_losses(forecaster, batch)
    for rows in (1, 3):
        losses = series_losses(forecaster, batch[:rows])
        torch.testing.assert_close(losses, reference[:rows], rtol=1e-6, atol=0)
    more = concat([batch, pool[np.arange(2 * ROWS + 5)]], np.arange(3 * ROWS + 5))
    losses = series_losses(forecaster, more)[:ROWS]
    torch.testing.assert_close(losses, reference, rtol=1e-6, atol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_training_loss_pools_the_series_losses(
    family: str, models: dict[str, Forecaster], pool: SeriesBatch
) -> None:
    """The scalar the Trainer minimises is the family's declared pooling of the per-series
    losses, and a series' loss is the training loss of a batch of that series alone."""
    forecaster = models[family]
    assert forecaster.loss_pooling in POOLINGS
    batch, _ = batches_around(pool, seed=7)
    with torch.no_grad():
        mean = forecaster.loss(batch)
        per_series = forecaster.loss(batch, reduction="none")
        one_by_one = torch.stack([forecaster.loss(batch[i : i + 1]) for i in range(ROWS)])
    assert mean.shape == ()
    torch.testing.assert_close(per_series, one_by_one, rtol=2e-5, atol=1e-6)
    if forecaster.loss_pooling == "series":
        pooled = per_series.mean()
    else:
        points = scored_points(forecaster, batch).to(per_series.dtype)
        pooled = (per_series * points).sum() / points.sum()
    torch.testing.assert_close(mean, pooled, rtol=2e-6, atol=0)


def scored_points(forecaster: Forecaster, batch: SeriesBatch) -> torch.Tensor:
    """[B] how many points of each series the family's objective scores: its observed target
    points, and for Lag-Llama (teacher-forced over the context too) also the observed points
    among the last ``context_length - 1`` of the context."""
    points = torch.isfinite(batch.target).sum(dim=-1)
    if forecaster.family == "lag_llama":
        tokens = forecaster.context_length  # type: ignore[attr-defined]
        points = points + torch.isfinite(batch.context[:, -(tokens - 1) :]).sum(dim=-1)
    return points


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "persistence"])
def test_a_series_gradient_is_the_same_whatever_shares_its_batch(
    family: str, models: dict[str, Forecaster], pool: SeriesBatch
) -> None:
    """To float rounding (see the module docstring); persistence has no parameters."""
    forecaster = models[family]
    params = list(forecaster.module.parameters())
    for param in params:
        param.requires_grad_(True)
    batch, companies = batches_around(pool, seed=11)
    reordered, origin = companies[0]
    row = int(np.flatnonzero(origin == 0)[0])  # where series 0 of ``batch`` went
    grads = []
    for which, position in ((batch, 0), (reordered, row)):
        loss = forecaster.loss(which, reduction="none")[position]
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
    scale = max(float(g.abs().max()) for g in grads[0] if g is not None)
    for first, second in zip(*grads, strict=True):
        assert (first is None) == (second is None)
        if first is not None:
            torch.testing.assert_close(second, first, rtol=1e-4, atol=1e-5 * scale)


def test_an_unknown_reduction_is_refused(models: dict[str, Forecaster], pool: SeriesBatch) -> None:
    for family in ("chronos-2", "moirai", "persistence"):
        with pytest.raises(ModelError, match="loss reduction 'sum' is not one of mean, none"):
            models[family].loss(pool[:2], reduction="sum")
