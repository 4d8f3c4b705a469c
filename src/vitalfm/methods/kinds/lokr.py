"""``lokr``: low-rank Kronecker-product adapters (LoKr, Edalati et al. 2022).

Built by peft's ``LoKrConfig``. The update is W1 ⊗ W2: each layer's in and out sizes are
factored (32 = 4 x 8), W1 is a small full matrix over the first factors and W2 over the second,
itself low-rank (W2a W2b) when the rank is below half its larger side. Defaults are peft's (rank
8, alpha 8); a list of ranks is a sweep (``lokr-r2``, ...).
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.kinds.lora import RANK
from vitalfm.methods.registry import POSITIVE_NUMBER, Field, register


@register
class LoKr(PeftMethod):
    kind = "lokr"
    summary = "low-rank Kronecker-product adapters (LoKr)"
    fields = (
        Field(RANK.name, RANK.schema, RANK.help, default=8, sweep="r"),
        Field("alpha", POSITIVE_NUMBER, "Scaling numerator: updates scale by alpha / rank.", 8.0),
        *PEFT_FIELDS,
    )
    peft_type = "LOKR"
    marker = "d"

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        return peft.LoKrConfig(r=spec.rank, alpha=spec.alpha, target_modules=peft_targets(patterns))
