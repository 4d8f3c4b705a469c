"""Study configuration: JSON-schema validation with readable messages and defaults filled in.

The schema (``schemas/config.schema.yaml``) is the single source of truth; the Snakemake
workflow validates against the same file.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vitalfm.config_rules import (
    check_events,
    check_study_rules,
    describe_schema_error,
    yaml_error,
)
from vitalfm.db.dsn import check_dsn
from vitalfm.errors import ConfigError

SCHEMA_RESOURCE = "schemas/config.schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema, its method entry generated from the registered method kinds."""
    from vitalfm.methods import method_entry_schema

    text = resources.files("vitalfm").joinpath(SCHEMA_RESOURCE).read_text()
    schema = yaml.safe_load(text)
    schema["$defs"]["method"] = method_entry_schema()
    return schema


def _fill_defaults(instance: dict[str, Any], schema: Mapping[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


#: Settings that moved: (section, old key) -> (new place, why).
MOVED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("grid", "fill"): (
        "windows.fill.method",
        "gaps are no longer filled over whole stays on the grid (that let readings after a "
        "forecast origin into the context); filling is causal, per window",
    ),
    ("grid", "max_fill_gap_minutes"): ("windows.fill.max_gap_minutes", "filling is per window"),
    ("grid", "max_fill_gap_minutes_per_vital"): (
        "windows.fill.max_gap_minutes_per_vital",
        "filling is per window",
    ),
    ("training", "seed"): ("training.seeds", "a run has one replicate per seed; write a list"),
}


def _check_moved(config: Mapping[str, Any]) -> None:
    for (section, key), (new, why) in MOVED_KEYS.items():
        entry = config.get(section)
        if isinstance(entry, Mapping) and key in entry:
            example = f"[{entry[key]}]" if key == "seed" else repr(entry[key])
            raise ConfigError(
                f"config key {section}.{key} has moved to {new} ({why})",
                f"write `{new}: {example}` instead of `{section}.{key}`",
            )


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` naming the key, the value and what is allowed.
    """
    _check_moved(config)
    schema = load_schema()
    instance = copy.deepcopy(dict(config))
    _fill_defaults(instance, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        problem, fix = describe_schema_error(_first_error(errors), schema)
        more = f" ({len(errors) - 1} more problem(s) after this one)" if len(errors) > 1 else ""
        raise ConfigError(problem + more, fix)
    _check_cross_field(instance)
    check_study_rules(instance)
    check_events(instance, given="events" in (config.get("evaluation") or {}))
    return instance


def _first_error(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """The error to report: for a oneOf/anyOf, the alternative's error when the value has the
    right type for one alternative (``rank: 0`` is too small, not "invalid")."""
    error = errors[0]
    if error.validator in ("oneOf", "anyOf") and error.context:
        typed = [e for e in error.context if e.validator != "type"]
        if len(typed) == 1:
            return typed[0]
    return error


def _check_cross_field(cfg: dict[str, Any]) -> None:
    split = cfg["split"]
    total = split["train"] + split["validation"] + split["test"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"config keys split.train + split.validation + split.test = {total:g}, not 1",
            "make the three split fractions add up to 1 (e.g. 0.7, 0.15, 0.15)",
        )
    low, high = cfg["synthetic"]["stay_hours"]
    if low > high:
        raise ConfigError(
            f"config key synthetic.stay_hours = {[low, high]!r} has min > max",
            "give [shortest, longest] ICU stay length in hours",
        )
    step_h = cfg["grid"]["frequency_minutes"] / 60
    win = cfg["windows"]
    for key in ("context_hours", "horizon_hours", "stride_hours"):
        steps = win[key] / step_h
        if abs(steps - round(steps)) > 1e-9:
            raise ConfigError(
                f"config key windows.{key} = {win[key]!r} is not a whole number of "
                f"{cfg['grid']['frequency_minutes']}-minute grid steps",
                f"use a multiple of {step_h:g} h or change grid.frequency_minutes",
            )
    # whatever the source: Snakemake copies the config into .snakemake/ and the report
    check_dsn(cfg["database"]["dsn"])


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    return validate_config(read_config_file(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file's mapping, not yet validated; a syntax error names its line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "pass an existing file") from None
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} is not a mapping", "write key: value pairs")
    return raw


def minmax_ranges(
    cfg: Mapping[str, Any], vitals: Sequence[str] | None = None
) -> dict[str, tuple[float, float]]:
    """{vital: (low, high)} from ``evaluation.minmax_ranges`` for the configured vitals."""
    wanted = list(vitals) if vitals is not None else list(cfg["vitals"]["names"])
    return check_minmax_ranges(cfg["evaluation"]["minmax_ranges"], wanted)


def check_minmax_ranges(
    ranges: Mapping[str, Sequence[float]], vitals: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """{vital: (low, high)} for every vital of ``vitals``; ConfigError naming the key when
    one is missing or empty (the min-max scale, and model selection on it, need them all)."""
    out: dict[str, tuple[float, float]] = {}
    for vital in vitals:
        if vital not in ranges:
            raise ConfigError(
                f"config key evaluation.minmax_ranges has no range for vital {vital}",
                f"add `{vital}: [low, high]` under evaluation.minmax_ranges (the min-max "
                "scale needs a fixed range for every vital scored)",
            )
        low, high = (float(v) for v in ranges[vital])
        if not high > low:
            raise ConfigError(
                f"config key evaluation.minmax_ranges.{vital} = {[low, high]} has high <= low",
                "give [low, high] with high > low",
            )
        out[vital] = (low, high)
    return out
