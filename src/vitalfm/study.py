"""The study's runs: every (model, method setting) pair the config asks for.

A method entry with a list of ranks (or FourierFT frequencies) is a sweep and expands into one
setting per value, named ``<method>-r<rank>`` (``<method>-n<n_frequency>``); the Snakefile
builds its jobs from :func:`study_runs`. This module stays free of torch so that parsing the
Snakefile is fast.

Baselines are models with ``source: {scratch: true}`` (families persistence, nhits, nbeats,
dlinear): they list their methods, which may only be ``zero_shot`` (persistence, which has
nothing to train) or kind ``scratch`` (train every parameter from a seeded random init on the
study's windows). Kind ``scratch`` is only for them: a pretrained model whose ``methods`` is
left out gets every method except those of kind ``scratch``.

Replicates: every run has one replicate per seed of ``training.seeds`` (or only the first seed,
for settings left out of ``training.all_seeds_for``); a replicate's seed sets its training
(initialisation, data order, dropout) and its forecast sampling. Paths carry it:
``results/runs/<model>/<setting>/seed-<k>``.

With the synthetic database (and ``evaluation.oracle``), the study adds one reference run,
:data:`ORACLE`: the generator's own predictive distribution (:mod:`vitalfm.synthetic.oracle`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vitalfm.errors import ConfigError
from vitalfm.methods import METHOD_KEY, expand_method, kinds_where, method_kind
from vitalfm.models.registry import FAMILIES, Family, baseline_families

#: The reference run of a synthetic study: model and setting name (reserved).
ORACLE = "oracle"
SPLITS_SCORED = ("validation", "test")


@dataclass(frozen=True)
class Run:
    model: str
    family: str
    source: dict[str, Any]  # models.<name>.source: hub, path, standin or scratch
    setting: str
    method: dict[str, Any]  # one expanded method entry (kind + scalar settings)
    options: dict[str, Any] = field(default_factory=dict)  # models.<name>.options
    seeds: tuple[int, ...] = (0,)  # one replicate per seed

    @property
    def run_id(self) -> str:
        return f"{self.model}/{self.setting}"

    def replicate_id(self, seed: int) -> str:
        """``<model>/<setting>/seed-<seed>``: where a replicate's files live."""
        return f"{self.run_id}/seed-{seed}"

    @property
    def replicate_ids(self) -> list[str]:
        return [self.replicate_id(seed) for seed in self.seeds]

    @property
    def trains(self) -> bool:
        """False for kinds that forecast with the model as it is (replicates then differ
        only in forecast sampling)."""
        return method_kind(self.method["kind"]).trains

    @property
    def is_zero_shot(self) -> bool:
        """The run its model's adapted runs are compared with (paired differences)."""
        return method_kind(self.method["kind"]).is_zero_shot

    @property
    def is_oracle(self) -> bool:
        """The synthetic study's reference bound, not a model."""
        return not method_kind(self.method["kind"]).configurable

    @property
    def standin(self) -> str | None:
        return self.source.get("standin")

    @property
    def baseline(self) -> bool:
        """A model built from scratch (persistence, N-HiTS, ...), not a pretrained one."""
        return bool(self.source.get("scratch"))


def method_settings(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Expand sweeps: {setting name: the method entry with one value of its sweep field and
    every default of its kind filled in, plus ``method``: the entry's name}."""
    settings: dict[str, dict[str, Any]] = {}
    for name, entry in cfg["methods"].items():
        for setting, resolved in expand_method(name, entry).items():
            if setting in settings:
                raise ConfigError(
                    f"config key methods.{name}: its setting {setting!r} has the name of a "
                    f"setting of methods.{settings[setting][METHOD_KEY]}",
                    "rename one of the two methods (a sweep's settings are named "
                    "<method>-r<rank> or <method>-n<n_frequency>)",
                )
            settings[setting] = resolved
    return settings


def check_family(model: str, family: str) -> Family:
    """The registered family ``family`` of ``models.<model>``; ConfigError naming the
    registered ones otherwise (the registry imports no torch, so the Snakefile refuses a
    misspelt family before any job)."""
    if family not in FAMILIES:
        raise ConfigError(
            f"config key models.{model}.family = {family!r} is an unknown model family",
            FAMILIES.known_hint(),
        )
    return FAMILIES.get(family)


def check_source(model: str, family: Family, source: Mapping[str, Any]) -> None:
    """ConfigError for a source the family cannot have: a scratch source needs a baseline
    family, a stand-in or hub source a pretrained one."""
    if source.get("scratch") and not family.baseline:
        raise ConfigError(
            f"config key models.{model}.source is scratch, but family {family.name} is a "
            "pretrained family and cannot be built from scratch",
            "give it a hub, path or standin source; from-scratch baselines are the families "
            f"{', '.join(baseline_families())}",
        )
    for kind in ("standin", "hub", "adapter"):
        if source.get(kind) and family.baseline:
            raise ConfigError(
                f"config key models.{model}.source is a {kind}, but family {family.name} is a "
                "from-scratch baseline with no pretrained weights",
                "give it `source: {scratch: true}`, or `source: {path: ...}` for a model of "
                "this family trained and saved here",
            )


def _model_settings(
    cfg: Mapping[str, Any],
    model: str,
    entry: Mapping[str, Any],
    settings: Mapping[str, dict[str, Any]],
) -> list[str]:
    """The method settings a model runs (checked against its source; see the module
    docstring). ``models.<name>.methods`` lists methods (every setting of a sweep) or single
    settings of a sweep (e.g. ``lora-r2``: only that rank for this model)."""
    family = check_family(model, entry["family"])
    check_source(model, family, entry["source"])
    methods = cfg["methods"]
    scratch = bool(entry["source"].get("scratch"))
    listed = entry.get("methods")
    if scratch and not listed:
        raise ConfigError(
            f"config key models.{model}.methods is missing: a model built from scratch "
            "(source: {scratch: true}) must list its methods",
            "add `methods: [scratch]` (a method of kind scratch) for a trained baseline, or "
            "`methods: [zero_shot]` for persistence",
        )
    chosen = (
        list(listed)
        if listed
        else [m for m in methods if method_kind(methods[m]["kind"]).for_pretrained]
    )
    unknown = [m for m in chosen if m not in methods and m not in settings]
    if unknown:
        raise ConfigError(
            f"config key models.{model}.methods names unknown method(s) {unknown}",
            f"use names defined under `methods`: {', '.join(methods)} (or one setting of a "
            "sweep, e.g. lora-r2)",
        )
    picked = [
        setting
        for setting, method in settings.items()
        if method["method"] in chosen or setting in chosen
    ]
    for name in dict.fromkeys(settings[s]["method"] for s in picked):
        kind = methods[name]["kind"]
        method = method_kind(kind)
        if not scratch and not method.for_pretrained:
            raise ConfigError(
                f"config key models.{model}.methods lists {name} (kind {kind}, training from "
                f"a random init), but {model} is a pretrained model",
                f"remove {name} from models.{model}.methods (kind full fine-tunes every "
                "parameter of a pretrained model), or give the model `source: {scratch: true}`",
            )
        if scratch and not method.for_scratch:
            raise ConfigError(
                f"config key models.{model}.methods lists {name} (kind {kind}), but {model} "
                "is built from scratch and has no pretrained weights to adapt",
                f"use a method of kind scratch (or zero_shot for persistence) for models.{model}",
            )
        untrained = not family.has_parameters
        if scratch and untrained and method.trains:
            raise ConfigError(
                f"config key models.{model}.methods lists {name} (kind scratch), but family "
                f"{entry['family']} has no parameters to train",
                f"use `methods: [zero_shot]` for models.{model}",
            )
        if scratch and not untrained and not method.trains:
            raise ConfigError(
                f"config key models.{model}.methods lists {name} ({kind}): {model} would "
                "forecast with untrained, random weights",
                f"use a method of kind scratch for models.{model}",
            )
    return picked


def _seeds_for(cfg: Mapping[str, Any], settings: Mapping[str, dict[str, Any]]) -> Any:
    """A function (setting name -> its seeds), checking ``training.all_seeds_for``."""
    training = cfg.get("training") or {}
    seeds = tuple(int(s) for s in training.get("seeds", [0]))
    wanted = training.get("all_seeds_for", "all")
    if wanted == "all":
        return lambda setting: seeds
    methods = {entry["method"] for entry in settings.values()}
    unknown = [name for name in wanted if name not in settings and name not in methods]
    if unknown:
        raise ConfigError(
            f"config key training.all_seeds_for names {unknown}, which are neither method "
            "settings nor methods of this config",
            f"use `all` or names from: {', '.join([*settings, *sorted(methods - set(settings))])}",
        )
    chosen = set(wanted)
    return lambda setting: (
        seeds if setting in chosen or settings[setting]["method"] in chosen else seeds[:1]
    )


def oracle_run(cfg: Mapping[str, Any]) -> Run | None:
    """The synthetic study's reference run (None for an external database or when off)."""
    database = (cfg.get("database") or {}).get("source", "synthetic")
    if database != "synthetic" or not (cfg.get("evaluation") or {}).get("oracle", True):
        return None
    seeds = tuple(int(s) for s in (cfg.get("training") or {}).get("seeds", [0]))
    (kind,) = kinds_where(configurable=False)
    return Run(
        ORACLE,
        ORACLE,
        {"synthetic": True},
        ORACLE,
        {"kind": kind, METHOD_KEY: ORACLE},
        {},
        seeds[:1],
    )


def study_runs(cfg: Mapping[str, Any], *, oracle: bool = True) -> list[Run]:
    """Every configured (model, method setting) run, then the oracle where there is one."""
    settings = method_settings(cfg)
    seeds_of = _seeds_for(cfg, settings)
    if ORACLE in cfg["models"]:
        raise ConfigError(
            f"config key models.{ORACLE}: the name {ORACLE!r} is reserved for the synthetic "
            "study's reference (the generator's own forecasts)",
            "rename the model",
        )
    runs = []
    for model, entry in cfg["models"].items():
        chosen = _model_settings(cfg, model, entry, settings)
        for setting, method in settings.items():
            if setting in chosen:
                runs.append(
                    Run(
                        model,
                        entry["family"],
                        dict(entry["source"]),
                        setting,
                        method,
                        dict(entry.get("options") or {}),
                        # a family with no parameters forecasts the same for every seed
                        seeds_of(setting)[:1]
                        if not FAMILIES.get(entry["family"]).has_parameters
                        else seeds_of(setting),
                    )
                )
    reference = oracle_run(cfg) if oracle else None
    return [*runs, reference] if reference is not None else runs


def find_run(cfg: Mapping[str, Any], model: str, setting: str) -> Run:
    for run in study_runs(cfg):
        if run.model == model and run.setting == setting:
            return run
    raise ConfigError(
        f"no run {model}/{setting} in this config",
        "use a model under `models` and a method setting from `methods` (e.g. lora-r2)",
    )


def find_replicate(cfg: Mapping[str, Any], model: str, setting: str, seed: int | str) -> Run:
    """The run of ``model/setting``, checking that ``seed`` is one of its replicates."""
    run = find_run(cfg, model, setting)
    try:
        value = int(seed)
    except ValueError:
        value = -1
    if value not in run.seeds:
        raise ConfigError(
            f"run {run.run_id} has no replicate with seed {seed!r} (its seeds: "
            f"{', '.join(map(str, run.seeds))})",
            "use one of its seeds, or add the setting to training.all_seeds_for",
        )
    return run


def standins(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Stand-ins the config uses: {stand-in name: family}."""
    found: dict[str, str] = {}
    for model, entry in cfg["models"].items():
        name = entry["source"].get("standin")
        if name is None:
            continue
        if found.get(name, entry["family"]) != entry["family"]:
            raise ConfigError(
                f"stand-in {name!r} is used with two families ({found[name]}, {entry['family']})",
                f"fix models.{model}.family",
            )
        found[name] = entry["family"]
    return found
