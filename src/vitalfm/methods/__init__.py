"""Adaptation methods: one registered kind per ``kind:`` of the config's ``methods``.

- :mod:`vitalfm.methods.registry`: :class:`MethodKind`, :class:`Field`, ``register`` and the
  lookups (torch-free; the Snakefile reads it to check the config and build the DAG);
- :mod:`vitalfm.methods.spec`: :class:`MethodSpec` (one setting, defaults filled) and sweeps;
- :mod:`vitalfm.methods.kinds`: one module per kind (zero_shot, lora, dora, vera, fourierft,
  bitfit, layernorm, full, scratch, ia3, loha, lokr, and the study's own oracle);
- :mod:`vitalfm.methods.bases`: how each way of training adapts, saves and loads;
- :mod:`vitalfm.methods.adapting` (torch): ``adapt``, ``save_adapted``, ``load_adapted``,
  ``parameter_counts``, ``merge_for_inference`` for the engine.

No other module names a method kind: code that needs a trait asks the registry
(``method_kind(kind).trains``, ``kinds_where(...)``, ``zero_shot_kind()``).
"""

from vitalfm.methods.registry import (
    Field,
    MethodKind,
    kinds_where,
    method_entry_schema,
    method_kind,
    method_kinds,
    ranked_kinds,
    register,
    zero_shot_kind,
)
from vitalfm.methods.spec import METHOD_KEY, MethodSpec, expand_method

__all__ = [
    "METHOD_KEY",
    "Field",
    "MethodKind",
    "MethodSpec",
    "expand_method",
    "kinds_where",
    "method_entry_schema",
    "method_kind",
    "method_kinds",
    "ranked_kinds",
    "register",
    "zero_shot_kind",
]
