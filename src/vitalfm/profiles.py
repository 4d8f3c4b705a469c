"""Check the resources a Snakemake profile (or ``--set-resources``) gives the workflow's jobs.

Snakemake accepts any resource name and value, and an executor plugin only looks at them when
it submits a job. A typo (``gpus:`` for ``gpu:``), a GPU model in the ``gpu`` count or a
``--gres`` smuggled through ``slurm_extra`` therefore passes a dry run and fails, or silently
asks for no GPU, hours later on the cluster. This module finds those before any job runs:

- :func:`check_profile` reads a profile folder or file the way Snakemake does (its own profile
  parser and resource parser) and returns the problems;
- :func:`check_workflow` checks a parsed workflow's rules, with their declared resources merged
  with every profile and command-line override, and :func:`require_mappable_resources` raises
  Snakemake's ``WorkflowError`` with all problems (the hook at the end of the Snakefile);
- ``python -m vitalfm.profiles PROFILE...`` prints the problems and exits 1 if there are any.

Which names mean something: Snakemake's standard resources, the resources the SLURM executor
plugin maps to ``sbatch`` flags, and any name limited with ``--resources`` (a custom resource
that only the local scheduler counts). The value rules mirror the plugin's own checks
(``snakemake_executor_plugin_slurm.utils.set_gres_string`` and ``validation.py``), applied to
the values before submission instead of at it.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Snakemake's standard resources (mem/disk come with _mb and _mib forms).
SNAKEMAKE_RESOURCES = frozenset(
    {
        "mem",
        "mem_mb",
        "mem_mib",
        "disk",
        "disk_mb",
        "disk_mib",
        "runtime",
        "tmpdir",
        "gpu",
        "gpu_model",
        "gpu_manufacturer",
    }
)
# What snakemake-executor-plugin-slurm 2.x turns into sbatch flags (its docs and submit code;
# tests/test_profiles.py checks this list against the installed plugin's source).
SLURM_RESOURCES = frozenset(
    {
        "slurm_partition",
        "slurm_account",
        "slurm_extra",
        "slurm_cluster",
        "cluster",
        "clusters",
        "constraint",
        "qos",
        "nodes",
        "tasks",
        "tasks_per_node",
        "tasks_per_gpu",
        "cpus_per_task",
        "cpus_per_gpu",
        "mem_mb_per_cpu",
        "mpi",
        "gres",
    }
)
#: Resources the Kubernetes executor plugin reads besides Snakemake's standard ones.
KUBERNETES_RESOURCES = frozenset({"machine_type", "scale"})
KNOWN_RESOURCES = SNAKEMAKE_RESOURCES | SLURM_RESOURCES | KUBERNETES_RESOURCES

# Names that look right but that the SLURM plugin's sbatch call ignores (its job step reads
# some of them, so the step would ask for GPUs the allocation does not have).
MISLEADING = {
    "gpus": "gpu",
    "nvidia_gpu": "gpu",
    "num_gpus": "gpu",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "time": "runtime",
    "walltime": "runtime",
    "memory": "mem_mb",
    "threads": "set-threads (not a resource)",
    "cpus": "cpus_per_task (or set-threads)",
}

# Whole numbers; cpus_per_task / cpus_per_gpu may be negative (the plugin then sends no CPU
# flag, for clusters that refuse one), the others not.
NON_NEGATIVE_INTS = frozenset(
    {
        "gpu",
        "mem_mb",
        "mem_mib",
        "disk_mb",
        "disk_mib",
        "mem_mb_per_cpu",
        "nodes",
        "tasks",
        "tasks_per_node",
        "tasks_per_gpu",
    }
)
SIGNED_INTS = frozenset({"cpus_per_task", "cpus_per_gpu"})
HUMAN_FRIENDLY = frozenset({"mem", "disk", "runtime"})

# The plugin's GRES and GPU-model formats (utils.set_gres_string).
GRES_FORMAT = re.compile(r"^[a-zA-Z0-9_]+(:[a-zA-Z0-9_\.]+)?(:\d+[TGM]?)?$")
GPU_MODEL_FORMAT = re.compile(r"^[a-zA-Z0-9_\.]+$")

# Names a CLI resource expression may use; their value is only known per job.
DYNAMIC_NAMES = frozenset({"attempt", "input", "threads", "wildcards", "rulename"})

# sbatch options the plugin manages -> the resource to use instead.
SLURM_EXTRA_REPLACEMENTS = {
    "generic resources (GRES)": 'gres: "gpu:1" (or gpu: 1)',
    "GPU allocation": "gpu: 1 (with gpu_model: <type> for a GPU type)",
    "partition": "slurm_partition",
    "account": "slurm_account",
    "memory": "mem_mb",
    "memory per CPU": "mem_mb_per_cpu",
    "runtime/time limit": "runtime",
    "CPUs per task": "cpus_per_task (or set-threads)",
    "CPUs per GPU": "cpus_per_gpu",
    "tasks per GPU": "tasks_per_gpu",
    "number of tasks": "tasks",
    "number of nodes": "nodes",
    "quality of service": "qos",
    "node constraints": "constraint",
    "cluster specification": "slurm_cluster",
}

BUILTIN_EXECUTORS = frozenset({"local", "dryrun", "touch"})
#: Executor plugins a profile may name before they are installed (a warning, not an error).
PLUGIN_EXECUTORS = frozenset(
    {"slurm", "kubernetes", "cluster-generic", "googlebatch", "aws-batch", "lsf", "flux", "tes"}
)


#: The signal that makes pre-emption and time limits safe for a training job: SIGTERM 5 min
#: before the limit, so it writes a checkpoint and exits (the next attempt resumes). The
#: training rules declare it themselves (workflow/rules/models.smk), so overriding their other
#: resources keeps it; only a slurm_extra without it loses it.
PREEMPTION_SIGNAL = "--signal=TERM@300"
PREEMPTIBLE_RULES = ("pretrain", "finetune")
#: What the workflow's rules declare that a profile check merges in (tests/test_profiles.py
#: checks it against a dry run): GPUs for the model rules, the signal for the training ones.
WORKFLOW_DECLARED: dict[str, dict[str, Any]] = {
    "pretrain": {"gpu": 1, "slurm_extra": PREEMPTION_SIGNAL},
    "finetune": {"gpu": 1, "slurm_extra": PREEMPTION_SIGNAL},
    "forecast": {"gpu": 1},
}
_TERM_SIGNAL = re.compile(r"--signal[=\s]+(?:[BR]{1,2}:)?(?:TERM|SIGTERM|15)@\d+")
DEFAULT_SCOPE = "default-resources"


@dataclass(frozen=True)
class Value:
    """A resource value as Snakemake will see it: a literal, or an expression known per job."""

    raw: Any
    value: Any = None
    dynamic: bool = False


def resource_value(raw: Any) -> Value:
    """Interpret a raw resource value the way Snakemake's CLI evaluator does.

    Profile and ``--set-resources`` values arrive as strings holding Python expressions:
    ``'1'``, ``"'gpu:1'"``, ``'a100'``. Snakemake evaluates them per job and falls back to the
    string itself on a NameError or SyntaxError (so a bare ``a100`` is the string "a100").
    Expressions that use ``attempt``, ``input``, ... are only known per job.
    """
    if not isinstance(raw, str):
        return Value(raw, raw)
    try:
        return Value(raw, ast.literal_eval(raw))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        tree = ast.parse(raw, mode="eval")
    except SyntaxError:
        return Value(raw, raw)
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    calls = any(isinstance(node, ast.Call) for node in ast.walk(tree))
    if names & DYNAMIC_NAMES or calls or len(names) > 1:
        return Value(raw, None, dynamic=True)
    if isinstance(tree.body, ast.Name):  # a bare word: NameError -> the string itself
        return Value(raw, raw)
    return Value(raw, None, dynamic=True)


def _as_int(value: Any) -> int | None:
    """A whole number, or None; a quoted one ("1") counts, the plugin formats it alike."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _slurm_forbidden() -> dict[str, str]:
    """The plugin's own list of options it refuses in slurm_extra (pattern -> option name)."""
    try:
        from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options
    except ImportError:  # plugin not installed: the same list for its GPU and queue options
        return {
            r"--gres[=\s]": "generic resources (GRES)",
            r"--gpus[=\s]": "GPU allocation",
            r"--partition[=\s]|-p\s": "partition",
            r"--account[=\s]|-A\s": "account",
            r"--mem[=\s]": "memory",
            r"--time[=\s]|-t\s": "runtime/time limit",
            r"--cpus-per-task[=\s]|-c\s": "CPUs per task",
        }
    return get_forbidden_slurm_options()


def _flag_of(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(0).rstrip("= ") if match else pattern


def check_values(
    where: str, resources: Mapping[str, Any], *, custom: Iterable[str] = ()
) -> list[str]:
    """Problems with one scope's resources ({name: raw value}); ``where`` names the scope."""
    problems = []
    known = KNOWN_RESOURCES | set(custom)
    for name, raw in resources.items():
        if name.startswith("_"):  # Snakemake's internal _cores / _nodes
            continue
        if name not in known:
            problems.append(_unknown_name(where, name, known))
            continue
        val = resource_value(raw)
        if val.dynamic or val.value is None:
            continue
        value = val.value
        number = _as_int(value)
        if name in NON_NEGATIVE_INTS and (number is None or number < 0):
            problems.append(
                f"{where}: {name} = {raw!r} is not a count (a whole number, 0 or more); "
                + _int_fix(name)
            )
        elif name in SIGNED_INTS and number is None:
            problems.append(f"{where}: {name} = {raw!r} is not a whole number; use e.g. {name}: 8")
        elif name in HUMAN_FRIENDLY and isinstance(value, str):
            problems.extend(_human_friendly(where, name, value))
        elif name == "gres":
            problems.extend(_gres(where, value))
        elif name == "gpu_model" and not GPU_MODEL_FORMAT.match(str(value)):
            problems.append(
                f"{where}: gpu_model = {raw!r} is not a GPU type name; "
                "write the bare name, e.g. gpu_model: a100 (no quotes inside, no count)"
            )
        elif name == "slurm_extra":
            problems.extend(_slurm_extra(where, str(value)))
    return problems


def _int_fix(name: str) -> str:
    if name == "gpu":
        return "write the number of GPUs, e.g. gpu: 1, and the type apart, e.g. gpu_model: a100"
    if name.startswith(("mem", "disk")):
        return f"write MB, e.g. {name}: 16000, or use {name.split('_')[0]}: 16G with a unit"
    return f"write e.g. {name}: 1"


def _unknown_name(where: str, name: str, known: set[str] | frozenset[str]) -> str:
    if name in MISLEADING:
        hint = f"did you mean {MISLEADING[name]}?"
        if MISLEADING[name] == "gpu":
            hint += (
                " The SLURM executor's sbatch call reads only `gpu` (or `gres`), so the job "
                "would get no GPU"
            )
        return f"{where}: resource {name!r} is not one Snakemake or its executors map; {hint}"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
    hint = f"did you mean {close[0]}?" if close else "remove it"
    return (
        f"{where}: resource {name!r} is not one Snakemake or its SLURM executor maps, and no "
        f"--resources limit makes it a custom resource; {hint}"
    )


def _human_friendly(where: str, name: str, value: str) -> list[str]:
    from snakemake.resources import Resource
    from snakemake_interface_common.exceptions import WorkflowError

    try:
        Resource.parse_human_friendly(name, value)
    except WorkflowError:
        example = "runtime: 480 (minutes) or runtime: 8h" if name == "runtime" else f"{name}: 16G"
        return [f"{where}: {name} = {value!r} cannot be read as a {name}; write e.g. {example}"]
    return []


def _gres(where: str, value: Any) -> list[str]:
    text = str(value)
    if GRES_FORMAT.match(text):
        return []
    nested = text[:1] in "'\"" or text[-1:] in "'\""
    why = "has quotes inside the value" if nested else "is not <name>[:<type>][:<count>]"
    return [f'{where}: gres = {text!r} {why}; write e.g. gres: "gpu:1" or gres: "gpu:a100:2"']


def _slurm_extra(where: str, text: str) -> list[str]:
    problems = []
    for pattern, option in _slurm_forbidden().items():
        if re.search(pattern, text):
            instead = SLURM_EXTRA_REPLACEMENTS.get(option)
            fix = f"use the resource {instead} instead" if instead else "remove it"
            problems.append(
                f"{where}: slurm_extra {text!r} passes {_flag_of(pattern, text)}, which the "
                f"SLURM executor sets itself and refuses in slurm_extra; {fix}"
            )
    return problems


def _gpu_requests(resources: Mapping[str, Any]) -> tuple[int, str | None]:
    """(GPUs asked for through `gpu`/`gpu_model`, the gres string if it names GPUs)."""
    gpu = resource_value(resources["gpu"]).value if "gpu" in resources else None
    count = _as_int(gpu) or 0
    if "gpu_model" in resources and count == 0 and gpu is None:
        count = 1  # the plugin defaults the count to 1 when only a model is given
    gres = resource_value(resources["gres"]).value if "gres" in resources else None
    gres_gpu = str(gres) if gres and "gpu" in str(gres) else None
    return count, gres_gpu


def check_merged(where: str, resources: Mapping[str, Any]) -> list[str]:
    """Problems that only show in a job's merged resources (rule + defaults + overrides)."""
    count, gres = _gpu_requests(resources)
    if count > 0 and gres:
        return [
            f"{where}: asks for GPUs twice, gpu = {count} and gres = {gres!r}; the SLURM "
            "executor would pass both --gpus and --gres. Keep one: drop gres, or set gpu: 0 "
            "next to it (the workflow's GPU rules declare gpu=1)"
        ]
    return []


def _unknown_rules(what: str, names: Iterable[str], rules: Iterable[str]) -> list[str]:
    rules = sorted(set(rules))
    problems = []
    for name in names:
        if name not in rules:
            close = difflib.get_close_matches(name, rules, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}?" if close else f"the rules are {', '.join(rules)}"
            problems.append(
                f"{what} names rule {name!r}, which the workflow does not have, so the "
                f"setting is silently ignored; {hint}"
            )
    return problems


def _dedupe(problems: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(problems))


# --- a profile file ---------------------------------------------------------------------------


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


def _parse_assignments(entries: Any) -> dict[str, str]:
    """Raw `name=value` strings of default-resources / resources -> {name: raw value}."""
    items = entries if isinstance(entries, list) else str(entries).split()
    parsed = {}
    for item in items:
        name, _, value = str(item).partition("=")
        parsed[name.strip()] = value
    return parsed


def _parse_rule_assignments(entries: Any) -> dict[str, dict[str, str]]:
    """`rule:name=value` strings of set-resources -> {rule: {name: raw value}}."""
    items = entries if isinstance(entries, list) else str(entries).split()
    parsed: dict[str, dict[str, str]] = {}
    for item in items:
        rule, _, assignment = str(item).partition(":")
        name, _, value = assignment.partition("=")
        parsed.setdefault(rule.strip(), {})[name.strip()] = value
    return parsed


def _installed(executor: str) -> bool:
    module = "snakemake_executor_plugin_" + executor.replace("-", "_")
    return importlib.util.find_spec(module) is not None


def executor_warning(path: str | Path) -> str | None:
    """A known executor whose plugin is not installed here (the file can still be checked)."""
    try:
        executor = read_profile(path).get("executor")
    except Exception:  # check_profile names an unreadable profile
        return None
    if executor in PLUGIN_EXECUTORS and not _installed(executor):
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


def merged_resources(
    path: str | Path, rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Each rule's resources under the profile at ``path``, in Snakemake's order (the profile's
    defaults, then what the rule declares, then the profile's set-resources), values evaluated.
    ``rules``: names, or {rule: declared}; by default the training rules' declared signal."""
    profile = read_profile(path)
    defaults = _parse_assignments(profile.get("default-resources", []))
    overrides = _parse_rule_assignments(profile.get("set-resources", []))
    if rules is None or not isinstance(rules, Mapping):
        names = set(rules or ()) | set(overrides)
        rules = {name: WORKFLOW_DECLARED.get(name, {}) for name in names}
    merged = {}
    for rule in set(rules) | set(overrides):
        raw = {**defaults, **rules.get(rule, {}), **overrides.get(rule, {})}
        merged[rule] = {k: resource_value(v).value for k, v in raw.items()}
    return merged


def profile_warnings(
    path: str | Path, rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None
) -> list[str]:
    """What a SLURM profile allows but should not: a training job without the pre-emption
    signal; [] for other executors or an unreadable profile (check_profile reports that)."""
    try:
        if read_profile(path).get("executor") != "slurm":
            return []
        merged = merged_resources(path, rules)
    except Exception:  # check_profile names an unreadable profile
        return []
    found = (preemption_warning(str(path), rule, merged[rule]) for rule in sorted(merged))
    return [warning for warning in found if warning]


def check_live_cluster(
    path: str | Path, rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None
) -> tuple[list[str], list[str], str]:
    """Problems and warnings the live cluster (``sinfo``, ``scontrol``) gives, and a line saying
    what was compared: the cluster, or the file only where ``sinfo`` gives nothing."""
    from vitalfm.cluster import (
        controller_config,
        enforces_associations,
        live_problems,
        min_job_age_warning,
        read_partitions,
    )

    try:
        profile = read_profile(path)
    except Exception:  # check_profile names an unreadable profile
        return [], [], ""
    if profile.get("executor") != "slurm":
        return [], [], ""
    partitions = read_partitions()
    if partitions is None:
        return (
            [],
            [],
            (
                f"{path}: checked the file only: sinfo is not available here, or reaches no "
                "cluster (run this check on the cluster's login node to compare the profile with "
                "the live cluster)"
            ),
        )
    merged = merged_resources(path, rules)
    problems = live_problems(str(path), merged, partitions)
    config = controller_config()
    accounts = any(r.get("slurm_account") for r in merged.values())
    if enforces_associations(config) and not accounts:
        problems.append(
            f"{path}: this cluster requires an account association (AccountingStorageEnforce); "
            "unless your user has a default account, set slurm_account under default-resources "
            "(sacctmgr show assoc user=$USER format=account lists yours)"
        )
    status = profile.get("slurm-status-command")
    warning = min_job_age_warning(str(path), config, status)
    compared = f"{path}: compared with the live cluster ({len(partitions)} partitions)"
    return problems, [warning] if warning else [], compared


def check_profile(
    path: str | Path,
    rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
) -> list[str]:
    """Problems in the profile at ``path`` (a folder or its YAML file); [] if none.

    ``rules``: the workflow's rule names, or {rule: declared resources}; with them, overrides
    of rules the workflow lacks are reported and each rule's declared resources are merged in.
    """
    try:
        profile = read_profile(path)
    except FileNotFoundError as err:
        return [f"{path}: {err}; give a profile folder holding profile.yaml"]
    except Exception as err:  # Snakemake's parser raises its own exception types
        return [f"{path}: Snakemake cannot read this profile ({err}); fix its YAML"]
    where = str(path)
    problems: list[str] = []

    executor = profile.get("executor")
    known = BUILTIN_EXECUTORS | PLUGIN_EXECUTORS
    if executor and executor not in known and not _installed(executor):  # likely a typo
        problems.append(
            f"{where}: executor {executor!r} is not installed; "
            f"pip install snakemake-executor-plugin-{executor}"
        )

    limits = _parse_assignments(profile.get("resources", []))
    defaults = _parse_assignments(profile.get("default-resources", []))
    overrides = _parse_rule_assignments(profile.get("set-resources", []))
    threads = _parse_assignments(profile.get("set-threads", []))
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
        problems += _unknown_rules(f"{where} set-resources", overrides, declared)
        problems += _unknown_rules(f"{where} set-threads", threads, declared)
    for rule in sorted(set(declared) | set(overrides)):
        # Snakemake's order: defaults, then what the rule declares, then set-resources.
        merged = {**defaults, **declared.get(rule, {}), **overrides.get(rule, {})}
        problems += check_merged(f"{where} rule {rule}", merged)
        if executor == "kubernetes":
            evaluated = {k: resource_value(v).value for k, v in merged.items()}
            problems += kubernetes_problems(where, rule, evaluated)
    return _dedupe(problems)


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


# --- a parsed workflow (the Snakefile hook) ---------------------------------------------------


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
    problems += _unknown_rules("--set-resources", dict(settings.overwrite_resources), rules)
    problems += _unknown_rules("--set-threads", dict(settings.overwrite_threads), rules)
    return _dedupe(problems)


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
            profiled = _parse_rule_assignments(read_profile(path).get("set-resources", []))
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


# --- command line -----------------------------------------------------------------------------


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
        live, live_warnings, compared = check_live_cluster(path, rules)
        problems = _dedupe([*check_profile(path, rules), *live])
        warnings = [executor_warning(path), *profile_warnings(path, rules), *live_warnings]
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


if __name__ == "__main__":
    raise SystemExit(main())
