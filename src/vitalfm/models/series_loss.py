"""Per-series training losses: the reductions of :meth:`vitalfm.models.base.Forecaster.loss`.

Every family computes its objective as a term per scored point of each series (a target
point, a token, a patch position) and reduces the terms to the batch's scalar loss, which the
Trainer minimises. ``reduction="none"`` instead gives each series' own loss [B], from the same
forward pass: what the scalar loss would be for a batch holding that series alone. Since no
family's network mixes the rows of a batch (each row is its own Chronos-2 group, its own
MOIRAI sample, its own scaler), a series' loss depends on that series only, whatever else
shares the batch (tests/test_patient_isolation_training.py).

How the scalar combines the series (:attr:`Forecaster.loss_pooling`): ``"points"``, every
scored point of the batch weighs the same, so a series counts by its number of scored points;
``"series"``, the mean of the series' losses, every series weighing the same.
"""

from __future__ import annotations

from typing import Literal

import torch

from vitalfm.models.base import ModelError

#: What ``Forecaster.loss(batch, reduction)`` accepts.
Reduction = Literal["mean", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "none")
#: How a family's scalar loss combines its series (see the module docstring).
POOLINGS: tuple[str, ...] = ("points", "series")


def check_reduction(reduction: str) -> None:
    """A ModelError unless ``reduction`` is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ModelError(
            f"loss reduction {reduction!r} is not one of {', '.join(REDUCTIONS)}",
            'call loss(batch) for the training loss or loss(batch, reduction="none") for '
            "one loss per series",
        )


def pooled(terms: torch.Tensor, scored: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-point terms [B, K] over the points ``scored`` [B, K] marks (bool or 0/1).

    ``"mean"``: the mean over every scored point of the batch, computed as the families always
    computed their scalar loss (``(terms * scored).sum() / scored.sum().clamp_min(1)``), so the
    training loss is bit-identical to before per-series losses existed. ``"none"``: each row's
    mean over its own scored points (0 for a row with none) [B].
    """
    check_reduction(reduction)
    if reduction == "mean":
        return (terms * scored).sum() / scored.sum().clamp_min(1)
    return (terms * scored).sum(dim=-1) / scored.sum(dim=-1).clamp_min(1)
