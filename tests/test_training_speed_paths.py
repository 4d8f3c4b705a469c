"""The Trainer's faster step paths change no result: its per-step seeding draws the streams
``torch.manual_seed`` gives, and the losses it records per step are those it trains on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_engine import make_trainer, trainable

from vitalfm.engine import train

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_step_seeding_draws_what_torch_manual_seed_draws() -> None:
    torch.manual_seed(12345)
    expected = (torch.rand(100), torch.empty(1000).bernoulli_(0.9), torch.randn(10))
    torch.manual_seed(0)  # a different state in between
    train.seed_step_generators(12345, torch.device("cpu"))
    drawn = (torch.rand(100), torch.empty(1000).bernoulli_(0.9), torch.randn(10))
    assert all(torch.equal(a, b) for a, b in zip(expected, drawn, strict=True))


def test_training_with_the_step_seeding_equals_training_with_torch_manual_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LoRA dropout 0.1: the weights depend on the dropout masks each step draws
    fast = make_trainer(tmp_path / "fast", max_steps=4, checkpoint_every=100)
    fast.fit()
    monkeypatch.setattr(train, "seed_step_generators", lambda seed, device: torch.manual_seed(seed))
    reference = make_trainer(tmp_path / "reference", max_steps=4, checkpoint_every=100)
    reference.fit()
    a, b = trainable(fast.forecaster), trainable(reference.forecaster)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fast.train_losses == reference.train_losses


def test_train_losses_hold_every_step_and_average_to_the_history(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=6, eval_every=3, checkpoint_every=100)
    trainer.fit()
    losses = trainer.train_losses
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    windows = [row["train_loss"] for row in trainer.history[1:]]  # steps 3 and 6
    assert windows == pytest.approx([sum(losses[:3]) / 3, sum(losses[3:]) / 3])
