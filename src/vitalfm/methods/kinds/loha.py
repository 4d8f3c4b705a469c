"""``loha``: low-rank Hadamard-product adapters (LoHa, Hyeon-Woo et al. 2022).

Built by peft's ``LoHaConfig``. The update is (W1a W1b) ⊙ (W2a W2b) scaled by alpha / rank: 2 x
rank x (in + out) trained values per layer, a higher effective rank than LoRA's for the same
count. Defaults are peft's (rank 8, alpha 8); a list of ranks is a sweep (``loha-r2``, ...).
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.kinds.lora import RANK
from vitalfm.methods.registry import POSITIVE_NUMBER, Field, register


@register
class LoHa(PeftMethod):
    kind = "loha"
    summary = "low-rank Hadamard-product adapters (LoHa)"
    fields = (
        Field(RANK.name, RANK.schema, RANK.help, default=8, sweep="r"),
        Field("alpha", POSITIVE_NUMBER, "Scaling numerator: updates scale by alpha / rank.", 8.0),
        *PEFT_FIELDS,
    )
    peft_type = "LOHA"
    marker = ">"

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        return peft.LoHaConfig(r=spec.rank, alpha=spec.alpha, target_modules=peft_targets(patterns))
