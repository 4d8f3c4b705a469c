"""``layernorm``: only normalisation layers train (LayerNorm tuning, Zhao et al. 2023).

As the follow-up study (2409.11302) describes it: the weights (and biases, if any) of the
normalisation layers in the attention modules, i.e. the family's ``TargetModules.norms``
(for T5: the ``layer_norm`` of the self- and cross-attention sub-layers) or the method's
``target_modules``. Every matched module must be a normalisation layer.

Built by peft's ``LNTuningConfig``, which tunes exactly those parameters: it swaps a trainable
copy of each targeted norm in beside the frozen original and merges it back for forecasting.
Training through it gives bit-identical weights to tuning the norms in place (checked on a
tiny T5 with the trainer's clipped AdamW), and saves them as a peft adapter folder.
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PeftMethod
from vitalfm.methods.registry import TARGET_MODULES, TRAINING_OVERRIDES, register


@register
class LayerNorm(PeftMethod):
    kind = "layernorm"
    summary = "normalisation layers of the attention blocks only (LayerNorm tuning)"
    fields = (TARGET_MODULES, *TRAINING_OVERRIDES)
    peft_type = "LN_TUNING"
    marker = "X"
    # peft lists only torch's own norm classes; a family's (T5LayerNorm, RMSNorm) is copied
    # and swapped the same way, as the bit-identity check above shows.
    harmless_warnings = ("Unsupported layer type",)

    @classmethod
    def patterns(cls, module: Any, spec: Any, targets: Any) -> tuple[str, ...]:
        from vitalfm.methods import modules
        from vitalfm.models.base import ModelError

        patterns = spec.target_modules if spec.target_modules is not None else targets.norms
        if not patterns:
            raise ModelError(
                f"method {spec.name!r}: this family names no normalisation layers to tune",
                "set `target_modules` for this method in config to the norm layers' names",
            )
        modules.check_patterns(module, spec, tuple(patterns), "norm", norms=True)
        matched = [n for n, _ in module.named_modules() if n and modules.matches_any(n, patterns)]
        wrong = [n for n in matched if not modules.is_norm(module.get_submodule(n))]
        if wrong:
            raise ModelError(
                f"method {spec.name!r}: layernorm patterns {list(patterns)} also match modules "
                f"that are not normalisation layers: {', '.join(wrong[:5])}",
                "narrow `target_modules` in config to norm layers; this model's are: "
                + modules.sample_norm_names(module),
            )
        return tuple(patterns)

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft

        from vitalfm.methods.modules import peft_targets

        return peft.LNTuningConfig(target_modules=peft_targets(patterns))
