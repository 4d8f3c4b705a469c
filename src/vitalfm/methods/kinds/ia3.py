"""``ia3``: learned rescaling vectors (IA³, Liu et al. 2022), peft's ``IA3Config``.

Each targeted linear gets one trained vector that rescales its output (or, for a feed-forward
layer, its input): out_features values per attention projection. ``scope: attention+ffn`` also
rescales the family's FFN layers, which peft then treats as feed-forward modules. Initialised
to ones, so the forward is unchanged before training.
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.registry import register


@register
class IA3(PeftMethod):
    kind = "ia3"
    summary = "learned rescaling vectors of activations (IA³)"
    fields = PEFT_FIELDS
    peft_type = "IA3"
    marker = "<"

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        feedforward = tuple(p for p in patterns if p in targets.ffn)
        return peft.IA3Config(
            target_modules=peft_targets(patterns),
            feedforward_modules=peft_targets(feedforward) if feedforward else [],
        )
