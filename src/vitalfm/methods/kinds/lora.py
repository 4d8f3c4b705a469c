"""``lora``: low-rank adapters (Hu et al. 2021) through peft's ``LoraConfig``.

The study's defaults: rank 2 on the attention projections (2405.10216: "rank 2", "scaling
16" read as alpha), dropout 0.05. A list of ranks is a sweep (``lora-r1``, ``lora-r2``, ...).
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.registry import POSITIVE_INT, POSITIVE_NUMBER, Field, register

RANK = Field("rank", POSITIVE_INT, "Adapter rank; a list is a sweep (one run per rank).", sweep="r")
DROPOUT = Field(
    "dropout",
    {"type": "number", "minimum": 0, "maximum": 0.9},
    "Dropout on the adapter's input during training.",
)


@register
class LoRA(PeftMethod):
    kind = "lora"
    summary = "low-rank adapters (LoRA)"
    fields = (
        Field(RANK.name, RANK.schema, RANK.help, default=2, sweep="r"),
        Field("alpha", POSITIVE_NUMBER, "Scaling numerator: updates scale by alpha / rank.", 16.0),
        Field(DROPOUT.name, DROPOUT.schema, DROPOUT.help, default=0.05),
        *PEFT_FIELDS,
    )
    peft_type = "LORA"
    marker = "s"
    #: DoRA is this kind with peft's weight-decomposition switch on (:mod:`.dora`).
    use_dora = False

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        return peft.LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=peft_targets(patterns),
            use_dora=cls.use_dora,
            bias="none",
        )

    @classmethod
    def holds_this_kind(cls, saved: dict[str, Any]) -> bool:
        return saved.get("peft_type") == "LORA" and bool(saved.get("use_dora")) == cls.use_dora
