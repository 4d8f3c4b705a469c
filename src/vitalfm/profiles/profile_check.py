"""The problems in one profile file: names and values no executor maps, overrides of rules the
workflow lacks, GPUs asked for twice, what the profile's executor refuses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vitalfm.profiles.executors import (
    BUILTIN_EXECUTORS,
    PLUGIN_EXECUTORS,
    installed,
    kubernetes_problems,
)
from vitalfm.profiles.reading import parse_assignments, parse_rule_assignments, read_or_problem
from vitalfm.profiles.resources import (
    MISLEADING,
    check_merged,
    check_values,
    dedupe,
    resource_value,
    unknown_rules,
)

DEFAULT_SCOPE = "default-resources"


def check_profile(
    path: str | Path,
    rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
) -> list[str]:
    """Problems in the profile at ``path`` (a folder or its YAML file); [] if none.

    ``rules``: the workflow's rule names, or {rule: declared resources}; with them, overrides
    of rules the workflow lacks are reported and each rule's declared resources are merged in.
    ``profile``: the profile already read from ``path`` (read here when None).
    """
    if profile is None:
        profile, unreadable = read_or_problem(path)
        if profile is None:
            return [str(unreadable)]
    where = str(path)
    problems: list[str] = []

    executor = profile.get("executor")
    known = BUILTIN_EXECUTORS | PLUGIN_EXECUTORS
    if executor and executor not in known and not installed(executor):  # likely a typo
        problems.append(
            f"{where}: executor {executor!r} is not installed; "
            f"pip install snakemake-executor-plugin-{executor}"
        )

    limits = parse_assignments(profile.get("resources", []))
    defaults = parse_assignments(profile.get("default-resources", []))
    overrides = parse_rule_assignments(profile.get("set-resources", []))
    threads = parse_assignments(profile.get("set-threads", []))
    # A name limited under `resources:` is a custom resource the local scheduler counts,
    # unless it is a look-alike of one the executors map (gpus for gpu).
    custom = set(limits) - set(MISLEADING)

    problems += check_values(f"{where} resources", limits, custom=custom)
    problems += check_values(f"{where} {DEFAULT_SCOPE}", defaults, custom=custom)
    for rule, values in overrides.items():
        problems += check_values(f"{where} set-resources {rule}", values, custom=custom)

    declared: Mapping[str, Mapping[str, Any]] = {}
    if rules is not None:
        declared = rules if isinstance(rules, Mapping) else {name: {} for name in rules}
        problems += unknown_rules(f"{where} set-resources", overrides, declared)
        problems += unknown_rules(f"{where} set-threads", threads, declared)
    for rule in sorted(set(declared) | set(overrides)):
        # Snakemake's order: defaults, then what the rule declares, then set-resources.
        merged = {**defaults, **declared.get(rule, {}), **overrides.get(rule, {})}
        problems += check_merged(f"{where} rule {rule}", merged)
        if executor == "kubernetes":
            evaluated = {k: resource_value(v).value for k, v in merged.items()}
            problems += kubernetes_problems(where, rule, evaluated)
    return dedupe(problems)
