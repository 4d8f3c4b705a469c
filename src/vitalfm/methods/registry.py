"""The registry of adaptation-method kinds: one :class:`MethodKind` per ``kind:`` of the config.

Every module of :mod:`vitalfm.methods.kinds` defines one kind and registers it with
:func:`register` (which refuses a second kind of the same name). A kind declares, in one place:

- its config fields (:class:`Field`: default, help, JSON schema; a field marked ``sweep`` may
  hold a list and expands into one setting per value, named ``<method>-<suffix><value>``);
- its traits: whether it trains, what it saves (an adapter, a few tensors, a whole model, or
  nothing), which model sources may use it, whether it is the zero-shot reference;
- how it adapts a model, saves and loads what it trained (the torch side, see
  :mod:`vitalfm.methods.bases`).

This module and every kind module stay free of torch at import time: the Snakefile reads the
registry to validate the config and build the DAG. Torch is imported inside the methods that
adapt, save and load.

The kinds are found by importing every module of the :mod:`vitalfm.methods.kinds` package
(that package holds kinds and nothing else, so no list of names is kept by hand); adding a kind
is one new module there.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar

#: What a trained kind leaves in a run's ``model`` folder.
Saves = Literal["adapter", "tensors", "model", "nothing"]


@dataclass(frozen=True)
class Field:
    """One key a method entry may hold.

    ``schema`` is the JSON schema of one value; a ``sweep`` field also accepts a non-empty
    list of such values, and each value becomes its own setting named
    ``<method>-<sweep><value>`` (``lora-r2``). ``default`` ``None`` means "not set"
    (``required`` fields must then be given).
    """

    name: str
    schema: Mapping[str, Any]
    help: str
    default: Any = None
    sweep: str | None = None
    required: bool = False

    def value_schema(self) -> dict[str, Any]:
        """The JSON schema of the config key (a value, or a list of values for a sweep)."""
        one = {**self.schema, "description": self.help}
        if self.sweep is None:
            return one
        many = {"type": "array", "items": dict(self.schema), "minItems": 1, "uniqueItems": True}
        return {"description": self.help, "oneOf": [dict(self.schema), many]}


POSITIVE_INT = MappingProxyType({"type": "integer", "minimum": 1, "maximum": 4096})
POSITIVE_NUMBER = MappingProxyType({"type": "number", "exclusiveMinimum": 0})

#: Keys every trained kind accepts: they override the ``training`` section for one method.
LEARNING_RATE = Field(
    "learning_rate", POSITIVE_NUMBER, "Overrides training.learning_rate for this method."
)
MAX_STEPS = Field(
    "max_steps",
    {"type": "integer", "minimum": 1, "maximum": 10_000_000},
    "Overrides training.max_steps for this method.",
)
TRAINING_OVERRIDES = (LEARNING_RATE, MAX_STEPS)
#: Which layers an additive (peft) method wraps.
SCOPE = Field(
    "scope",
    {"enum": ["attention", "attention+ffn"]},
    "Which layers adapters wrap (the family's patterns), unless target_modules is given.",
    default="attention",
)
TARGET_MODULES = Field(
    "target_modules",
    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
    "Module-name suffixes (or full-name regexes) to adapt, replacing the family's patterns "
    "(e.g. [q, v]).",
)


class MethodKind:
    """A kind of method (``lora``, ``bitfit``, ...): its fields, traits and behaviour.

    Subclasses set the class attributes; :mod:`vitalfm.methods.bases` adds the torch side for
    each way of training (peft adapters, selected tensors, the whole model).
    """

    #: The config's ``kind:`` value.
    kind: ClassVar[str]
    #: One line for the README and error messages.
    summary: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]] = ()
    #: False for kinds that forecast with the model as it is (no finetune job).
    trains: ClassVar[bool] = True
    saves: ClassVar[Saves] = "tensors"
    #: Which model sources may use the kind: pretrained weights, and from-scratch baselines.
    for_pretrained: ClassVar[bool] = True
    for_scratch: ClassVar[bool] = False
    #: The run every other run of the same model is compared with (paired differences).
    is_zero_shot: ClassVar[bool] = False
    #: False for kinds the study adds itself (the synthetic oracle); a config cannot use them.
    configurable: ClassVar[bool] = True
    #: Matplotlib marker of the kind's points in the figures.
    marker: ClassVar[str] = "o"

    @classmethod
    def field(cls, name: str) -> Field | None:
        return next((f for f in cls.fields if f.name == name), None)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.fields)

    @classmethod
    def sweep_field(cls) -> Field | None:
        """The field whose list values expand into settings (at most one per kind)."""
        return next((f for f in cls.fields if f.sweep is not None), None)

    @classmethod
    def check_values(cls, name: str, values: dict[str, Any]) -> None:
        """Kind-specific checks beyond each field's schema (ConfigError); none by default."""

    # The torch side (see vitalfm.methods.bases): adapt, save, load.
    @classmethod
    def adapt(cls, module: Any, spec: Any, targets: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(cls.kind)

    @classmethod
    def save(cls, module: Any, spec: Any, directory: Any) -> None:  # pragma: no cover
        raise NotImplementedError(cls.kind)

    @classmethod
    def load(cls, base: Any, spec: Any, directory: Any) -> Any:  # pragma: no cover
        raise NotImplementedError(cls.kind)


_KINDS: dict[str, type[MethodKind]] = {}
_DISCOVERED = False
K = TypeVar("K", bound=type[MethodKind])


def register(kind: K) -> K:
    """Add a kind to the registry (a class decorator); a second kind of one name is refused.

    A field name two kinds share must mean the same thing: the same schema and help, so that
    the config schema can hold one definition of it.
    """
    name = kind.kind
    if name in _KINDS and _KINDS[name] is not kind:
        raise ValueError(
            f"method kind {name!r} is registered twice ({_KINDS[name].__module__} and "
            f"{kind.__module__}): rename one"
        )
    names = [f.name for f in kind.fields]
    if len(set(names)) != len(names) or "kind" in names or "name" in names:
        raise ValueError(f"method kind {name!r}: repeated or reserved field names {names}")
    if sum(f.sweep is not None for f in kind.fields) > 1:
        raise ValueError(f"method kind {name!r}: at most one field may be a sweep")
    for other in _KINDS.values():
        for mine in kind.fields:
            theirs = other.field(mine.name)
            if theirs is not None and (
                dict(theirs.schema) != dict(mine.schema) or theirs.sweep != mine.sweep
            ):
                raise ValueError(
                    f"method kind {name!r}: field {mine.name!r} differs from kind "
                    f"{other.kind!r}'s field of the same name: give it another name"
                )
    _KINDS[name] = kind
    return kind


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import vitalfm.methods.kinds as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED = True


_SAVES_ORDER = {"nothing": 0, "adapter": 1, "tensors": 2, "model": 3}


def _listing_order(kind: type[MethodKind]) -> tuple[Any, ...]:
    """Untrained kinds, then adapters, selected tensors, whole models; a variant after the
    kind it extends (DoRA after LoRA), else by name."""
    root = next(k for k in reversed(kind.__mro__) if k in _KINDS.values())
    return (_SAVES_ORDER[kind.saves], kind.for_scratch, root.kind, kind is not root)


def method_kinds(*, configurable_only: bool = False) -> dict[str, type[MethodKind]]:
    """Every registered kind by name (``configurable_only``: those a config may use), in a
    reading order: untrained, adapters, selected tensors, whole models."""
    _discover()
    ordered = sorted(_KINDS.values(), key=_listing_order)
    return {k.kind: k for k in ordered if k.configurable or not configurable_only}


def method_kind(kind: str) -> type[MethodKind]:
    """The kind named ``kind`` (KeyError if there is none; callers word the config error)."""
    _discover()
    return _KINDS[kind]


def kinds_where(**traits: Any) -> tuple[str, ...]:
    """Names of the kinds whose traits have the given values, e.g. ``trains=False``."""
    return tuple(
        name
        for name, kind in method_kinds().items()
        if all(getattr(kind, trait) == value for trait, value in traits.items())
    )


def ranked_kinds() -> tuple[str, ...]:
    """Kinds that sweep a ``rank`` (their settings appear in the rank-sweep figure)."""
    sweeps = {name: kind.sweep_field() for name, kind in method_kinds().items()}
    return tuple(name for name, sweep in sweeps.items() if sweep and sweep.name == "rank")


def zero_shot_kind() -> str:
    """The kind every adapted run is compared with."""
    (name,) = kinds_where(is_zero_shot=True)
    return name


def iter_fields() -> Iterator[Field]:
    """Every field of every configurable kind, once per name."""
    seen: set[str] = set()
    for kind in method_kinds(configurable_only=True).values():
        for f in kind.fields:
            if f.name not in seen:
                seen.add(f.name)
                yield f


def method_entry_schema() -> dict[str, Any]:
    """The JSON schema of one ``methods:`` entry, generated from the registered kinds.

    Which keys a given kind takes is checked by :class:`vitalfm.methods.spec.MethodSpec`
    (with a message naming the kind); the schema checks each key's values.
    """
    kinds = method_kinds(configurable_only=True)
    properties: dict[str, Any] = {
        "kind": {
            "description": "; ".join(f"{k}: {v.summary}" for k, v in kinds.items()),
            "enum": list(kinds),
        }
    }
    properties.update({f.name: f.value_schema() for f in iter_fields()})
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind"],
        "properties": properties,
    }


__all__ = [
    "Field",
    "MethodKind",
    "kinds_where",
    "method_entry_schema",
    "method_kind",
    "method_kinds",
    "ranked_kinds",
    "register",
    "zero_shot_kind",
]
