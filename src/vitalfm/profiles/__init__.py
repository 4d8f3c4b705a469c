"""Check the resources a Snakemake profile (or ``--set-resources``) gives the workflow's jobs.

Snakemake accepts any resource name and value, and an executor plugin only looks at them when
it submits a job. A typo (``gpus:`` for ``gpu:``), a GPU model in the ``gpu`` count or a
``--gres`` smuggled through ``slurm_extra`` therefore passes a dry run and fails, or silently
asks for no GPU, hours later on the cluster. This package finds those before any job runs:

- :func:`check_profile` reads a profile folder or file the way Snakemake does (its own profile
  parser and resource parser) and returns the problems (:mod:`.profile_check`);
- :func:`check_workflow` checks a parsed workflow's rules, with their declared resources merged
  with every profile and command-line override, and :func:`require_mappable_resources` raises
  Snakemake's ``WorkflowError`` with all problems (the hook at the end of the Snakefile;
  :mod:`.workflow_check`);
- ``python -m vitalfm.profiles PROFILE...`` prints the problems and exits 1 if there are any
  (:mod:`.cli`).

The other modules: :mod:`.resources` (which names and values Snakemake and its executors map,
and what the workflow's rules declare), :mod:`.reading` (a profile as Snakemake reads it),
:mod:`.executors` (what each executor needs: its plugin, Kubernetes' GPU maker, SLURM's
pre-emption signal), :mod:`.cluster` (a SLURM profile against the live cluster).
"""

from __future__ import annotations

from vitalfm.profiles.cli import main
from vitalfm.profiles.cluster import check_live_cluster
from vitalfm.profiles.executors import executor_warning, profile_warnings
from vitalfm.profiles.profile_check import check_profile
from vitalfm.profiles.reading import merged_resources, read_profile, workflow_rule_names
from vitalfm.profiles.resources import (
    KNOWN_RESOURCES,
    PREEMPTION_SIGNAL,
    WORKFLOW_DECLARED,
    check_merged,
    check_values,
    resource_value,
)
from vitalfm.profiles.workflow_check import check_workflow, require_mappable_resources

__all__ = [
    "KNOWN_RESOURCES",
    "PREEMPTION_SIGNAL",
    "WORKFLOW_DECLARED",
    "check_live_cluster",
    "check_merged",
    "check_profile",
    "check_values",
    "check_workflow",
    "executor_warning",
    "main",
    "merged_resources",
    "profile_warnings",
    "read_profile",
    "require_mappable_resources",
    "resource_value",
    "workflow_rule_names",
]
