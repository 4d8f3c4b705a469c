"""Finding the layers a method touches in an ``nn.Module``, and counting what trains.

Name patterns (a family's ``TargetModules`` and a method's ``target_modules``) match dotted
module names (``encoder.block.0.layer.0.SelfAttention.q``) in one of two ways:

- a plain pattern is a suffix on dot boundaries, as peft matches a list (``"q"`` and
  ``"SelfAttention.q"`` both match the name above; ``"elfAttention.q"`` does not);
- a pattern holding any of ``\\ ^ $ * + ? { } [ ] | ( )`` is a regular expression that must
  match the whole name (as peft matches a string). This is how T5's attention norms are picked:
  ``r"(encoder\\.block\\.\\d+\\.layer\\.0|decoder\\.block\\.\\d+\\.layer\\.[01])\\.layer_norm"``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from typing import Any

from torch import nn

from vitalfm.methods.spec import MethodSpec, is_regex
from vitalfm.models.base import ModelError, TargetModules


def matches(name: str, pattern: str) -> bool:
    if is_regex(pattern):
        return re.fullmatch(pattern, name) is not None
    return name == pattern or name.endswith("." + pattern)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(matches(name, p) for p in patterns)


def peft_targets(patterns: tuple[str, ...]) -> list[str] | str:
    """peft's form: a suffix list, or one regex when any pattern is a regex."""
    if not any(is_regex(p) for p in patterns):
        return list(patterns)
    return "|".join(
        f"(?:{p})" if is_regex(p) else rf"(?:(?:.*\.)?{re.escape(p)})" for p in patterns
    )


def sample_names(module: nn.Module, types_: tuple[type, ...] = (nn.Linear,)) -> str:
    """A readable sample of the model's module names of some types, for error messages."""
    names = [n for n, m in module.named_modules() if n and isinstance(m, types_)]
    if not names:
        return "(none)"
    suffixes = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names))
    shown = ", ".join(suffixes[:20]) + (", ..." if len(suffixes) > 20 else "")
    examples = ", ".join(names[:3])
    return f"{shown} (e.g. {examples})"


def _norm_types() -> tuple[type, ...]:
    base: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
    rms = getattr(nn, "RMSNorm", None)
    return (*base, rms) if rms is not None else base


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, _norm_types()) or "norm" in type(module).__name__.lower()


def sample_norm_names(module: nn.Module) -> str:
    names = [n for n, m in module.named_modules() if n and is_norm(m)]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "(none)"


def no_match_error(
    module: nn.Module, spec: MethodSpec, patterns: Iterable[str], what: str, norms: bool = False
) -> ModelError:
    sample = sample_norm_names(module) if norms else sample_names(module)
    source = (
        "`target_modules` of this method in config"
        if spec.target_modules is not None
        else "the family's target_modules() or set `target_modules` for this method in config"
    )
    return ModelError(
        f"method {spec.name!r} ({spec.kind}): {what} pattern(s) {list(patterns)} match no "
        f"module of {type(module).__name__}; its {'norm' if norms else 'Linear'} modules are: "
        f"{sample}",
        f"fix {source} (patterns are dotted-name suffixes such as q, or full-name regexes)",
    )


def check_patterns(
    module: nn.Module,
    spec: MethodSpec,
    patterns: tuple[str, ...],
    what: str,
    norms: bool = False,
    names: list[str] | None = None,
) -> None:
    """ModelError unless the set matches something (and, for config patterns, each one does)."""
    if names is None:
        names = [n for n, _ in module.named_modules() if n]
    if spec.target_modules is not None:
        missing = [p for p in patterns if not any(matches(n, p) for n in names)]
    else:
        missing = [] if any(matches_any(n, patterns) for n in names) else list(patterns)
    if missing:
        raise no_match_error(module, spec, missing, what, norms)


def scope_patterns(spec: MethodSpec, targets: TargetModules) -> tuple[str, ...]:
    """The layers an additive method wraps: its ``target_modules``, else the family's
    attention patterns (and FFN patterns for ``scope: attention+ffn``)."""
    if spec.target_modules is not None:
        return spec.target_modules
    if spec.scope == "attention+ffn":
        if not targets.ffn:
            raise ModelError(
                f"method {spec.name!r}: scope attention+ffn, but this family names no FFN layers",
                "use scope: attention, or list the layers in `target_modules`",
            )
        return (*targets.attention, *targets.ffn)
    return tuple(targets.attention)


def _shared_embeddings(self: nn.Module) -> nn.Module:
    return self.shared


def patch_input_embeddings(module: nn.Module) -> None:
    """Give a model whose ``get_input_embeddings`` raises (Chronos-Bolt) its ``shared`` table.

    peft with transformers 5 calls ``get_input_embeddings`` on models that declare tied
    weights; ChronosBoltModelForForecasting inherits the base class' NotImplementedError. We
    patch the instance (a bound method, so deep copies stay self-consistent), not the class.
    """
    getter = getattr(module, "get_input_embeddings", None)
    if getter is None:
        return
    try:
        getter()
    except NotImplementedError:
        if isinstance(getattr(module, "shared", None), nn.Embedding):
            module.get_input_embeddings = types.MethodType(_shared_embeddings, module)


def require_something_trains(module: nn.Module, spec: MethodSpec) -> None:
    if not any(p.requires_grad for p in module.parameters()):
        raise ModelError(
            f"method {spec.name!r}: {spec.kind} found no parameters to train",
            "check that the targeted layers have parameters (e.g. affine norms)",
        )


# --- counting and state -----------------------------------------------------------------------


def _unique_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter once, also when two Parameter objects view the same storage."""
    seen_ids: set[int] = set()
    seen_storage: set[tuple[Any, ...]] = set()
    unique = []
    for param in module.parameters():  # already deduplicated by identity
        if id(param) in seen_ids:
            continue
        seen_ids.add(id(param))
        if param.device.type != "meta" and param.numel() > 0:
            key = (param.data_ptr(), tuple(param.shape), tuple(param.stride()))
            if key in seen_storage:
                continue
            seen_storage.add(key)
        unique.append(param)
    return unique


def parameter_counts(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter elements; tied weights count once, buffers not at all."""
    params = _unique_parameters(module)
    return (
        sum(p.numel() for p in params if p.requires_grad),
        sum(p.numel() for p in params),
    )


def trainable_state(module: nn.Module) -> dict[str, Any]:
    """The trainable parameters by name, detached (they share storage with the module)."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def merge_for_inference(module: nn.Module) -> nn.Module:
    """Fold a peft adapter into the base weights (the peft wrapper is spent afterwards)."""
    if is_peft(module):
        return module.merge_and_unload()
    return module
