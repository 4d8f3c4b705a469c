"""``dora``: weight-decomposed low-rank adaptation (Liu et al. 2024), a variant of LoRA.

peft implements it as LoRA with ``use_dora``; so does this kind: the same fields and defaults
as :mod:`.lora`, saved as a LoRA adapter marked ``use_dora``.
"""

from vitalfm.methods.kinds.lora import LoRA
from vitalfm.methods.registry import register


@register
class DoRA(LoRA):
    kind = "dora"
    summary = "weight-decomposed low-rank adapters (DoRA, a LoRA variant)"
    marker = "D"
    use_dora = True
