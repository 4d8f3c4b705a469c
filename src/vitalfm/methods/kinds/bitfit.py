"""``bitfit``: only bias terms train (Ben Zaken et al. 2022), in one of two variants.

What "bias" means depends on the model. Chronos' T5 has *no* bias in any linear layer (nor in
its layer norms, which are scale-only); its only bias-like parameters are the
relative-attention-bias tables (``relative_attention_bias``: an embedding of 32 buckets x heads
in the first block of the encoder and of the decoder: 2 x 32 x 4 = 256 values on T5-tiny,
2 x 32 x 12 = 768 on T5-base). Plain BitFit therefore trains nothing there. The variants
(``biases:``):

- ``added`` (default): every linear the family names in ``bias_linears`` (or the method's
  ``target_modules``) that lacks a bias gets a new, zero-initialised, trainable one (the
  forward is unchanged at initialisation, as BitFit's is), and every bias the model already has
  is unfrozen. The added biases are recorded in the saved index, so loading re-creates them.
- ``relative_attention``: only the relative-attention-bias tables train (``target_modules``
  may name other embedding tables); a model without such tables is refused.

Saved as the trained tensors only (``tuned_parameters.*``).
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import SelectiveMethod
from vitalfm.methods.registry import TARGET_MODULES, TRAINING_OVERRIDES, Field, register

#: T5's name for its relative-attention-bias tables.
RELATIVE_ATTENTION_BIAS = "relative_attention_bias"


def _added(module: Any, spec: Any, targets: Any) -> None:
    from torch import nn

    from vitalfm.methods import modules
    from vitalfm.methods.saving import add_bias

    patterns = spec.target_modules if spec.target_modules is not None else targets.bias_linears
    if patterns:
        linears = [(n, m) for n, m in module.named_modules() if n and isinstance(m, nn.Linear)]
        modules.check_patterns(
            module, spec, tuple(patterns), "bias linear", names=[n for n, _ in linears]
        )
        for name, linear in linears:
            if linear.bias is None and modules.matches_any(name, patterns):
                add_bias(linear)
    for name, param in module.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            param.requires_grad_(True)


def _relative_attention(module: Any, spec: Any) -> None:
    from torch import nn

    from vitalfm.methods import modules
    from vitalfm.models.base import ModelError

    patterns = spec.target_modules or (RELATIVE_ATTENTION_BIAS,)
    tables = [
        (n, m)
        for n, m in module.named_modules()
        if n and isinstance(m, nn.Embedding) and modules.matches_any(n, patterns)
    ]
    if not tables:
        raise ModelError(
            f"method {spec.name!r}: bitfit with biases: relative_attention found no "
            f"relative-attention-bias table matching {list(patterns)} in {type(module).__name__} "
            f"(its embeddings: {modules.sample_names(module, (nn.Embedding,))})",
            "use `biases: added` for this model, or name its tables in `target_modules`",
        )
    for _, table in tables:
        table.weight.requires_grad_(True)


@register
class BitFit(SelectiveMethod):
    kind = "bitfit"
    summary = "bias terms only (BitFit: added zero biases, or T5's relative-attention bias)"
    fields = (
        Field(
            "biases",
            {"enum": ["added", "relative_attention"]},
            "added: unfreeze every bias and add zero biases to the family's bias-free linears; "
            "relative_attention: train only the relative-attention-bias tables (T5).",
            default="added",
        ),
        TARGET_MODULES,
        *TRAINING_OVERRIDES,
    )
    marker = "P"

    @classmethod
    def select(cls, module: Any, spec: Any, targets: Any) -> None:
        if spec.biases == "relative_attention":
            _relative_attention(module, spec)
        else:
            _added(module, spec, targets)
