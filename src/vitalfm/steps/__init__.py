"""The workflow's steps: one module per rule file of ``workflow/rules/``, one function per rule.

``database`` (synthetic_mimic, check_database), ``cohort`` (cohort, vitals), ``preprocess``
(grid, split, windows), ``models`` (pretrain, finetune, forecast), ``evaluation`` (score,
metrics) and ``report`` (tables, figures). Each ``scripts/<rule>.py`` is a thin adapter that
unpacks the ``snakemake`` object and calls its step, so every step runs and is tested without
Snakemake; :mod:`vitalfm.steps.standalone` calls the model steps from a whole config (tests,
benchmarks).

What a step receives (the meaning of ``params:`` in the rules):

* ``settings``: the rule's ``params: settings=``, the JSON string :mod:`vitalfm.job_settings`
  builds from the config, which the Snakefile validated once when it was parsed. It is the
  job's rerun trigger and the only place a step reads config values from, never
  ``snakemake.config``: a value a job computes from but its rerun trigger does not hold cannot
  exist. What a step needs resolved (a replicate's run and seed, the training settings with
  the method's overrides, a stand-in's family) is resolved in the settings. A step given
  settings that lack a key it needs stops with :class:`SettingsError` before doing anything.
* ``operations``: :class:`vitalfm.job_settings.Operations`, only for the steps that use one:
  how a job runs (device, how often checkpoints are written and whether they are kept,
  query batching, connection timeout), never what it computes, so never a rerun trigger and
  never in ``params``. The script reads them from the config
  (:func:`vitalfm.snakemake_script.operations_of`).
* paths, and the rule's other ``params:``: file paths (``checkpoints``), the inputs' keys
  (``scored``) and constants of the rule (``examples``, ``seed`` of the figures); as params they
  too rerun the job when they change.

Every output is written atomically (under a temporary name, renamed at the end), so a failed or
killed job never leaves a complete-looking result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitalfm.errors import VitalfmError
from vitalfm.io import write_text

if TYPE_CHECKING:
    import pandas as pd

#: A step's settings as a rule passes them (the JSON string) or already parsed.
Settings = str | Mapping[str, Any]


class SettingsError(VitalfmError):
    """A step was handed settings that lack what it computes from."""


def settings_for(settings: Settings, rule: str, needs: Iterable[str]) -> dict[str, Any]:
    """The settings of ``rule``'s step as a dict, checked to hold every key of ``needs``."""
    parsed = json.loads(settings) if isinstance(settings, str) else dict(settings)
    missing = [key for key in needs if key not in parsed]
    if missing:
        builder = "report" if rule in ("tables", "figures") else rule
        raise SettingsError(
            f"the settings given to step {rule} lack {', '.join(missing)} (they hold "
            f"{', '.join(sorted(parsed)) or 'nothing'})",
            f"pass the settings vitalfm.job_settings.{builder} builds from the validated "
            f"config (rule {rule}'s `params: settings=`)",
        )
    return parsed


def write_tsv(frame: pd.DataFrame, path: str | Path) -> None:
    write_text(frame.to_csv(sep="\t", index=False), path)
