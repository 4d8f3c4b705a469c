"""``layernorm``: only normalisation layers train (LayerNorm tuning, Zhao et al. 2023).

As the follow-up study (2409.11302) describes it: the weights (and biases, if any) of the
normalisation layers in the attention modules, i.e. the family's ``TargetModules.norms``
(for T5: the ``layer_norm`` of the self- and cross-attention sub-layers) or the method's
``target_modules``. Every matched module must be a normalisation layer.

Tuned in place and saved as those tensors (``tuned_parameters.*``), not through peft's
``LNTuningConfig``. peft's LN tuning trains the same parameters (a trainable copy of each
targeted norm swapped in beside the frozen original; on a T5 the weights come out bit-identical
to tuning in place), but merging it back assumes every norm holds a parameter named ``weight``:
Lag-Llama's RMSNorm names its one parameter ``scale`` (as the released checkpoint does), and
peft's merge fails on it with an AttributeError. ``tests/test_method_kinds.py`` checks both
facts, so a peft release that lifts the limit shows up there.
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import SelectiveMethod
from vitalfm.methods.registry import TARGET_MODULES, TRAINING_OVERRIDES, register


@register
class LayerNorm(SelectiveMethod):
    kind = "layernorm"
    summary = "normalisation layers of the attention blocks only (LayerNorm tuning)"
    fields = (TARGET_MODULES, *TRAINING_OVERRIDES)
    marker = "X"

    @classmethod
    def select(cls, module: Any, spec: Any, targets: Any) -> None:
        from vitalfm.methods import modules
        from vitalfm.models.base import ModelError

        patterns = spec.target_modules if spec.target_modules is not None else targets.norms
        if not patterns:
            raise ModelError(
                f"method {spec.name!r}: this family names no normalisation layers to tune",
                "set `target_modules` for this method in config to the norm layers' names",
            )
        modules.check_patterns(module, spec, tuple(patterns), "norm", norms=True)
        matched = [
            (n, m) for n, m in module.named_modules() if n and modules.matches_any(n, patterns)
        ]
        wrong = [n for n, m in matched if not modules.is_norm(m)]
        if wrong:
            raise ModelError(
                f"method {spec.name!r}: layernorm patterns {list(patterns)} also match modules "
                f"that are not normalisation layers: {', '.join(wrong[:5])}",
                "narrow `target_modules` in config to norm layers; this model's are: "
                + modules.sample_norm_names(module),
            )
        for _, norm in matched:
            for param in norm.parameters():
                param.requires_grad_(True)
