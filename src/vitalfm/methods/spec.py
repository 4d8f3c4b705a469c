"""One method setting of the study (:class:`MethodSpec`), and sweeps expanded into settings.

A ``methods:`` entry such as ``{kind: lora, rank: [1, 2]}`` is a sweep: one setting per value of
the kind's sweep field, named ``<method>-<suffix><value>`` (``lora-r1``, ``lora-r2``). Each
setting is a :class:`MethodSpec`: the kind plus every field of that kind, defaults filled in, so
what a run computes with is written out in full (and is what its job's rerun trigger holds).

Torch-free: the Snakefile expands and checks every entry when it is parsed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from vitalfm.config_rules import describe
from vitalfm.errors import ConfigError
from vitalfm.methods.registry import MethodKind, iter_fields, method_kind, method_kinds

#: The key of an expanded setting that names the method entry it came from.
METHOD_KEY = "method"
_REGEX_CHARS = frozenset("\\^$*+?{}[]|()")


def is_regex(pattern: str) -> bool:
    """A target pattern holding a regex character is a full-name regex, else a suffix."""
    return any(c in _REGEX_CHARS for c in pattern)


def _config_error(name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"method {name!r}: {problem}", fix)


def _kind_of(name: str, kind: Any) -> type[MethodKind]:
    known = method_kinds(configurable_only=True)
    if not isinstance(kind, str) or kind not in method_kinds():
        raise _config_error(
            name, f"unknown or missing kind {kind!r}", f"set `kind:` to one of {', '.join(known)}"
        )
    return method_kind(kind)


def _check_value(name: str, key: str, value: Any, schema: Mapping[str, Any]) -> None:
    problem = jsonschema.Draft202012Validator(dict(schema)).is_valid(value) is False or (
        isinstance(value, float) and not math.isfinite(value)
    )
    if isinstance(value, bool) and schema.get("type") in ("integer", "number"):
        problem = True
    if problem:
        raise _config_error(name, f"{key} = {value!r}", f"{key} must be {describe(schema)}")


def _check_targets(name: str, targets: tuple[str, ...]) -> None:
    for pattern in targets:
        if is_regex(pattern):
            try:
                re.compile(pattern)
            except re.error as err:
                raise _config_error(
                    name,
                    f"target_modules pattern {pattern!r} is not a valid regex ({err})",
                    "fix the pattern or use a plain module-name suffix such as q",
                ) from None


class MethodSpec:
    """One adaptation setting: a name, a registered kind and a value for each of its fields.

    ``MethodSpec(name, kind, **values)`` and :meth:`from_config` both check every value
    against its field and fill the kind's defaults; a field left unset reads as ``None``
    (``spec.rank``). Fields of other kinds are refused.
    """

    __slots__ = ("kind", "name", "values")

    def __init__(self, name: str, kind: str, **values: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"a method needs a non-empty name, got {name!r}", "name it, e.g. lora-r2"
            )
        method = _kind_of(name, kind)
        names = sorted(f.name for f in iter_fields())
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise _config_error(
                name, f"unknown key(s) {', '.join(unknown)}", f"use only kind, {', '.join(names)}"
            )
        unused = sorted(k for k in values if method.field(k) is None)
        if unused:
            raise _config_error(
                name,
                f"kind {kind} does not use {', '.join(unused)}",
                f"remove {', '.join(unused)} from the entry",
            )
        resolved: dict[str, Any] = {}
        for f in method.fields:
            value = values.get(f.name, f.default)
            if value is None:
                if f.required:
                    raise _config_error(
                        name, f"kind {kind} needs a {f.name}", f"add e.g. `{f.name}: ...`"
                    )
                continue
            if isinstance(value, list):
                value = tuple(value)
            schema_value = list(value) if isinstance(value, tuple) else value
            _check_value(name, f.name, schema_value, f.schema)
            if f.schema.get("type") == "number":
                value = float(value)
            resolved[f.name] = value
        if "target_modules" in resolved:
            _check_targets(name, resolved["target_modules"])
        method.check_values(name, resolved)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "values", resolved)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("MethodSpec is immutable")

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if self.method.field(key) is None:
            raise AttributeError(f"kind {self.kind} has no field {key!r}")
        return self.values.get(key)

    @property
    def method(self) -> type[MethodKind]:
        """The registered kind: traits, fields and how it adapts, saves and loads."""
        return method_kind(self.kind)

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> MethodSpec:
        """Parse and check a config entry such as ``{kind: lora, rank: 2}``.

        An expanded setting's ``method`` key (the entry it came from) is accepted and dropped.
        """
        if not isinstance(entry, Mapping):
            raise _config_error(
                name, f"expected a mapping, got {type(entry).__name__}", "write {kind: lora, ...}"
            )
        values = {k: v for k, v in entry.items() if v is not None and k != METHOD_KEY}
        if "name" in values and values.pop("name") != name:
            raise _config_error(
                name, f"its entry names another method ({entry['name']!r})", "drop `name`"
            )
        return cls(name, values.pop("kind", None), **values)

    def to_dict(self) -> dict[str, Any]:
        """The config-shaped entry: name, kind and every field that has a value."""
        return {
            "name": self.name,
            "kind": self.kind,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()},
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodSpec) and (self.name, self.kind, self.values) == (
            other.name,
            other.kind,
            other.values,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.kind, tuple(sorted(self.values.items()))))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"MethodSpec(name={self.name!r}, kind={self.kind!r}{', ' if fields else ''}{fields})"


def expand_method(name: str, entry: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One method entry as its settings: {setting name: resolved entry + ``method: name``}."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"config key methods.{name} is not a mapping", "write {kind: lora, ...}")
    method = _kind_of(name, entry.get("kind"))
    if not method.configurable:
        raise ConfigError(
            f"config key methods.{name}: kind {method.kind} is added by the study itself",
            f"use one of {', '.join(method_kinds(configurable_only=True))}",
        )
    sweep = method.sweep_field()
    values = [None] if sweep is None else entry.get(sweep.name, sweep.default)
    if sweep is not None and not isinstance(values, list):
        values = [values]
    settings: dict[str, dict[str, Any]] = {}
    for value in values:
        one = dict(entry) if sweep is None else {**entry, sweep.name: value}
        setting = name if sweep is None else f"{name}-{sweep.sweep}{value}"
        spec = MethodSpec.from_config(setting, one)
        resolved = spec.to_dict()
        del resolved["name"]
        settings[setting] = {**resolved, METHOD_KEY: name}
    return settings
