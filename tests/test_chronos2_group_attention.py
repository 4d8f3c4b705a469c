"""Chronos-2's group attention over one-series groups is the value projection
(vitalfm.models.chronos.group_attention): the engine's model computes what the library's does,
checked against a pipeline the library loads by itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitalfm.models.base import ModelSource
from vitalfm.models.chronos import ChronosForecaster
from vitalfm.models.chronos.group_attention import OwnGroupAttention

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chronos2") / "chronos-2"
    forecaster = ChronosForecaster.standin("chronos-2", horizon=12, seed=0)
    with torch.no_grad():  # weights off their initial values, so every path matters
        for parameter in forecaster.module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    forecaster.save_pretrained(path)
    return path


def library_pipeline(folder: Path) -> object:
    from chronos import Chronos2Pipeline

    return Chronos2Pipeline.from_pretrained(str(folder))


def contexts(rows: int, length: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    context = 80 + 10 * torch.randn(rows, length, generator=generator)
    context[::3, : length // 2] = float("nan")  # left padding within the model's context
    context[1::4, 5:9] = float("nan")
    return context


def test_the_engine_model_has_no_library_group_attention_and_the_same_weights(
    folder: Path,
) -> None:
    mine = ChronosForecaster.load(ModelSource(path=str(folder)), CPU).module
    library = library_pipeline(folder).model
    assert sum(isinstance(m, OwnGroupAttention) for m in mine.modules()) == len(
        library.encoder.block
    )
    assert list(mine.state_dict()) == list(library.state_dict())


@pytest.mark.parametrize(("length", "horizon"), [(24, 12), (40, 64)])
def test_forecasts_are_bit_identical_to_the_library_pipeline(
    folder: Path, length: int, horizon: int
) -> None:
    context = contexts(37, length)
    mine = ChronosForecaster.load(ModelSource(path=str(folder)), CPU).predict(context, horizon, 0)
    library = library_pipeline(folder).predict(context[:, None], prediction_length=horizon)
    assert torch.equal(mine.quantiles, torch.cat(library, dim=0))


def test_the_loss_and_its_gradients_equal_the_library_model_without_dropout(
    folder: Path,
) -> None:
    mine = ChronosForecaster.load(ModelSource(path=str(folder)), CPU).module.eval()
    library = library_pipeline(folder).model.eval()
    context, target = contexts(16, 36)[:, :24], contexts(16, 36)[:, 24:]
    losses, grads = [], []
    for model in (mine, library):
        model.zero_grad()
        loss = model(context=context, future_target=target, num_output_patches=1).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert torch.equal(losses[0], losses[1])
    assert grads[0].keys() <= grads[1].keys()
    for name, grad in grads[1].items():
        ours = grads[0].get(name, torch.zeros_like(grad))
        torch.testing.assert_close(ours, grad, rtol=1e-5, atol=1e-7, msg=name)
        if ".layer.1.self_attention.q" in name or ".layer.1.self_attention.k" in name:
            # a softmax over one key has no gradient (the library's is rounding noise)
            assert float(grad.abs().max()) < 1e-10, name


def test_groups_of_several_series_take_the_library_path(folder: Path) -> None:
    """Any caller that groups series (cross-learning) gets the library's attention."""
    mine = ChronosForecaster.load(ModelSource(path=str(folder)), CPU).module.eval()
    library = library_pipeline(folder).model.eval()
    context, groups = contexts(8, 24), torch.tensor([0, 0, 1, 1, 2, 3, 3, 3])
    with torch.no_grad():
        outputs = [
            m(context=context, group_ids=groups, num_output_patches=1) for m in (mine, library)
        ]
    assert torch.equal(outputs[0].quantile_preds, outputs[1].quantile_preds)


def test_training_with_dropout_keeps_the_loss_distribution(folder: Path) -> None:
    """Dropout's random stream differs from the library's, its effect on the loss does not."""
    mine = ChronosForecaster.load(ModelSource(path=str(folder)), CPU).module.train()
    library = library_pipeline(folder).model.train()
    context, target = contexts(32, 36)[:, :24], contexts(32, 36)[:, 24:]
    means = []
    with torch.no_grad():
        for model in (mine, library):
            torch.manual_seed(0)
            draws = torch.stack(
                [
                    model(context=context, future_target=target, num_output_patches=1).loss
                    for _ in range(40)
                ]
            )
            means.append((draws.mean(), draws.std() / 40**0.5))
    (a, se_a), (b, se_b) = means
    assert abs(float(a - b)) < 4 * float((se_a**2 + se_b**2) ** 0.5)
