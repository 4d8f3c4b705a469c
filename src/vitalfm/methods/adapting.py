"""The torch side of the methods, for the engine: adapt a model, save and load what trained.

Each call dispatches to the spec's registered kind (:mod:`vitalfm.methods.kinds`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vitalfm.methods.modules import merge_for_inference, parameter_counts, trainable_state
from vitalfm.methods.spec import MethodSpec
from vitalfm.models.base import TargetModules


def adapt(module: nn.Module, spec: MethodSpec, targets: TargetModules) -> nn.Module:
    """The module to train for ``spec``: a peft model wrapping ``module`` for adapter kinds,
    else ``module`` itself with ``requires_grad`` set on what trains."""
    return spec.method.adapt(module, spec, targets)


def save_adapted(module: nn.Module, spec: MethodSpec, directory: Path) -> None:
    """Save what ``spec`` trained into ``directory`` (replaced atomically as a whole)."""
    spec.method.save(module, spec, Path(directory))


def load_adapted(base: nn.Module, spec: MethodSpec, directory: Path) -> nn.Module:
    """``base`` with the saved adaptation applied and merged, frozen and in eval mode.

    ``base`` is modified in place (pass a fresh copy). No target list is needed to restore:
    peft's config and our index name every tensor.
    """
    model = spec.method.load(base, spec, Path(directory))
    model.requires_grad_(False)
    return model.eval()


__all__ = [
    "adapt",
    "load_adapted",
    "merge_for_inference",
    "parameter_counts",
    "save_adapted",
    "trainable_state",
]
