"""The Snakefile's hook: the resources of a parsed workflow's rules, after every profile and
command-line override, checked before any job runs.

:func:`require_mappable_resources` (called at the end of the Snakefile) raises Snakemake's
``WorkflowError`` with every problem :func:`check_workflow` finds, and warns when a
command-line ``--set-resources`` silently dropped what a profile set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vitalfm.profiles.reading import parse_rule_assignments, read_profile
from vitalfm.profiles.resources import (
    MISLEADING,
    check_merged,
    check_values,
    dedupe,
    unknown_rules,
)


def _raw(resource: Any) -> Any:
    """A Snakemake Resource's raw value (None for a rule's own function)."""
    return getattr(resource, "raw", resource)


def check_workflow(workflow: Any) -> list[str]:
    """Problems in the resources of a parsed workflow's rules, after every override.

    Call after all rules are defined: each rule's ``resources`` then hold its declared values
    merged with the profiles' and the command line's defaults and overrides.
    """
    settings = workflow.resource_settings
    limits = {k: _raw(v) for k, v in dict(settings.resources).items() if not k.startswith("_")}
    custom = set(limits) - set(MISLEADING)
    rules = {rule.name: rule for rule in workflow.rules}
    problems = check_values("--resources", limits, custom=custom)
    used: set[str] = set()
    for name, rule in rules.items():
        resources = {k: _raw(v) for k, v in dict(rule.resources).items()}
        resources = {k: v for k, v in resources.items() if v is not None}
        used |= set(resources)
        problems += check_values(f"rule {name}", resources, custom=custom)
        problems += check_merged(f"rule {name}", resources)
    for name, value in limits.items():
        if name not in used:
            problems.append(
                f"--resources {name}={value} limits a resource no rule asks for; "
                "check the name (the model rules ask for gpu)"
            )
    problems += unknown_rules("--set-resources", dict(settings.overwrite_resources), rules)
    problems += unknown_rules("--set-threads", dict(settings.overwrite_threads), rules)
    return dedupe(problems)


def _profiles_in(argv: list[str]) -> list[Path]:
    """The profile folders a Snakemake command line loads (``--profile``, ``--workflow-profile``,
    else the default workflow profile ``profiles/default``)."""
    found: list[Path] = []
    workflow_profile: str | None = None
    for i, arg in enumerate(argv):
        for option in ("--profile", "--workflow-profile"):
            value = None
            if arg == option and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(option + "="):
                value = arg.split("=", 1)[1]
            if value is None:
                continue
            if option == "--workflow-profile":
                workflow_profile = value
            elif value != "none":
                found.append(Path(value))
    if workflow_profile is None:
        workflow_profile = "profiles/default"
    if workflow_profile != "none" and Path(workflow_profile).exists():
        found.append(Path(workflow_profile))
    return found


def replaced_overrides_warning(workflow: Any, argv: list[str] | None = None) -> str | None:
    """What a command-line ``--set-resources`` silently dropped: Snakemake replaces a
    profile's whole ``set-resources`` with it, so every other rule's entry, and the named
    rule's other keys, are gone."""
    argv = sys.argv if argv is None else argv
    if not any(a == "--set-resources" or a.startswith("--set-resources=") for a in argv):
        return None
    given = {
        rule: set(values) for rule, values in workflow.resource_settings.overwrite_resources.items()
    }
    lost: dict[str, set[str]] = {}
    for path in _profiles_in(argv):
        try:
            profiled = parse_rule_assignments(read_profile(path).get("set-resources", []))
        except Exception:  # an unreadable profile stops Snakemake itself
            continue
        for rule, values in profiled.items():
            missing = set(values) - given.get(rule, set())
            if missing:
                lost.setdefault(rule, set()).update(missing)
    if not lost:
        return None
    listed = "; ".join(f"{rule}: {', '.join(sorted(keys))}" for rule, keys in sorted(lost.items()))
    return (
        "the command line's --set-resources replaced the profile's whole set-resources "
        f"(Snakemake does not merge them), so these jobs lose what the profile set: {listed}. "
        "Make the change in the profile, or in a copy of it (cp -r profiles/slurm "
        "profiles/my-site; README, Overriding a resource), instead of on the command line"
    )


def require_mappable_resources(workflow: Any) -> None:
    """Stop the run before any job with every resource problem of :func:`check_workflow`;
    warn when a command-line override dropped what a profile set."""
    if workflow.is_main_process:
        warning = replaced_overrides_warning(workflow)
        if warning:
            print(f"WARNING: {warning}", file=sys.stderr)
    problems = check_workflow(workflow)
    if problems:
        from snakemake.exceptions import WorkflowError

        raise WorkflowError(
            "Resources that no executor can map (fix the profile or the command line):\n  - "
            + "\n  - ".join(problems)
        )
