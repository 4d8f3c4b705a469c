"""``python -m vitalfm.profiles PROFILE...``: print each profile's problems and warnings, exit 1
if any profile has a problem. Each profile is read once and checked as a file, against what
its executor needs and, for SLURM on a login node, against the live cluster."""

from __future__ import annotations

import sys

from vitalfm.profiles.cluster import check_live_cluster
from vitalfm.profiles.executors import executor_warning, profile_warnings
from vitalfm.profiles.profile_check import check_profile
from vitalfm.profiles.reading import read_or_problem, workflow_rule_names
from vitalfm.profiles.resources import WORKFLOW_DECLARED, dedupe


def main(argv: list[str] | None = None) -> int:
    """``python -m vitalfm.profiles [--snakefile Snakefile] PROFILE...``: 0 if all are fine."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vitalfm.profiles",
        description="Check Snakemake profiles for resources no executor can map.",
    )
    parser.add_argument("profiles", nargs="+", help="profile folders or files")
    parser.add_argument(
        "--snakefile",
        default="Snakefile",
        help="workflow whose rule names set-resources may use (default: Snakefile; "
        "'none' skips the rule-name check)",
    )
    args = parser.parse_args(argv)
    names = [] if args.snakefile == "none" else workflow_rule_names(args.snakefile)
    rules = {name: WORKFLOW_DECLARED.get(name, {}) for name in names} or None
    failed = False
    for path in args.profiles:
        profile, unreadable = read_or_problem(path)
        warnings: list[str | None] = []
        if profile is None:  # nothing else can be checked
            problems, compared = [str(unreadable)], ""
        else:
            live, live_warnings, compared = check_live_cluster(path, rules, profile=profile)
            problems = dedupe([*check_profile(path, rules, profile=profile), *live])
            warnings = [
                executor_warning(path, profile),
                *profile_warnings(path, rules, profile=profile),
                *live_warnings,
            ]
        for warning in warnings:
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        if compared:
            print(compared)
        if problems:
            failed = True
            print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 1 if failed else 0
