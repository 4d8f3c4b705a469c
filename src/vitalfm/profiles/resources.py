"""Which resource names and values Snakemake and its executors map, and the checks of them.

Snakemake accepts any resource name and value, and an executor plugin only looks at them when
it submits a job. Which names mean something: Snakemake's standard resources, the resources the
SLURM executor plugin maps to ``sbatch`` flags (and the Kubernetes plugin's), and any name
limited with ``--resources`` (a custom resource that only the local scheduler counts). The
value rules mirror the SLURM plugin's own checks (``snakemake_executor_plugin_slurm.utils.
set_gres_string`` and ``validation.py``), applied to the values before submission instead of
at it. :func:`check_values` checks one scope's resources, :func:`check_merged` a job's merged
ones.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


def unknown_rules(what: str, names: Iterable[str], rules: Iterable[str]) -> list[str]:
    """Problems for ``names`` (of set-resources, set-threads, ...) that are not ``rules``."""
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


def dedupe(problems: Iterable[str]) -> list[str]:
    """``problems`` in their order, each once."""
    return list(dict.fromkeys(problems))
