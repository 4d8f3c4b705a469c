"""Compare a SLURM profile with the live cluster (``sinfo``, ``scontrol``), before submitting.

A profile can be well-formed and still be refused by the cluster at submission: a partition
that does not exist, GPUs asked for on a partition whose nodes have no GPU GRES (``sbatch:
error: Invalid generic resource (gres) specification``), more memory, time or CPUs than its
nodes have. :func:`live_problems` reads what ``sinfo`` reports and names each mismatch with its
fix; :func:`read_partitions` returns None where ``sinfo`` is missing (not a login node), and the
checker then says it checked the file only. :func:`check_live_cluster` runs these checks
for one profile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitalfm.profiles.reading import merged_resources, read_profile

#: sinfo's fields: partition (``*`` marks the default), availability, GRES, memory per node
#: (MB; ``+`` where nodes differ), time limit, CPUs per node. One line per node configuration.
SINFO_FORMAT = "%P|%a|%G|%m|%l|%c"
UNLIMITED = ("infinite", "unlimited", "n/a")


@dataclass
class Partition:
    name: str
    default: bool = False
    up: bool = True
    gres: set[str] = field(default_factory=set)
    memory_mb: int = 0  # the largest node's
    cpus: int = 0  # the largest node's
    time_limit_min: float | None = None  # None: no limit

    @property
    def has_gpus(self) -> bool:
        return any(g.split(":")[0] == "gpu" for g in self.gres)


def sinfo_minutes(text: str) -> float | None:
    """A SLURM time limit (``infinite``, ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in
    minutes; None for no limit."""
    text = text.strip().lower()
    if not text or text in UNLIMITED:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    seconds = {1: lambda p: p[0] * 60, 2: lambda p: p[0] * 60 + p[1]}.get(
        len(parts), lambda p: p[0] * 3600 + p[1] * 60 + p[2]
    )(parts)
    return (int(days or 0) * 86400 + seconds) / 60


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions from ``sinfo --noheader --format SINFO_FORMAT`` output."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        raw_name, available, gres, memory, limit, cpus = fields
        name = raw_name.rstrip("*")
        part = partitions.setdefault(name, Partition(name))
        part.default = part.default or raw_name.endswith("*")
        part.up = available.strip().lower() == "up"
        part.gres |= {g.split("(")[0] for g in gres.split(",") if g and g != "(null)"}
        part.memory_mb = max(part.memory_mb, int(re.sub(r"\D", "", memory) or 0))
        part.cpus = max(part.cpus, int(re.sub(r"\D", "", cpus) or 0))
        part.time_limit_min = sinfo_minutes(limit)
    return partitions


def read_partitions() -> dict[str, Partition] | None:
    """The live cluster's partitions, or None where ``sinfo`` is not available."""
    if shutil.which("sinfo") is None:
        return None
    done = subprocess.run(
        ["sinfo", "--noheader", "--format", SINFO_FORMAT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        return None
    return parse_sinfo(done.stdout)


#: The SLURM plugin's squeue status needs finished jobs kept this long (its checks are at most
#: 180 s apart; below 120 s it falls back to sacct by itself).
MIN_JOB_AGE_S = 180


def controller_config() -> dict[str, str]:
    """``scontrol show config`` as {key: value}; {} where scontrol is missing or fails."""
    if shutil.which("scontrol") is None:
        return {}
    done = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60
    )
    found = re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", done.stdout, re.M)
    return dict(found) if done.returncode == 0 else {}


def enforces_associations(config: Mapping[str, str]) -> bool:
    """Whether the cluster refuses jobs without an account association
    (``AccountingStorageEnforce`` holds ``associations``)."""
    return "associations" in config.get("AccountingStorageEnforce", "").lower()


def min_job_age_warning(where: str, config: Mapping[str, str], status_command: Any) -> str | None:
    """squeue-based status (the shipped profiles) needs finished jobs to stay visible."""
    found = re.match(r"\s*(\d+)", config.get("MinJobAge", ""))
    if status_command != "squeue" or not found or int(found.group(1)) >= MIN_JOB_AGE_S:
        return None
    return (
        f"{where}: this cluster forgets finished jobs after MinJobAge = {found.group(1)} s, "
        f"less than the {MIN_JOB_AGE_S} s the plugin's squeue status needs (below 120 s it "
        "falls back to sacct, which waits forever for a cancelled job): ask for MinJobAge >= "
        "300 (SLURM's default), or set slurm-status-command: sacct where sacct reports jobs"
    )


def _minutes(value: Any) -> float | None:
    """A profile's runtime (minutes, or ``30m``/``12h``/``2d``) in minutes; None if unknown."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not found:
        return None
    scale = {"s": 1 / 60, "": 1, "m": 1, "h": 60, "d": 1440}[found.group(2)]
    return float(found.group(1)) * scale


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def live_problems(
    where: str, jobs: Mapping[str, Mapping[str, Any]], partitions: Mapping[str, Partition]
) -> list[str]:
    """What the cluster would refuse for each rule's merged resources (``jobs``)."""
    problems: list[str] = []
    names = ", ".join(p.name + ("*" if p.default else "") for p in partitions.values())
    default = next((p.name for p in partitions.values() if p.default), None)
    for rule, resources in sorted(jobs.items()):
        name = resources.get("slurm_partition") or default
        at = f"{where} rule {rule}"
        if name is None:
            problems.append(
                f"{at}: no slurm_partition and the cluster has no default partition; "
                f"set slurm_partition to one of: {names}"
            )
            continue
        partition = partitions.get(str(name))
        if partition is None:
            problems.append(
                f"{at}: partition {name!r} does not exist on this cluster (sinfo lists {names}); "
                "set slurm_partition to one of them"
            )
            continue
        if not partition.up:
            problems.append(f"{at}: partition {name!r} is not up (sinfo); jobs would wait")
        gpus = _int(resources.get("gpu", 0)) or 0
        gres = str(resources.get("gres") or "")
        if (gpus > 0 or gres.startswith("gpu")) and not partition.has_gpus:
            problems.append(
                f"{at} asks for GPUs on partition {name!r}, whose nodes have no GPU GRES "
                f"(sinfo: {', '.join(sorted(partition.gres)) or 'none'}): sbatch would refuse it "
                "('Invalid generic resource (gres) specification'); use a partition with GPUs, "
                "or on a cluster without any the CPU-only profile profiles/slurm-cpu (gpu: 0)"
            )
        memory = _int(resources.get("mem_mb"))
        if memory and partition.memory_mb and memory > partition.memory_mb:
            problems.append(
                f"{at} asks for mem_mb={memory}, more than the largest node of partition "
                f"{name!r} has ({partition.memory_mb} MB); lower mem_mb or use a larger partition"
            )
        runtime = _minutes(resources.get("runtime")) if "runtime" in resources else None
        limit = partition.time_limit_min
        if runtime is not None and limit is not None and runtime > limit:
            problems.append(
                f"{at} asks for runtime={resources['runtime']} min, more than partition "
                f"{name!r} allows ({limit:g} min); lower runtime (training resumes from its "
                "checkpoint in the next attempt) or use a partition with a longer limit"
            )
        per_gpu, per_task = (
            _int(resources.get("cpus_per_gpu")),
            _int(resources.get("cpus_per_task")),
        )
        cpus = (per_gpu or 0) * max(gpus, 1) if per_gpu and gpus > 0 else (per_task or 0)
        if cpus and partition.cpus and cpus > partition.cpus:
            problems.append(
                f"{at} asks for {cpus} CPUs, more than a node of partition {name!r} has "
                f"({partition.cpus}); lower cpus_per_gpu / cpus_per_task"
            )
    return problems


def check_live_cluster(
    path: str | Path,
    rules: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None,
    *,
    profile: Mapping[str, Any] | None = None,
) -> tuple[list[str], list[str], str]:
    """Problems and warnings the live cluster (``sinfo``, ``scontrol``) gives, and a line saying
    what was compared: the cluster, or the file only where ``sinfo`` gives nothing.
    ``profile``: the profile already read from ``path`` (read here when None)."""
    if profile is None:
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
    merged = merged_resources(path, rules, profile=profile)
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
