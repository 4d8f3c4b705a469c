"""``vera``: vector-based random matrix adaptation (Kopiczko et al. 2024), peft's ``VeraConfig``.

W' = W + Λ_b B Λ_d A with A and B random and frozen, shared by every targeted layer; only the
scaling vectors train. The frozen projections are saved with the adapter. Default rank 256 is
peft's (and the VeRA paper's); the default study sets 64 explicitly.
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.kinds.lora import DROPOUT, RANK
from vitalfm.methods.registry import Field, register


@register
class VeRA(PeftMethod):
    kind = "vera"
    summary = "shared frozen random projections with trained scaling vectors (VeRA)"
    fields = (
        Field(RANK.name, RANK.schema, RANK.help, default=256, sweep="r"),
        Field(DROPOUT.name, DROPOUT.schema, DROPOUT.help, default=0.0),
        *PEFT_FIELDS,
    )
    peft_type = "VERA"
    marker = "^"
    peft_hint = (
        "VeRA in this peft version needs every targeted layer to have one shape: "
        "use scope: attention or list same-shaped layers in `target_modules`"
    )

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        return peft.VeraConfig(
            r=spec.rank,
            vera_dropout=spec.dropout,
            target_modules=peft_targets(patterns),
            save_projection=True,  # the frozen random A/B travel with the adapter
        )
