"""Adaptation methods: which parameters of a base model train, and how the result is saved.

One model-agnostic layer over every family's ``nn.Module`` (the engine calls :func:`adapt`,
trains what it returns, then :func:`save_adapted`; forecasting calls :func:`load_adapted`).

Kinds (:data:`METHOD_KINDS`):

- ``zero_shot``: nothing trains.
- ``lora``, ``dora``, ``vera``, ``fourierft``: peft's ``get_peft_model`` (no task type) on the
  family's attention linears, or attention + FFN with ``scope: attention+ffn``, or an explicit
  ``target_modules`` list. Base weights stay frozen and bit-identical.
- ``bitfit``: bias terms only. Chronos' T5 linears have *no* biases, so plain BitFit would train
  nothing there. We therefore give every linear matched by ``TargetModules.bias_linears`` that
  lacks a bias a new, zero-initialised, trainable bias (the forward is unchanged at
  initialisation, as BitFit's is) and also unfreeze every bias the model already has. Only
  biases train; the added ones are recorded so that loading re-creates them.
- ``layernorm``: the weights (and biases, if any) of the normalisation layers matched by
  ``TargetModules.norms`` (for T5: the ``layer_norm`` of the attention sub-layers).
- ``full``: every parameter.
- ``scratch``: every parameter of a baseline built from a seeded random init
  (``source: {scratch: true}``, :mod:`vitalfm.models.scratch`); it trains and saves like
  ``full``. It is not an adaptation of a pretrained model, so it stays out of
  :data:`METHOD_KINDS` (the adaptation kinds) and is in :data:`ALL_KINDS`.

Name patterns (``TargetModules`` fields and a method's ``target_modules``) match dotted
module names (``encoder.block.0.layer.0.SelfAttention.q``) in one of two ways:

- a plain pattern is a suffix on dot boundaries, as peft matches a list (``"q"`` and
  ``"SelfAttention.q"`` both match the name above; ``"elfAttention.q"`` does not);
- a pattern holding any of ``\\ ^ $ * + ? { } [ ] | ( )`` is a regular expression that must
  match the whole name (as peft matches a string). This is how T5's attention norms are picked:
  ``r"(encoder\\.block\\.\\d+\\.layer\\.0|decoder\\.block\\.\\d+\\.layer\\.[01])\\.layer_norm"``.

A method's ``target_modules`` replaces the family's patterns: ``attention``/``ffn`` for the
peft kinds, ``bias_linears`` for bitfit and ``norms`` for layernorm.

Saved forms: peft kinds use peft's own folder (``adapter_config.json`` +
``adapter_model.safetensors``); bitfit, layernorm and zero_shot save only the trained tensors
(``tuned_parameters.safetensors`` + ``tuned_parameters.json``); full and scratch models are
saved by the family's ``save_pretrained``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitalfm.errors import ConfigError
from vitalfm.io import atomic_dir, json_text
from vitalfm.models.base import ModelError, TargetModules

log = logging.getLogger(__name__)

METHOD_KINDS = ("zero_shot", "lora", "dora", "vera", "fourierft", "bitfit", "layernorm", "full")
#: Kinds that train every parameter and save the whole model with the family's save_pretrained.
WHOLE_MODEL_KINDS = ("full", "scratch")
#: Every kind a method entry may have: the adaptation kinds and training from scratch.
ALL_KINDS = (*METHOD_KINDS, "scratch")
PEFT_KINDS = ("lora", "dora", "vera", "fourierft")
SCOPES = ("attention", "attention+ffn")

# Defaults of the study (2405.10216: rank 2, "scaling 16" read as alpha) and of peft.
DEFAULT_LORA_ALPHA = 16.0
DEFAULT_LORA_DROPOUT = 0.05
DEFAULT_VERA_RANK = 256
DEFAULT_FOURIER_N_FREQUENCY = 1000
DEFAULT_FOURIER_SCALING = 150.0

TUNED_TENSORS = "tuned_parameters.safetensors"
TUNED_INDEX = "tuned_parameters.json"
TUNED_FORMAT = "vitalfm.tuned_parameters"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# The keys a method entry may hold, and the kinds each key applies to.
_KEY_KINDS: dict[str, tuple[str, ...]] = {
    "rank": ("lora", "dora", "vera"),
    "alpha": ("lora", "dora"),
    "dropout": ("lora", "dora", "vera"),
    "scope": PEFT_KINDS,
    "target_modules": (*PEFT_KINDS, "bitfit", "layernorm"),
    "n_frequency": ("fourierft",),
    "scaling": ("fourierft",),
    "learning_rate": tuple(k for k in ALL_KINDS if k != "zero_shot"),
}
_PEFT_TYPES = {"lora": "LORA", "dora": "LORA", "vera": "VERA", "fourierft": "FOURIERFT"}
_REGEX_CHARS = frozenset("\\^$*+?{}[]|()")


# --- the method specification ---------------------------------------------------------------


def _config_error(name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"method {name!r}: {problem}", fix)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class MethodSpec:
    """One adaptation setting of the study (a ``methods:`` entry of the config).

    Construction validates values; :meth:`from_config` also rejects unknown keys and keys the
    kind does not use, and fills the study's defaults (LoRA/DoRA alpha 16 and dropout 0.05,
    VeRA rank 256). FourierFT's ``n_frequency``/``scaling`` stay ``None`` when not given and
    resolve in :func:`adapt` (peft's 1000/150; 1000 shrinks to fit a small model's layers).
    """

    name: str
    kind: str
    rank: int | None = None
    alpha: float | None = None
    dropout: float = 0.0
    scope: str = "attention"
    target_modules: tuple[str, ...] | None = None
    n_frequency: int | None = None
    scaling: float | None = None
    learning_rate: float | None = None

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"a method needs a non-empty name, got {name!r}", "name it, e.g. lora-r2"
            )
        if self.kind not in ALL_KINDS:
            raise _config_error(
                name, f"unknown kind {self.kind!r}", f"use one of {', '.join(ALL_KINDS)}"
            )
        if self.kind in ("lora", "dora", "vera") and self.rank is None:
            raise _config_error(
                name,
                f"kind {self.kind} needs a rank",
                "add e.g. `rank: 2` (the study's LoRA rank)"
                + (f"; VeRA's usual rank is {DEFAULT_VERA_RANK}" if self.kind == "vera" else ""),
            )
        for key in ("rank", "n_frequency"):
            value = getattr(self, key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise _config_error(name, f"{key} = {value!r}", f"{key} must be a positive integer")
        for key in ("alpha", "scaling", "learning_rate"):
            value = getattr(self, key)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise _config_error(name, f"{key} = {value!r}", f"{key} must be a positive number")
        if not (_is_number(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise _config_error(
                name, f"dropout = {self.dropout!r}", "dropout must be a number in [0, 1)"
            )
        if self.scope not in SCOPES:
            raise _config_error(
                name, f"unknown scope {self.scope!r}", f"use one of {', '.join(SCOPES)}"
            )
        targets = self.target_modules
        if targets is not None:
            if (
                isinstance(targets, str)
                or not isinstance(targets, tuple)
                or not targets
                or not all(isinstance(t, str) and t for t in targets)
            ):
                raise _config_error(
                    name,
                    f"target_modules = {targets!r}",
                    "give a non-empty list of module-name suffixes, e.g. [q, v]",
                )
            for pattern in targets:
                if _is_regex(pattern):
                    try:
                        re.compile(pattern)
                    except re.error as err:
                        raise _config_error(
                            name,
                            f"target_modules pattern {pattern!r} is not a valid regex ({err})",
                            "fix the pattern or use a plain module-name suffix such as q",
                        ) from None

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> MethodSpec:
        """Parse and validate a config entry such as ``{kind: lora, rank: 2}``."""
        if not isinstance(entry, Mapping):
            raise _config_error(
                name, f"expected a mapping, got {type(entry).__name__}", "write {kind: lora, ...}"
            )
        values = {k: v for k, v in entry.items() if v is not None}
        if "name" in values and values.pop("name") != name:
            raise _config_error(
                name, f"its entry names another method ({entry['name']!r})", "drop `name`"
            )
        kind = values.pop("kind", None)
        if kind not in ALL_KINDS:
            raise _config_error(
                name,
                f"unknown or missing kind {kind!r}",
                f"set `kind:` to one of {', '.join(ALL_KINDS)}",
            )
        unknown = sorted(set(values) - set(_KEY_KINDS))
        if unknown:
            raise _config_error(
                name,
                f"unknown key(s) {', '.join(unknown)}",
                f"use only kind, {', '.join(_KEY_KINDS)}",
            )
        unused = sorted(k for k in values if kind not in _KEY_KINDS[k])
        if unused:
            raise _config_error(
                name,
                f"kind {kind} does not use {', '.join(unused)}",
                f"remove {', '.join(unused)} from the entry",
            )
        if kind in ("lora", "dora"):
            values.setdefault("alpha", DEFAULT_LORA_ALPHA)
            values.setdefault("dropout", DEFAULT_LORA_DROPOUT)
        if kind == "vera":
            values.setdefault("rank", DEFAULT_VERA_RANK)
        if "target_modules" in values:
            tm = values["target_modules"]
            values["target_modules"] = tuple(tm) if isinstance(tm, list | tuple) else tm
        for key in ("alpha", "scaling", "learning_rate", "dropout"):
            if _is_number(values.get(key)):
                values[key] = float(values[key])
        return cls(name=name, kind=kind, **values)

    def to_dict(self) -> dict[str, Any]:
        """The config-shaped entry (name, kind and the keys this kind uses that are set)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key, kinds in _KEY_KINDS.items():
            value = getattr(self, key)
            if self.kind in kinds and value is not None:
                out[key] = list(value) if key == "target_modules" else value
        return out


# --- name matching ------------------------------------------------------------------------


def _is_regex(pattern: str) -> bool:
    return any(c in _REGEX_CHARS for c in pattern)


def _matches(name: str, pattern: str) -> bool:
    if _is_regex(pattern):
        return re.fullmatch(pattern, name) is not None
    return name == pattern or name.endswith("." + pattern)


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(_matches(name, p) for p in patterns)


def _peft_targets(patterns: tuple[str, ...]) -> list[str] | str:
    """peft's form: a suffix list, or one regex when any pattern is a regex."""
    if not any(_is_regex(p) for p in patterns):
        return list(patterns)
    return "|".join(
        f"(?:{p})" if _is_regex(p) else rf"(?:(?:.*\.)?{re.escape(p)})" for p in patterns
    )


def _sample_names(module: nn.Module, types_: tuple[type, ...] = (nn.Linear,)) -> str:
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


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _norm_types()) or "norm" in type(module).__name__.lower()


def _sample_norm_names(module: nn.Module) -> str:
    names = [n for n, m in module.named_modules() if n and _is_norm(m)]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "(none)"


def _no_match_error(
    module: nn.Module, spec: MethodSpec, patterns: Iterable[str], what: str, norms: bool = False
) -> ModelError:
    sample = _sample_norm_names(module) if norms else _sample_names(module)
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


def _check_patterns(
    module: nn.Module, spec: MethodSpec, patterns: tuple[str, ...], what: str, norms: bool = False
) -> None:
    """ModelError unless the set matches something (and, for config patterns, each one does)."""
    names = [n for n, _ in module.named_modules() if n]
    if spec.target_modules is not None:
        missing = [p for p in patterns if not any(_matches(n, p) for n in names)]
    else:
        missing = [] if any(_matches_any(n, patterns) for n in names) else list(patterns)
    if missing:
        raise _no_match_error(module, spec, missing, what, norms)


# --- adapting -------------------------------------------------------------------------------


def _patch_input_embeddings(module: nn.Module) -> None:
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


def _shared_embeddings(self: nn.Module) -> nn.Module:
    return self.shared


def _peft_scope(spec: MethodSpec, targets: TargetModules) -> tuple[str, ...]:
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


def _resolve_n_frequency(module: nn.Module, spec: MethodSpec, patterns: tuple[str, ...]) -> int:
    """FourierFT's n_frequency; it must not exceed in*out of any targeted Linear."""
    sizes = {
        n: m.in_features * m.out_features
        for n, m in module.named_modules()
        if n and isinstance(m, nn.Linear) and _matches_any(n, patterns)
    }
    if not sizes:
        return spec.n_frequency or DEFAULT_FOURIER_N_FREQUENCY
    smallest_name = min(sizes, key=sizes.__getitem__)
    smallest = sizes[smallest_name]
    if spec.n_frequency is None:
        if smallest < DEFAULT_FOURIER_N_FREQUENCY:
            log.warning(
                "method %s: FourierFT n_frequency lowered from %d to %d, the size of %s",
                spec.name,
                DEFAULT_FOURIER_N_FREQUENCY,
                smallest,
                smallest_name,
            )
            return smallest
        return DEFAULT_FOURIER_N_FREQUENCY
    if spec.n_frequency > smallest:
        raise ConfigError(
            f"method {spec.name!r}: n_frequency {spec.n_frequency} exceeds in*out = {smallest} "
            f"of the targeted layer {smallest_name}",
            f"set n_frequency <= {smallest} (it must be <= in_features*out_features of every "
            "targeted layer), or target larger layers",
        )
    return spec.n_frequency


def _peft_config(module: nn.Module, spec: MethodSpec, patterns: tuple[str, ...]) -> Any:
    import peft

    target = _peft_targets(patterns)
    if spec.kind in ("lora", "dora"):
        assert spec.rank is not None
        return peft.LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha if spec.alpha is not None else DEFAULT_LORA_ALPHA,
            lora_dropout=spec.dropout,
            target_modules=target,
            use_dora=spec.kind == "dora",
            bias="none",
        )
    if spec.kind == "vera":
        return peft.VeraConfig(
            r=spec.rank or DEFAULT_VERA_RANK,
            vera_dropout=spec.dropout,
            target_modules=target,
            save_projection=True,  # the frozen random A/B travel with the adapter
        )
    return peft.FourierFTConfig(
        n_frequency=_resolve_n_frequency(module, spec, patterns),
        scaling=spec.scaling if spec.scaling is not None else DEFAULT_FOURIER_SCALING,
        target_modules=target,
    )


def _adapt_peft(module: nn.Module, spec: MethodSpec, targets: TargetModules) -> nn.Module:
    import peft

    patterns = _peft_scope(spec, targets)
    _check_patterns(module, spec, patterns, "target module")
    config = _peft_config(module, spec, patterns)
    _patch_input_embeddings(module)
    try:
        return peft.get_peft_model(module, config)
    except ValueError as err:
        hint = (
            "VeRA in this peft version needs every targeted layer to have one shape: "
            "use scope: attention or list same-shaped layers in `target_modules`"
            if spec.kind == "vera"
            else "fix `target_modules` in config to name supported layers (nn.Linear)"
        )
        raise ModelError(
            f"method {spec.name!r}: peft cannot apply {spec.kind} to {type(module).__name__}: "
            f"{err}; its Linear modules are: {_sample_names(module)}",
            hint,
        ) from err


def _add_bias(linear: nn.Linear) -> None:
    weight = linear.weight
    linear.bias = nn.Parameter(
        torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device)
    )


def _bitfit(module: nn.Module, spec: MethodSpec, targets: TargetModules) -> None:
    """Unfreeze every bias; add zero biases to the bias-free linears that match."""
    patterns = spec.target_modules if spec.target_modules is not None else targets.bias_linears
    if patterns:
        linears = [(n, m) for n, m in module.named_modules() if n and isinstance(m, nn.Linear)]
        names = [n for n, _ in linears]
        if spec.target_modules is not None:
            missing = [p for p in patterns if not any(_matches(n, p) for n in names)]
        else:
            missing = [] if any(_matches_any(n, patterns) for n in names) else list(patterns)
        if missing:
            raise _no_match_error(module, spec, missing, "bias linear")
        for name, linear in linears:
            if linear.bias is None and _matches_any(name, patterns):
                _add_bias(linear)
    for name, param in module.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            param.requires_grad_(True)


def _layernorm(module: nn.Module, spec: MethodSpec, targets: TargetModules) -> None:
    patterns = spec.target_modules if spec.target_modules is not None else targets.norms
    if not patterns:
        raise ModelError(
            f"method {spec.name!r}: this family names no normalisation layers to tune",
            "set `target_modules` for this method in config to the norm layers' names",
        )
    _check_patterns(module, spec, tuple(patterns), "norm", norms=True)
    matched = [(n, m) for n, m in module.named_modules() if n and _matches_any(n, patterns)]
    wrong = [n for n, m in matched if not _is_norm(m)]
    if wrong:
        raise ModelError(
            f"method {spec.name!r}: layernorm patterns {list(patterns)} also match modules that "
            f"are not normalisation layers: {', '.join(wrong[:5])}",
            "narrow `target_modules` in config to norm layers; this model's are: "
            + _sample_norm_names(module),
        )
    for _, norm in matched:
        for param in norm.parameters():
            param.requires_grad_(True)


def adapt(module: nn.Module, spec: MethodSpec, targets: TargetModules) -> nn.Module:
    """The module to train for ``spec`` (see the module docstring for each kind).

    peft kinds return a peft model wrapping ``module``; the other kinds set ``requires_grad``
    on ``module`` itself (adding biases for bitfit) and return it.
    """
    if spec.kind in PEFT_KINDS:
        return _adapt_peft(module, spec, targets)
    module.requires_grad_(spec.kind in WHOLE_MODEL_KINDS)
    if spec.kind == "bitfit":
        _bitfit(module, spec, targets)
    elif spec.kind == "layernorm":
        _layernorm(module, spec, targets)
    if spec.kind in ("bitfit", "layernorm") and not any(
        p.requires_grad for p in module.parameters()
    ):
        raise ModelError(
            f"method {spec.name!r}: {spec.kind} found no parameters to train",
            "check that the targeted layers have parameters (e.g. affine norms)",
        )
    return module


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


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, detached (they share storage with the module)."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def _is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, PeftModel)


def merge_for_inference(module: nn.Module) -> nn.Module:
    """Fold a peft adapter into the base weights (the peft wrapper is spent afterwards)."""
    if _is_peft(module):
        return module.merge_and_unload()
    return module


# --- saving and loading -------------------------------------------------------------------------


def _write_atomically(directory: Path, write: Any) -> None:
    """Run ``write(tmp)`` on a temporary sibling of ``directory``, then swap it in."""
    with atomic_dir(directory) as tmp:
        write(tmp)


def save_adapted(module: nn.Module, spec: MethodSpec, directory: Path) -> None:
    """Save what ``spec`` trained into ``directory`` (replaced atomically as a whole)."""
    if spec.kind in WHOLE_MODEL_KINDS:
        raise ModelError(
            f"method {spec.name!r}: a fully trained ({spec.kind}) model has no adapter to save",
            "save it with the family's Forecaster.save_pretrained",
        )
    if spec.kind in PEFT_KINDS:
        if not _is_peft(module):
            raise ModelError(
                f"method {spec.name!r}: expected a peft model to save, got {type(module).__name__}",
                "save the module that adapt() returned, before merging it",
            )
        _write_atomically(Path(directory), lambda tmp: module.save_pretrained(str(tmp)))
        return

    from safetensors.torch import save_file

    tensors = {n: t.cpu().contiguous().clone() for n, t in trainable_state(module).items()}
    index = {
        "format": TUNED_FORMAT,
        "version": 1,
        "method": spec.to_dict(),
        "parameters": {n: list(t.shape) for n, t in tensors.items()},
    }

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / TUNED_TENSORS), metadata={"format": TUNED_FORMAT})
        (tmp / TUNED_INDEX).write_text(json_text(index))

    _write_atomically(Path(directory), write)


def _unreadable(directory: Path, why: str, spec: MethodSpec) -> ModelError:
    return ModelError(
        f"method {spec.name!r}: the adapted weights in {directory} cannot be loaded: {why}",
        "rerun the training step for this method (delete the folder first if it is stale)",
    )


def _load_peft(base: nn.Module, spec: MethodSpec, directory: Path) -> nn.Module:
    from peft import PeftModel
    from safetensors import SafetensorError

    for file in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / file).is_file():
            raise _unreadable(directory, f"{file} is missing", spec)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise _unreadable(directory, f"{ADAPTER_CONFIG} is unreadable ({err})", spec) from None
    if not isinstance(config, dict):
        raise _unreadable(directory, f"{ADAPTER_CONFIG} is not a JSON object", spec)
    peft_type = config.get("peft_type")
    saved_dora = bool(config.get("use_dora", False))
    if peft_type != _PEFT_TYPES[spec.kind] or (
        peft_type == "LORA" and saved_dora != (spec.kind == "dora")
    ):
        saved = "DORA" if saved_dora else peft_type
        raise _unreadable(directory, f"it holds a {saved} adapter, not {spec.kind}", spec)
    _patch_input_embeddings(base)
    try:
        model = PeftModel.from_pretrained(base, str(directory), is_trainable=False)
    except (SafetensorError, ValueError, TypeError, KeyError, OSError, RuntimeError) as err:
        raise _unreadable(directory, f"{type(err).__name__}: {err}", spec) from err
    return model.merge_and_unload()


def _load_selective(base: nn.Module, spec: MethodSpec, directory: Path) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for file in (TUNED_INDEX, TUNED_TENSORS):
        if not (directory / file).is_file():
            raise _unreadable(directory, f"{file} is missing", spec)
    try:
        index = json.loads((directory / TUNED_INDEX).read_text())
        tensors = load_file(str(directory / TUNED_TENSORS))
    except (OSError, ValueError, SafetensorError) as err:
        raise _unreadable(directory, f"{type(err).__name__}: {err}", spec) from None
    if not isinstance(index, dict) or index.get("format") != TUNED_FORMAT:
        raise _unreadable(directory, f"{TUNED_INDEX} is not a {TUNED_FORMAT} index", spec)
    saved_kind = (index.get("method") or {}).get("kind")
    if saved_kind != spec.kind:
        raise _unreadable(directory, f"it was saved by kind {saved_kind!r}, not {spec.kind}", spec)
    if set(tensors) != set(index.get("parameters", {})):
        raise _unreadable(directory, "its tensors do not match its index", spec)
    modules = dict(base.named_modules())
    for name in tensors:  # bitfit's added biases: re-create them before loading
        owner_name, _, leaf = name.rpartition(".")
        owner = modules.get(owner_name)
        if leaf == "bias" and isinstance(owner, nn.Linear) and owner.bias is None:
            _add_bias(owner)
    params = dict(base.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise _unreadable(
            directory, f"this model has no parameter(s) {', '.join(missing[:5])}", spec
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            param = params[name]
            if param.shape != tensor.shape:
                raise _unreadable(
                    directory,
                    f"{name} has shape {list(tensor.shape)}, the model's {list(param.shape)}",
                    spec,
                )
            param.copy_(tensor.to(device=param.device, dtype=param.dtype))
    return base


def load_adapted(base: nn.Module, spec: MethodSpec, directory: Path) -> nn.Module:
    """``base`` with the saved adaptation applied and merged, frozen and in eval mode.

    ``base`` is modified in place (pass a fresh copy). No target list is needed to restore:
    peft's config and our index name every tensor (a saved ``<linear>.bias`` that the base
    lacks is bitfit's added bias and is re-created).
    """
    directory = Path(directory)
    if spec.kind in WHOLE_MODEL_KINDS:
        raise ModelError(
            f"method {spec.name!r}: kind {spec.kind} saves a whole model, not an adaptation",
            "load it with the family's Forecaster.load",
        )
    if not directory.is_dir():
        raise _unreadable(directory, "the folder does not exist", spec)
    if spec.kind in PEFT_KINDS:
        model = _load_peft(base, spec, directory)
    else:
        model = _load_selective(base, spec, directory)
    model.requires_grad_(False)
    return model.eval()
