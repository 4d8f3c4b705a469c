"""What each executor needs beyond valid resource names and values.

A profile can name an executor plugin that is not installed here (a warning: its file can still
be checked), the Kubernetes executor refuses a GPU job without ``gpu_manufacturer``, and a
SLURM training job whose ``slurm_extra`` lacks the pre-emption signal would be killed without
a checkpoint (a warning).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vitalfm.profiles.reading import merged_resources, read_profile
from vitalfm.profiles.resources import PREEMPTIBLE_RULES, PREEMPTION_SIGNAL

BUILTIN_EXECUTORS = frozenset({"local", "dryrun", "touch"})
#: Executor plugins a profile may name before they are installed (a warning, not an error).
PLUGIN_EXECUTORS = frozenset(
    {"slurm", "kubernetes", "cluster-generic", "googlebatch", "aws-batch", "lsf", "flux", "tes"}
)
#: A slurm_extra flag that sends SIGTERM before the time limit (``B:`` / ``R:`` forms too).
_TERM_SIGNAL = re.compile(r"--signal[=\s]+(?:[BR]{1,2}:)?(?:TERM|SIGTERM|15)@\d+")


def installed(executor: str) -> bool:
    """Whether the executor's plugin can be imported here."""
    module = "snakemake_executor_plugin_" + executor.replace("-", "_")
    return importlib.util.find_spec(module) is not None


def executor_warning(path: str | Path, profile: Mapping[str, Any] | None = None) -> str | None:
    """A known executor whose plugin is not installed here (the file can still be checked).
    ``profile``: the profile already read from ``path`` (read here when None)."""
    try:
        executor = (read_profile(path) if profile is None else profile).get("executor")
    except Exception:  # check_profile names an unreadable profile
        return None
    if executor in PLUGIN_EXECUTORS and not installed(executor):
        return (
            f"{path}: executor {executor!r} is not installed here (its resources were checked); "
            f"before running with this profile: .venv/bin/pip install "
            f"snakemake-executor-plugin-{executor}"
        )
    return None


def kubernetes_problems(where: str, rule: str, resources: Mapping[str, Any]) -> list[str]:
    """The Kubernetes executor refuses a job with a ``gpu`` resource (even 0) and no
    ``gpu_manufacturer`` of nvidia or amd, at submission."""
    if "gpu" not in resources:
        return []
    maker = str(resources.get("gpu_manufacturer") or "").lower()
    if maker in ("nvidia", "amd"):
        return []
    return [
        f"{where} rule {rule}: the Kubernetes executor needs gpu_manufacturer nvidia or amd "
        f"for a job with a gpu resource (got {resources.get('gpu_manufacturer')!r}); set "
        "gpu_manufacturer: nvidia under default-resources"
    ]


def preemption_warning(where: str, rule: str, resources: Mapping[str, Any]) -> str | None:
    """A training rule whose slurm_extra lacks the SIGTERM-before-the-limit signal."""
    if rule not in PREEMPTIBLE_RULES:
        return None
    extra = str(resources.get("slurm_extra") or "")
    if _TERM_SIGNAL.search(extra):
        return None
    keep = f"{PREEMPTION_SIGNAL} {extra}".strip()
    return (
        f"{where} rule {rule} would run without the pre-emption signal (its slurm_extra is "
        f"{extra!r}): a time limit or pre-emption would kill it with no checkpoint since the "
        f'last one; keep the signal in its slurm_extra: slurm_extra: "{keep}"'
    )


def profile_warnings(
    path: str | Path,
    rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
) -> list[str]:
    """What a SLURM profile allows but should not: a training job without the pre-emption
    signal; [] for other executors or an unreadable profile (check_profile reports that).
    ``profile``: the profile already read from ``path`` (read here when None)."""
    try:
        profile = read_profile(path) if profile is None else profile
        if profile.get("executor") != "slurm":
            return []
        merged = merged_resources(path, rules, profile=profile)
    except Exception:  # check_profile names an unreadable profile
        return []
    found = (preemption_warning(str(path), rule, merged[rule]) for rule in sorted(merged))
    return [warning for warning in found if warning]
