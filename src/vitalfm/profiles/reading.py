"""Read a profile as Snakemake's command line does, and what it gives each rule.

:func:`read_profile` uses Snakemake's own profile parser, so a profile is read exactly as a run
would read it; :func:`read_or_problem` turns an unreadable one into the line the checker prints.
:func:`merged_resources` merges a profile's defaults and overrides with what the rules declare,
and :func:`workflow_rule_names` lists the rules a Snakefile defines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vitalfm.profiles.resources import WORKFLOW_DECLARED, resource_value


def profile_file(path: str | Path) -> Path:
    """The file Snakemake reads for a profile folder (profile.yaml, config.yaml, *.v9+.yaml)."""
    from snakemake.cli import get_profile_dir

    path = Path(path)
    if path.is_file():
        return path
    found = get_profile_dir(str(path)) if path.is_dir() else None
    if found is None:
        raise FileNotFoundError(f"no profile.yaml (or config.yaml) in {path}")
    return Path(found[1])


def read_profile(path: str | Path) -> dict[str, Any]:
    """The profile as Snakemake's command line sees it ({option: value or list of strings})."""
    from snakemake.profiles import ProfileConfigFileParser

    file = profile_file(path)
    with open(file) as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def read_or_problem(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the profile, None), or (None, the problem) where it is missing or Snakemake cannot read
    it: read a profile once, and name why it cannot be checked."""
    try:
        return read_profile(path), None
    except FileNotFoundError as err:
        return None, f"{path}: {err}; give a profile folder holding profile.yaml"
    except Exception as err:  # Snakemake's parser raises its own exception types
        return None, f"{path}: Snakemake cannot read this profile ({err}); fix its YAML"


def parse_assignments(entries: Any) -> dict[str, str]:
    """Raw `name=value` strings of default-resources / resources -> {name: raw value}."""
    items = entries if isinstance(entries, list) else str(entries).split()
    parsed = {}
    for item in items:
        name, _, value = str(item).partition("=")
        parsed[name.strip()] = value
    return parsed


def parse_rule_assignments(entries: Any) -> dict[str, dict[str, str]]:
    """`rule:name=value` strings of set-resources -> {rule: {name: raw value}}."""
    items = entries if isinstance(entries, list) else str(entries).split()
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        rule, _, assignment = str(item).partition(":")
        name, _, value = assignment.partition("=")
        parsed.setdefault(rule.strip(), {})[name.strip()] = value
    return parsed


def merged_resources(
    path: str | Path,
    rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each rule's resources under the profile at ``path``, in Snakemake's order (the profile's
    defaults, then what the rule declares, then the profile's set-resources), values evaluated.
    ``rules``: names, or {rule: declared}; by default the training rules' declared signal.
    ``profile``: the profile already read from ``path`` (read here when None)."""
    profile = read_profile(path) if profile is None else profile
    defaults = parse_assignments(profile.get("default-resources", []))
    overrides = parse_rule_assignments(profile.get("set-resources", []))
    if rules is None or not isinstance(rules, Mapping):
        names = set(rules or ()) | set(overrides)
        rules = {name: WORKFLOW_DECLARED.get(name, {}) for name in names}
    merged = {}
    for rule in set(rules) | set(overrides):
        raw = {**defaults, **rules.get(rule, {}), **overrides.get(rule, {})}
        merged[rule] = {k: resource_value(v).value for k, v in raw.items()}
    return merged


def workflow_rule_names(snakefile: str | Path) -> list[str]:
    """Rule names in a Snakefile and the files it includes (``rule name:`` lines)."""
    snakefile = Path(snakefile)
    seen: set[Path] = set()
    names: list[str] = []
    pending = [snakefile]
    while pending:
        file = pending.pop()
        if file in seen or not file.is_file():
            continue
        seen.add(file)
        text = file.read_text()
        names += re.findall(r"^\s*rule\s+([A-Za-z_]\w*)\s*:", text, flags=re.MULTILINE)
        for include in re.findall(r"^\s*include:\s*[\"']([^\"']+)[\"']", text, re.MULTILINE):
            pending.append((file.parent / include).resolve())
    return names
