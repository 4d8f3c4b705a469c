"""Config checks written for a person: schema errors in words, and the rules a schema cannot say.

:func:`describe_schema_error` turns a JSON-schema error into a (problem, fix) pair naming the
key, the value and what to write instead, never the schema's own text. :func:`check_study_rules`
refuses values the schema allows but the study cannot use (checked when the config is read, so
the workflow stops before any job): a ``min_horizon_observed`` no horizon can reach, quantile
levels without those the metrics need, unsafe stand-in names.

This module stays free of numpy, pandas and torch: the Snakefile imports it when it is parsed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vitalfm.errors import ConfigError
from vitalfm.evaluation.quantiles import CRPS_LEVELS, OPTIONAL_LEVELS

#: The one pattern for names that become parts of file paths: models, methods and stand-ins.
#: It must match ``$defs.name`` in schemas/config.schema.yaml (a test checks that it does).
NAME_PATTERN = r"^(?!.*\.\.)[a-z0-9][a-z0-9._-]*$"
NAME_MAX_LENGTH = 64
NAME_RULE = (
    "lower-case letters, digits, '.', '_' and '-' only, starting with a letter or digit, "
    f"without '..' and at most {NAME_MAX_LENGTH} characters (the name becomes part of file "
    "paths)"
)
#: Quantile levels the scores need: CRPS and wQL average the pinball loss over them and the
#: 80% interval is 0.1-0.9 (vitalfm.evaluation.quantiles, plain Python like this module).
REQUIRED_QUANTILE_LEVELS = CRPS_LEVELS
#: Levels that only add a metric (the 95% interval's coverage); left out, coverage_95 is NaN.
OPTIONAL_QUANTILE_LEVELS = OPTIONAL_LEVELS

#: Patterns of the schema, in words.
_PATTERN_WORDS = {
    NAME_PATTERN: NAME_RULE,
    "^[a-z_][a-z0-9_]*$": "lower-case letters, digits and '_' only, not starting with a digit",
    "^[0-9EV][0-9]{2,4}$": "an ICD-9 code without the dot: 3 to 5 characters, a digit, E or V "
    "then digits (995.92 is written 99592)",
    "^(auto|cpu|cuda|cuda:[0-9]+)$": "auto, cpu, cuda or cuda:N (N a GPU number)",
}
#: Where a name must follow NAME_RULE: the mapping whose keys are names, and what they name.
_NAMED_SECTIONS = {"models": "model", "methods": "method"}


def _key_path(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return (
        f"{value:,}".replace(",", " ") if isinstance(value, int) and value >= 10_000 else str(value)
    )


def _bounds(schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is not None and high is not None:
        return f" from {_number(low)} to {_number(high)}"
    parts = []
    if low is not None:
        parts.append(f"at least {_number(low)}")
    if xlow is not None:
        parts.append(f"greater than {_number(xlow)}")
    if high is not None:
        parts.append(f"at most {_number(high)}")
    if xhigh is not None:
        parts.append(f"less than {_number(xhigh)}")
    return " " + " and ".join(parts) if parts else ""


def describe(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> str:
    """What a schema allows, in words: "a whole number from 1 to 65 536", "a list of ..."."""
    if "$ref" in schema and root is not None:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return describe(target, root)
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema:
            return ", or ".join(describe(sub, root) for sub in schema[combinator])
    if "const" in schema:
        return "true" if schema["const"] is True else repr(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return "a whole number" + _bounds(schema)
    if kind == "number":
        return "a number" + _bounds(schema)
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        pattern = schema.get("pattern")
        return "a text" + (
            f" of {_PATTERN_WORDS.get(pattern, 'the form ' + pattern)}" if pattern else ""
        )
    if kind == "array":
        items = describe(schema.get("items", {}), root) if schema.get("items") else "values"
        size = ""
        if schema.get("minItems") == schema.get("maxItems") and "minItems" in schema:
            size = f"{schema['minItems']} "
        elif schema.get("minItems", 0) >= 1:
            size = "one or more "
        return f"a list of {size}items, each {items}" if items != "values" else "a list"
    if kind == "object":
        return "a mapping of key: value pairs"
    return "a valid value"


def _example(schema: Mapping[str, Any]) -> str:
    if "default" in schema and not isinstance(schema["default"], dict | list):
        return f" (the default is {schema['default']!r})"
    return ""


def _written(value: Any) -> str:
    """A value as the user wrote it, shortened."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_word(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "empty" if value is None else type(value).__name__


def describe_schema_error(error: Any, root: Mapping[str, Any]) -> tuple[str, str]:
    """(problem, fix) for one ``jsonschema.ValidationError`` of the config ``root`` schema."""
    path = list(error.absolute_path)
    key = _key_path(path)
    validator, value, schema, instance = (
        error.validator,
        error.validator_value,
        error.schema,
        error.instance,
    )
    if "propertyNames" in error.relative_schema_path or "propertyNames" in error.schema_path:
        # a key of a mapping (a model or method name, a vital) is not allowed
        what = _NAMED_SECTIONS.get(str(path[-1]) if path else "", "key")
        if what in ("model", "method"):
            return (
                f"the {what} name {instance!r} under `{key}` is not allowed",
                f"rename it: {what} names use {NAME_RULE}, e.g. "
                + ("chronos-small" if what == "model" else "lora-small"),
            )
        return (
            f"config key {key} has an unknown key {instance!r}",
            f"use {describe(schema, root)} as keys here",
        )
    if validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(set(instance) - set(known)) if isinstance(instance, dict) else []
        name = ".".join([*map(str, path), str(extra[0])]) if extra else key
        return (
            f"config key {name} is not a known setting",
            "remove or rename it; the settings allowed here are " + ", ".join(known)
            if known
            else f"remove it from {key}",
        )
    if validator == "required":
        missing = [name for name in value if name not in instance]
        return (
            f"config key {key} lacks {', '.join(missing)}",
            f"add {' and '.join(f'`{name}: ...`' for name in missing)} under {key} "
            "(see config.yaml for an example)",
        )
    if validator == "minProperties" and path and path[0] in _NAMED_SECTIONS and len(path) == 1:
        what = _NAMED_SECTIONS[path[0]]
        example = (
            "`chronos-t5-standin: {family: chronos, source: {standin: chronos-t5}}`"
            if what == "model"
            else "`zero_shot: {kind: zero_shot}`"
        )
        return (
            f"config key {key} is empty: the study needs at least one {what}",
            f"add a {what} under `{key}`, e.g. {example} (config.yaml lists them all), or leave "
            f"`{key}` out to use the default",
        )
    if validator in ("minProperties", "maxProperties") and path[-1:] == ["source"]:
        return (
            f"config key {key} = {_written(instance)} must name exactly one source",
            "write one of `source: {hub: <id>}`, `source: {path: <folder>}`, "
            "`source: {standin: <name>}` or `source: {scratch: true}`",
        )
    if validator in ("minItems", "maxItems"):
        if not instance:
            return (
                f"config key {key} is an empty list",
                f"give {describe(schema, root)}{_example(schema)}",
            )
        return (
            f"config key {key} = {_written(instance)} has {len(instance)} item(s)",
            f"give {describe(schema, root)}",
        )
    if validator == "uniqueItems":
        return (
            f"config key {key} = {_written(instance)} repeats an item",
            "list each value once",
        )
    if validator == "type" or (validator in ("oneOf", "anyOf") and not _numeric(instance)):
        return (
            f"config key {key} = {_written(instance)} is {_type_word(instance)}, "
            f"not {describe(schema, root)}",
            f"write {describe(schema, root)}{_example(schema)}",
        )
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        too = "large" if validator.endswith("aximum") else "small"
        if isinstance(instance, float) and math.isnan(instance):
            too = "not a number"
        return (
            f"config key {key} = {_number(instance)} is "
            + (too if too == "not a number" else f"too {too}"),
            f"set it to {describe(schema, root)}{_example(schema)}",
        )
    if validator == "enum":
        return (
            f"config key {key} = {_written(instance)} is not one of the allowed values",
            f"use {describe(schema, root)}",
        )
    if validator == "const":
        return (f"config key {key} = {_written(instance)} is not allowed", f"write {value!r}")
    if validator in ("pattern", "maxLength", "minLength") or "$defs" in str(error.schema_path):
        if key.endswith(".source.standin") or schema.get("pattern") == NAME_PATTERN:
            return (
                f"config key {key} = {_written(instance)} is not an allowed name",
                f"rename it: names use {NAME_RULE}",
            )
        return (
            f"config key {key} = {_written(instance)} is not allowed",
            f"write {describe(schema, root)}",
        )
    return (
        f"config key {key} = {_written(instance)} is invalid",
        f"write {describe(schema, root)}",
    )


def _numeric(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, list) and all(_numeric(v) for v in value)
    )


def check_name(name: Any, key: str, what: str) -> None:
    """ConfigError unless ``name`` (a model, method or stand-in name) follows NAME_RULE."""
    if (
        not isinstance(name, str)
        or len(name) > NAME_MAX_LENGTH
        or re.fullmatch(NAME_PATTERN, name) is None
    ):
        raise ConfigError(
            f"the {what} name {name!r} (config key {key}) is not allowed",
            f"rename it: {what} names use {NAME_RULE}",
        )


def check_study_rules(cfg: Mapping[str, Any]) -> None:
    """Refuse values the schema lets through but the study cannot use (see module docstring)."""
    _check_finite(cfg, [])
    for section, what in _NAMED_SECTIONS.items():
        for name in cfg.get(section) or {}:
            check_name(name, f"{section}.{name}", what)
    for model, entry in (cfg.get("models") or {}).items():
        standin = (entry.get("source") or {}).get("standin")
        if standin is not None:
            check_name(standin, f"models.{model}.source.standin", "stand-in")
    _check_min_horizon_observed(cfg)
    _check_quantile_levels(cfg)


def horizon_steps(cfg: Mapping[str, Any]) -> int:
    """Grid steps in a forecast horizon: windows.horizon_hours at grid.frequency_minutes."""
    return round(cfg["windows"]["horizon_hours"] * 60 / cfg["grid"]["frequency_minutes"])


def _check_min_horizon_observed(cfg: Mapping[str, Any]) -> None:
    windows, minutes = cfg["windows"], cfg["grid"]["frequency_minutes"]
    steps = horizon_steps(cfg)
    wanted = windows["min_horizon_observed"]
    if wanted > steps:
        raise ConfigError(
            f"config key windows.min_horizon_observed = {wanted} asks for more observed points "
            f"than a forecast horizon has: windows.horizon_hours = {windows['horizon_hours']:g} h "
            f"at grid.frequency_minutes = {minutes} is {steps} grid steps, so no window would "
            "be kept",
            f"set windows.min_horizon_observed to at most {steps}, or lengthen "
            "windows.horizon_hours (or shorten grid.frequency_minutes) so that the horizon has "
            f"at least {wanted} steps",
        )


def _check_quantile_levels(cfg: Mapping[str, Any]) -> None:
    levels = cfg["forecast"]["quantile_levels"]
    missing = [
        level
        for level in REQUIRED_QUANTILE_LEVELS
        if not any(math.isclose(level, float(v), abs_tol=1e-9) for v in levels)
    ]
    if missing:
        every = sorted({*map(float, levels), *REQUIRED_QUANTILE_LEVELS, *OPTIONAL_QUANTILE_LEVELS})
        raise ConfigError(
            "config key forecast.quantile_levels lacks "
            + ", ".join(f"{level:g}" for level in missing)
            + ": the scores (CRPS, wQL and the 80% interval's coverage) need every level "
            "0.1, 0.2, ..., 0.9",
            "add the missing levels (0.025 and 0.975 add the 95% interval's coverage), e.g. "
            f"`quantile_levels: [{', '.join(f'{v:g}' for v in every)}]`, or leave the key out "
            "to use the default",
        )


def _check_finite(value: Any, path: list[str]) -> None:
    """NaN passes every JSON-schema bound (each comparison is false); infinity passes open
    ones. Neither is a setting."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, [*path, str(key)])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, [*path, str(i)])
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"config key {_key_path(path)} = {value} is not a finite number",
            "write a number (YAML reads .nan and .inf as not-a-number and infinity)",
        )


def yaml_error(path: Any, err: Exception) -> ConfigError:
    """A config file that is not valid YAML: the file, the line and column, what is wrong."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = " ".join(
        str(part) for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part
    )
    return ConfigError(
        f"config file {path} is not valid YAML{where}: {what or err}",
        f"fix the syntax there (open {path} at that line: look for a missing ':', an unclosed "
        "bracket or quote, or tabs used for indentation)",
    )


def check_events(cfg: dict[str, Any], given: bool) -> None:
    """Keep ``evaluation.events`` usable for the configured vitals (called on a validated
    config with defaults filled in).

    The defaults name every bedside vital; a study of fewer vitals keeps the default events of
    its vitals only (so the paper's three vitals need not delete five defaults). An event the
    config writes itself on a vital that is not in ``vitals.names`` is an error: it would
    silently score nothing.
    """
    evaluation = cfg["evaluation"]
    names = list(cfg["vitals"]["names"])
    events = evaluation.get("events") or {}
    for name, entry in events.items():
        has_below, has_above = entry.get("below") is not None, entry.get("above") is not None
        if has_below == has_above:
            raise ConfigError(
                f"config key evaluation.events.{name} needs exactly one of `below` and `above`",
                f"write e.g. `{name}: {{vital: {entry.get('vital', 'mbp')}, below: 65}}`",
            )
    if not given:
        evaluation["events"] = {n: e for n, e in events.items() if e["vital"] in names}
        return
    for name, entry in events.items():
        if entry["vital"] not in names:
            raise ConfigError(
                f"config key evaluation.events.{name} is on vital {entry['vital']}, which is "
                f"not forecast (vitals.names = {names})",
                f"add {entry['vital']} to vitals.names or remove the event",
            )
