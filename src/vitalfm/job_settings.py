"""What each job's outputs are computed from: the part of the config a rule's results depend on.

Every rule hands its job's settings to Snakemake as a parameter, ``params: settings=...``, a
canonical JSON string (sorted keys, so reordering a YAML file changes nothing). Snakemake
records each job's params beside its outputs in ``.snakemake/metadata`` and reruns a job whose
params differ from the recorded ones (its ``params`` rerun trigger, on by default); the jobs
downstream follow because their inputs are then newer. So changing a value reruns exactly the
jobs whose settings hold it, and their descendants, and ``snakemake -n`` says why ("Params have
changed since last execution"). Params rather than a settings file per job: no extra rule or
files to keep in step, and Snakemake itself stores, compares and reports them.

The same string is all a job reads of the config: its step (:mod:`vitalfm.steps`) parses it and
takes every value from there, so a value a job computes from but its rerun trigger does not
hold cannot exist. Where a step needs something resolved (a replicate's run and seed, the
training settings with its method's overrides, a stand-in's family), the settings hold it
resolved. The settings of the ``metrics``, ``tables`` and ``figures`` rules keep the config's
order instead of sorting (:func:`ordered`): the order of ``models`` and ``methods`` is the order
of the runs in their tables, so reordering those rerun these three quick jobs.

The settings hold values, never secrets: a ``database.dsn`` with a password is refused when the
config is read (:mod:`vitalfm.config`), before any job or metadata exists.

Left out on purpose, because they change how a job runs, not what it computes (changing them
reruns nothing): ``device`` (where a job runs; results are the same up to floating point),
``training.checkpoint_every`` and ``training.keep_checkpoints`` (resuming gives the same weights),
``vitals.stays_per_query`` (query batching), ``database.connect_timeout_s``. A job gets these as
:class:`Operations` (:func:`operations`), read from the config by its script
(:func:`vitalfm.snakemake_script.operations_of`) and never through ``params``, which are
Snakemake's rerun trigger.

This module stays free of torch and pandas: the Snakefile calls it for every job when it builds
the DAG.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vitalfm.config_rules import horizon_steps
from vitalfm.errors import ConfigError
from vitalfm.methods.registry import TRAINING_OVERRIDES as METHOD_TRAINING_OVERRIDES
from vitalfm.study import Run, standins

#: ``training`` keys that do not change a trained replicate (see the module docstring), and
#: those that choose which replicates exist rather than what one of them computes.
TRAINING_OPERATIONAL = ("checkpoint_every", "keep_checkpoints")
TRAINING_REPLICATES = ("seeds", "all_seeds_for")
#: Method-entry keys that override ``training`` for one run (declared by the method registry).
TRAINING_OVERRIDES = tuple(field.name for field in METHOD_TRAINING_OVERRIDES)


def canonical(settings: Mapping[str, Any]) -> str:
    """The settings as one JSON string with sorted keys: what Snakemake records and compares."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def ordered(settings: Mapping[str, Any]) -> str:
    """The settings as one JSON string in the config's order, for the rules whose outputs
    follow it (the runs of the tables are in the order of ``models`` and ``methods``)."""
    return json.dumps(settings, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Operations:
    """How a job runs, not what it computes: never part of its settings or rerun trigger."""

    #: ``device.preference`` (auto, cpu, cuda, cuda:N) and ``device.lock_dir`` ("": default).
    device_preference: str
    device_lock_dir: str
    #: ``training.checkpoint_every`` and ``training.keep_checkpoints``.
    checkpoint_every: int
    keep_checkpoints: bool
    #: ``vitals.stays_per_query``: ICU stays per chartevents query.
    stays_per_query: int
    #: ``database.connect_timeout_s``: for the user's server.
    connect_timeout_s: int


def operations(cfg: Mapping[str, Any]) -> Operations:
    """The operational keys of a validated config (see the module docstring)."""
    return Operations(
        device_preference=cfg["device"]["preference"],
        device_lock_dir=cfg["device"]["lock_dir"],
        checkpoint_every=cfg["training"]["checkpoint_every"],
        keep_checkpoints=cfg["training"]["keep_checkpoints"],
        stays_per_query=cfg["vitals"]["stays_per_query"],
        connect_timeout_s=cfg["database"]["connect_timeout_s"],
    )


def _vital_names(cfg: Mapping[str, Any]) -> list[str]:
    return list(cfg["vitals"]["names"])


def _database(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Where the data come from. The synthetic database is an input folder; its dsn is unused."""
    db = cfg["database"]
    settings = {"source": db["source"], "schema": db["schema"]}
    if db["source"] != "synthetic":
        settings["dsn"] = db["dsn"]
    return settings


def _ranges(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The min-max ranges of the configured vitals (ranges of other vitals are not used)."""
    ranges = cfg["evaluation"]["minmax_ranges"]
    return {vital: ranges.get(vital) for vital in _vital_names(cfg)}


# --- data rules -------------------------------------------------------------------------------


def synthetic_mimic(cfg: Mapping[str, Any]) -> str:
    return canonical({"synthetic": cfg["synthetic"]})


def check_database(cfg: Mapping[str, Any]) -> str:
    return canonical({"database": _database(cfg), "vitals": _vital_names(cfg)})


def cohort(cfg: Mapping[str, Any]) -> str:
    windows = cfg["windows"]
    return canonical(
        {
            "database": _database(cfg),
            "cohort": cfg["cohort"],
            # stays shorter than one context + horizon are left out
            "min_stay_hours": windows["context_hours"] + windows["horizon_hours"],
        }
    )


def vitals(cfg: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in cfg["vitals"].items() if k != "stays_per_query"}
    return canonical({"database": _database(cfg), "vitals": kept})


def grid(cfg: Mapping[str, Any]) -> str:
    return canonical({"grid": cfg["grid"], "vitals": _vital_names(cfg)})


def split(cfg: Mapping[str, Any]) -> str:
    return canonical({"split": cfg["split"]})


def windows(cfg: Mapping[str, Any]) -> str:
    return canonical({"grid": cfg["grid"], "windows": cfg["windows"], "vitals": _vital_names(cfg)})


# --- model rules ------------------------------------------------------------------------------


def pretrain(cfg: Mapping[str, Any], standin: str) -> str:
    used = standins(cfg)
    if standin not in used:
        raise ConfigError(f"no model in this config uses stand-in {standin!r}", "check `models`")
    return canonical(
        {
            "standin": standin,
            "family": used[standin],
            "pretrain": cfg["pretrain"],
            "horizon_steps": horizon_steps(cfg),
            "frequency_minutes": cfg["grid"]["frequency_minutes"],
        }
    )


def _run(run: Run, seed: int) -> dict[str, Any]:
    """A replicate as its model entry and method setting define it."""
    return {
        "run": run.run_id,
        "seed": int(seed),
        "family": run.family,
        "source": run.source,
        "options": run.options,
        "method": run.method,
    }


def training(cfg: Mapping[str, Any], run: Run) -> dict[str, Any]:
    """The ``training`` section as it applies to ``run`` (its method's overrides applied)."""
    dropped = (*TRAINING_OPERATIONAL, *TRAINING_REPLICATES)
    resolved = {k: v for k, v in cfg["training"].items() if k not in dropped}
    resolved.update({k: run.method[k] for k in TRAINING_OVERRIDES if run.method.get(k) is not None})
    return resolved


def finetune(cfg: Mapping[str, Any], run: Run, seed: int) -> str:
    return canonical(
        {
            **_run(run, seed),
            "training": training(cfg, run),
            "vitals": _vital_names(cfg),
            # the validation forecast that selects the weights is scored on this scale
            "minmax_ranges": _ranges(cfg),
        }
    )


def forecast(cfg: Mapping[str, Any], run: Run, seed: int) -> str:
    settings = {**_run(run, seed), "forecast": cfg["forecast"], "vitals": _vital_names(cfg)}
    if run.is_oracle:  # the oracle regenerates the synthetic stays' latent states
        settings["synthetic"] = cfg["synthetic"]
    return canonical(settings)


# --- scoring and reporting --------------------------------------------------------------------


#: ``evaluation`` keys the metrics rule does not compute from: the ranges (the scores hold
#: them) and the clinical events (rules events and event_metrics).
#: The clinical events' settings (rules events and event_metrics).
EVENT_SETTINGS = ("events", "event_alarm_probability", "event_min_windows")
METRICS_LEAVE_OUT = ("minmax_ranges", *EVENT_SETTINGS)


def score(cfg: Mapping[str, Any]) -> str:
    return canonical({"minmax_ranges": _ranges(cfg)})


def _run_sections(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The sections the study's runs are expanded from (:func:`vitalfm.study.study_runs`), in
    the config's order."""
    training = cfg["training"]
    return {
        "database": {"source": cfg["database"]["source"]},
        "models": cfg["models"],
        "methods": cfg["methods"],
        "training": {k: training[k] for k in TRAINING_REPLICATES if k in training},
    }


def metrics(cfg: Mapping[str, Any]) -> str:
    """The runs (:func:`_run_sections`) and the evaluation settings (less
    :data:`METRICS_LEAVE_OUT`)."""
    return ordered(
        {
            **_run_sections(cfg),
            "evaluation": {
                k: v for k, v in cfg["evaluation"].items() if k not in METRICS_LEAVE_OUT
            },
        }
    )


def report(cfg: Mapping[str, Any]) -> str:
    """Tables and figures: the whole effective config in its order (``study_config.yaml``
    records it), less what only says how jobs ran."""
    settings = {k: v for k, v in cfg.items() if k != "device"}
    settings["training"] = {
        k: v for k, v in cfg["training"].items() if k not in TRAINING_OPERATIONAL
    }
    settings["vitals"] = {k: v for k, v in cfg["vitals"].items() if k != "stays_per_query"}
    settings["database"] = {k: v for k, v in cfg["database"].items() if k != "connect_timeout_s"}
    return ordered(settings)


def events(cfg: Mapping[str, Any]) -> str:
    """Rule ``events``: the events and the alarm threshold (the windows and forecasts are
    inputs)."""
    evaluation = cfg["evaluation"]
    return canonical(
        {
            "events": evaluation["events"],
            "event_alarm_probability": evaluation["event_alarm_probability"],
        }
    )


def event_metrics(cfg: Mapping[str, Any]) -> str:
    """Rule ``event_metrics``: the runs (:func:`_run_sections`), the oracle, the bootstrap
    and the event settings."""
    evaluation = cfg["evaluation"]
    return ordered(
        {
            **_run_sections(cfg),
            "evaluation": {
                "oracle": evaluation["oracle"],
                "bootstrap": evaluation["bootstrap"],
                **{key: evaluation[key] for key in EVENT_SETTINGS},
            },
        }
    )
