"""No target leaks into a training objective's normalisation.

A family's training loss normalises each series with statistics (Chronos-T5's mean scale,
Bolt's and Chronos-2's instance normalisation, MOIRAI's packed scalers, Lag-Llama's robust
scaler, the baselines' standardisation, the relative losses' context level). At inference only
the context exists, so statistics that see the target would train a model on information its
forecasts never have. Each test captures those statistics while ``loss()`` runs on a batch and
on the same batch with every target value moved and its missing points changed, and requires
them bit-identical; the loss itself must change, so the perturbation reaches the objective.
The data half of the check: the contexts a training batch hands the model do not change when
the targets do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from vitalfm.data.windows import WindowSet
from vitalfm.engine.training_data import WindowTrainingData
from vitalfm.models.base import Forecaster, SeriesBatch
from vitalfm.models.registry import forecaster_class
from vitalfm.testing import TINY_BASELINES, toy_windows

VITALS = ("heart_rate", "mbp")
RANGES = {"heart_rate": (0.0, 300.0), "mbp": (0.0, 190.0)}


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- capturing what each family's loss normalises with -------------------------------------


Captured = list[tuple[str, torch.Tensor]]


def _record(captured: Captured, name: str, value: Any) -> None:
    """Every tensor in ``value`` (nested tuples of tensors), detached and copied."""
    if isinstance(value, torch.Tensor):
        captured.append((name, value.detach().clone()))
    elif isinstance(value, tuple | list):
        for k, item in enumerate(value):
            _record(captured, f"{name}[{k}]", item)


def _base(module: torch.nn.Module) -> torch.nn.Module:
    return module.get_base_model() if hasattr(module, "get_base_model") else module


@contextlib.contextmanager
def hooked(
    module: torch.nn.Module,
    name: str,
    captured: Captured,
    pick: Callable[[Any], Any] = lambda out: out,
) -> Iterator[None]:
    """Record ``pick(output)`` of submodule ``name`` (e.g. a scaler) every time it runs."""
    handle = module.get_submodule(name).register_forward_hook(
        lambda _m, _i, out: _record(captured, name, pick(out))
    )
    try:
        yield
    finally:
        handle.remove()


def wrapped(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    attribute: str,
    captured: Captured,
    pick: Callable[[Any], Any] = lambda out: out,
) -> None:
    """Replace ``owner.attribute`` (a function the family calls) by one that records
    ``pick(its result)``."""
    original = getattr(owner, attribute)

    def recording(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        _record(captured, attribute, pick(out))
        return out

    monkeypatch.setattr(owner, attribute, recording)


def capture_chronos_t5(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    from chronos.chronos import MeanScaleUniformBins

    # the mean scale: computed from the context, handed to the labels' tokenisation
    wrapped(monkeypatch, MeanScaleUniformBins, "_input_transform", captured, lambda out: out[2])
    return contextlib.nullcontext()


def capture_instance_norm(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    import vitalfm.models.chronos.bolt as chronos

    wrapped(monkeypatch, chronos, "context_level", captured)  # Bolt's relative loss
    # (normalised values, (loc, scale)): the target's normalisation must reuse the context's
    return hooked(_base(forecaster.module), "instance_norm", captured, lambda out: out[1])


def capture_moirai(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    import vitalfm.models.moirai.moirai2 as moirai

    wrapped(monkeypatch, moirai, "context_level", captured)  # Moirai-2's relative loss
    return hooked(_base(forecaster.module), "scaler", captured)  # per-token loc, scale


def capture_lag_llama(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    import vitalfm.models.lag_llama as lag_llama

    wrapped(monkeypatch, lag_llama, "scale_stats", captured)  # robust loc, scale
    return contextlib.nullcontext()


def capture_scratch(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    import vitalfm.models.baselines.dlinear as dlinear
    import vitalfm.models.baselines.scratch as scratch

    wrapped(monkeypatch, scratch, "scale_context", captured)  # N-HiTS, N-BEATS
    wrapped(monkeypatch, dlinear, "scale_context", captured)
    return contextlib.nullcontext()


def capture_persistence(
    forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> contextlib.AbstractContextManager[None]:
    import vitalfm.models.baselines.persistence as persistence

    wrapped(monkeypatch, persistence, "last_observed", captured)
    wrapped(monkeypatch, persistence, "random_walk_sigma", captured)
    return contextlib.nullcontext()


def _standin(family: str, name: str) -> Callable[[], Forecaster]:
    return lambda: forecaster_class(family).standin(name, horizon=12, seed=0)


def _scratch(family: str) -> Callable[[], Forecaster]:
    options = TINY_BASELINES[family].get("options", {})
    return lambda: forecaster_class(family).from_scratch(options, 24, 12, seed=0)


Capture = Callable[
    [Forecaster, pytest.MonkeyPatch, Captured], contextlib.AbstractContextManager[None]
]
FAMILIES: dict[str, tuple[Callable[[], Forecaster], Capture]] = {
    "chronos-t5": (_standin("chronos", "chronos-t5"), capture_chronos_t5),
    "chronos-bolt": (_standin("chronos", "chronos-bolt"), capture_instance_norm),
    "chronos-2": (_standin("chronos", "chronos-2"), capture_instance_norm),
    "moirai": (_standin("moirai", "moirai"), capture_moirai),
    "moirai-2": (_standin("moirai", "moirai-2"), capture_moirai),
    "lag-llama": (_standin("lag_llama", "lag-llama"), capture_lag_llama),
    "nhits": (_scratch("nhits"), capture_scratch),
    "nbeats": (_scratch("nbeats"), capture_scratch),
    "dlinear": (_scratch("dlinear"), capture_scratch),
    "persistence": (_scratch("persistence"), capture_persistence),
}


# --- batches ----------------------------------------------------------------------------------


def training_batch() -> SeriesBatch:
    """A training batch of the engine, with a flat (single-reading) and a short context."""
    data = WindowTrainingData(
        toy_windows("train"), toy_windows("validation", seed=1), VITALS, 0, 64, RANGES
    )
    batch = data.train_batch(step=0, batch_size=12)
    context = batch.context.clone()
    context[0] = float("nan")
    context[0, -2] = 97.0  # one reading: a constant context
    context[1, :15] = float("nan")  # a short history
    return SeriesBatch(context, batch.target.clone(), batch.time)


def perturbed_targets(target: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Every value moved (by tens of units), and another pattern of missing points (every
    previously missing point gets a value; others go missing; each row keeps some)."""
    rng = np.random.default_rng(seed)
    values = np.nan_to_num(target.numpy(), nan=80.0)
    moved = values * 1.3 + 25 + rng.normal(0, 10, values.shape)
    missing = rng.random(values.shape) < 0.3
    missing[:, 0] = False
    missing &= np.isfinite(target.numpy())  # what was missing is now observed
    moved[missing] = np.nan
    return torch.from_numpy(moved.astype(np.float32))


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaN where the other has NaN."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and torch.equal(torch.isnan(a), torch.isnan(b))
        and torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))
    )


def statistics_and_loss(
    forecaster: Forecaster,
    capture: Capture,
    batch: SeriesBatch,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Captured, float]:
    captured: Captured = []
    with monkeypatch.context() as patch, capture(forecaster, patch, captured):
        torch.manual_seed(0)  # as the Trainer seeds each step (dropout, MOIRAI's patch size)
        loss = forecaster.loss(batch)
    return captured, float(loss.detach())


@pytest.mark.parametrize(
    ("family", "mode"),
    [(family, "train") for family in FAMILIES] + [("moirai", "eval")],
)
def test_loss_normalisation_does_not_see_the_target(
    family: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In train mode the training path (dropout on; the MOIRAI stand-in draws one patch
    size); MOIRAI's validation loss (eval mode) runs every patch size."""
    build, capture = FAMILIES[family]
    forecaster = build()
    forecaster.module.train(mode == "train")
    batch = training_batch()
    moved = SeriesBatch(batch.context.clone(), perturbed_targets(batch.target), batch.time)
    assert not torch.equal(torch.isnan(moved.target), torch.isnan(batch.target))
    before, loss = statistics_and_loss(forecaster, capture, batch, monkeypatch)
    after, moved_loss = statistics_and_loss(forecaster, capture, moved, monkeypatch)
    assert before, f"{family}: no normalisation statistics were captured"
    if family == "moirai" and mode == "eval":  # loc and scale at each of the 5 patch sizes
        assert len(before) == 2 * len(forecaster.train_patch_sizes) == 10
    assert [name for name, _ in before] == [name for name, _ in after]
    for (name, a), (_, b) in zip(before, after, strict=True):
        assert same(a, b), f"{family}: {name} depends on the target (a look-ahead leak)"
    assert np.isfinite(loss) and np.isfinite(moved_loss)
    assert loss != moved_loss  # the targets do reach the objective
    assert torch.equal(moved.context.nan_to_num(-1), batch.context.nan_to_num(-1))


def test_a_leaky_normalisation_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a scale taken over context and target differs."""
    import vitalfm.models.baselines.scratch as scratch

    forecaster, capture = FAMILIES["nhits"][0](), FAMILIES["nhits"][1]
    honest = scratch.scale_context
    state: dict[str, torch.Tensor] = {}

    def leaky(filled: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, scale = honest(filled, observed)
        return loc + state["target"].nan_to_num(0.0).mean(dim=-1, keepdim=True), scale

    monkeypatch.setattr(scratch, "scale_context", leaky)
    batch = training_batch()
    moved = SeriesBatch(batch.context, perturbed_targets(batch.target), batch.time)
    stats = []
    for b in (batch, moved):
        state["target"] = b.target
        stats.append(statistics_and_loss(forecaster, capture, b, monkeypatch)[0])
    assert not all(same(x, y) for (_, x), (_, y) in zip(*stats, strict=True))


# --- the data half: contexts do not carry targets ---------------------------------------------


def separate_windows(seed: int = 0) -> WindowSet:
    """Toy windows that share no grid row (stride = window length), so that moving every
    horizon point changes targets only."""
    return toy_windows("train", n_stays=5, steps_per_stay=72, stride_steps=36, seed=seed)


def with_moved_horizons(windows: WindowSet) -> WindowSet:
    """A copy with every horizon point of every window moved and its readings' pattern
    changed (each horizon keeps at least one reading)."""
    values, observed = windows.values.copy(), windows.observed.copy()
    rng = np.random.default_rng(5)
    rows = windows.window_start_rows[:, None] + windows.context_steps
    rows = (rows + np.arange(windows.horizon_steps)).ravel()
    values[rows] = np.nan_to_num(values[rows], nan=70.0) + 30 + rng.normal(0, 5, values[rows].shape)
    seen = rng.random(values[rows].shape) >= 0.4
    seen[:: windows.horizon_steps] = True  # the first horizon point of each window
    values[rows] = np.where(seen, values[rows], np.nan)
    observed[rows] = seen
    counts = seen.reshape(len(windows), windows.horizon_steps, -1).sum(axis=1)
    copy = WindowSet(**{**windows.__dict__, "values": values, "observed": observed})
    copy.horizon_observed = counts.astype(np.int16)
    return copy


def test_training_batches_hand_the_same_contexts_when_targets_change() -> None:
    before = separate_windows()
    after = with_moved_horizons(before)
    assert not np.array_equal(
        before.horizon("mbp"), after.horizon("mbp"), equal_nan=True
    )  # the targets did move
    data = [
        WindowTrainingData(w, w, VITALS, seed=0, validation_max_series=8, ranges=RANGES)
        for w in (before, after)
    ]
    assert len(data[0].train) == len(data[1].train)
    for step in range(4):
        batches = [d.train_batch(step, 16) for d in data]
        assert same(batches[0].context, batches[1].context)
        assert not same(batches[0].target, batches[1].target)
    for a, b in zip(*(d.validation_batches(5) for d in data), strict=True):
        assert same(a.context, b.context)
    sets = [d.validation_forecast_set(6) for d in data]
    assert sets[0] is not None and sets[1] is not None
    np.testing.assert_array_equal(sets[0].pairs.context, sets[1].pairs.context)
    np.testing.assert_array_equal(sets[0].pairs.window_ids, sets[1].pairs.window_ids)
