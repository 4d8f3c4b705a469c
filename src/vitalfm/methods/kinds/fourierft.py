"""``fourierft``: Fourier-domain fine-tuning (Gao et al. 2024), peft's ``FourierFTConfig``.

Each targeted layer trains ``n_frequency`` spectral coefficients at fixed random frequencies;
the weight update is their inverse 2-D DFT times ``scaling``. Defaults are peft's (1000, 150);
the default study sets 100 explicitly. A list of values is a sweep (``fourierft-n100``, ...).
``n_frequency`` cannot exceed in_features * out_features of any targeted layer.
"""

from __future__ import annotations

from typing import Any

from vitalfm.methods.bases import PEFT_FIELDS, PeftMethod
from vitalfm.methods.registry import POSITIVE_NUMBER, Field, register


@register
class FourierFT(PeftMethod):
    kind = "fourierft"
    summary = "trained spectral coefficients per layer (FourierFT)"
    fields = (
        Field(
            "n_frequency",
            {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            "Spectral coefficients per layer; a list is a sweep (one run per value).",
            default=1000,
            sweep="n",
        ),
        Field("scaling", POSITIVE_NUMBER, "Scale of the weight update.", default=150.0),
        *PEFT_FIELDS,
    )
    peft_type = "FOURIERFT"
    marker = "v"

    @classmethod
    def peft_config(cls, module: Any, spec: Any, targets: Any, patterns: tuple[str, ...]) -> Any:
        import peft
        from torch import nn

        from vitalfm.errors import ConfigError
        from vitalfm.methods.modules import matches_any, peft_targets

        sizes = {
            n: m.in_features * m.out_features
            for n, m in module.named_modules()
            if n and isinstance(m, nn.Linear) and matches_any(n, patterns)
        }
        if sizes:
            smallest_name = min(sizes, key=sizes.__getitem__)
            smallest = sizes[smallest_name]
            if spec.n_frequency > smallest:
                raise ConfigError(
                    f"method {spec.name!r}: n_frequency {spec.n_frequency} exceeds in*out = "
                    f"{smallest} of the targeted layer {smallest_name}",
                    f"set n_frequency <= {smallest} (it must be <= in_features*out_features of "
                    "every targeted layer), or target larger layers",
                )
        return peft.FourierFTConfig(
            n_frequency=spec.n_frequency,
            scaling=spec.scaling,
            target_modules=peft_targets(patterns),
        )
