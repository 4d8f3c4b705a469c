"""Profiles and the paper-scale config: what Snakemake would submit, checked without running it.

The SLURM executor plugin only turns resources into ``sbatch`` flags at submission, and a dry
run uses Snakemake's dry-run executor, so no SLURM binaries are needed here: the dry run shows
each job's resources, and the plugin's own functions turn them into the flags it would pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from vitalfm.config import load_config, validate_config
from vitalfm.profiles import (
    KNOWN_RESOURCES,
    check_profile,
    main,
    resource_value,
    workflow_rule_names,
)
from vitalfm.study import standins, study_runs
from vitalfm.testing import copy_checkout
from vitalfm.testing_workflow import run_snakemake

REPO = Path(__file__).resolve().parents[1]
#: The environment every Snakemake run of this module adds: one OpenMP thread.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
PROFILES = REPO / "profiles"
PAPER = REPO / "config" / "paper.yaml"
GPU_RULES = {"pretrain", "finetune", "forecast"}
# Any attempt to reach a database server or the internet fails with these.
OFFLINE = {
    "PGHOST": "/nonexistent-vitalfm-socket-dir",
    "PGPORT": "1",
    "PGSERVICEFILE": "/nonexistent",
    "HF_HUB_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
}


# --- helpers -------------------------------------------------------------------------------


def _dry_run_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if not header:
            continue
        line = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        pairs = [item.split("=", 1) for item in line.group(1).split(", ")] if line else []
        jobs.append((header.group(1), dict(pairs)))
    return jobs


def _job_stats(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


class _Resources(dict):
    """A job's resources as the plugin reads them (``.get`` and attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _plugin_job(rule: str, resources: dict[str, str]) -> SimpleNamespace:
    typed = {k: int(v) if re.fullmatch(r"-?\d+", v) else v for k, v in resources.items()}
    return SimpleNamespace(name=rule, threads=1, resources=_Resources(typed))


def _write_profile(folder: Path, profile: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profile.yaml").write_text(yaml.safe_dump(profile))
    return folder


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(REPO, tmp_path_factory.mktemp("clone"))


# --- the shipped profiles ---------------------------------------------------------------------


def test_shipped_profiles_pass_the_check() -> None:
    rules = workflow_rule_names(REPO / "Snakefile")
    assert {"finetune", "forecast", "pretrain", "windows"} <= set(rules)
    for name in ("default", "slurm"):
        assert check_profile(PROFILES / name, rules) == [], name


def test_slurm_profile_covers_every_rule_and_asks_for_gpus_the_plugins_way() -> None:
    profile = yaml.safe_load((PROFILES / "slurm" / "profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    overrides = profile["set-resources"]
    rules = set(workflow_rule_names(REPO / "Snakefile")) - {"all"}
    assert rules <= set(overrides), f"rules without SLURM settings: {rules - set(overrides)}"
    for rule, resources in overrides.items():
        assert "runtime" in resources or "runtime" in profile["default-resources"], rule
        extra = str(resources.get("slurm_extra", ""))
        assert not re.search(r"--(gres|gpus)\b", extra), rule
        if rule in GPU_RULES:
            assert resources["gpu"] == 1 and resources["slurm_partition"] == "gpu", rule
        else:
            assert "gpu" not in resources and "gres" not in resources, rule


def test_slurm_dry_run_shows_gpu_jobs_asking_for_gpus_the_plugins_way(clone: Path) -> None:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    done = run_snakemake(clone, "-n", "--workflow-profile", "profiles/slurm", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = _dry_run_jobs(done.stdout)
    seen = {rule for rule, _ in jobs}
    assert seen >= GPU_RULES and {"cohort", "windows"} <= seen
    params = {
        "run_uuid": "u",
        "slurm_logfile": "log",
        "comment_str": "c",
        "account": "",
        "partition": "",
        "workdir": "",
    }
    for rule, resources in jobs:
        if rule == "all":
            continue
        job = _plugin_job(rule, resources)
        validate_slurm_extra(job)  # the plugin's own check of slurm_extra: raises if misused
        flags = set_gres_string(job).split()
        sbatch = get_submit_command(job, params).split()
        if rule in GPU_RULES:
            assert resources["gpu"] == "1" and resources["slurm_partition"] == "gpu", rule
            assert flags == ["--gpus=1"], (rule, flags)
            assert any(flag.startswith("--cpus-per-gpu=") for flag in sbatch), rule
        else:
            assert flags == [] and resources["slurm_partition"] == "cpu", (rule, flags)
        assert "-t" in sbatch and "--mem" in sbatch, rule  # runtime and memory for every job


def test_known_resources_cover_what_the_installed_plugin_reads() -> None:
    import snakemake_executor_plugin_slurm as plugin

    source = "\n".join(path.read_text() for path in Path(plugin.__file__).parent.glob("*.py"))
    read = set(re.findall(r"resources\.get\(\s*[\"'](\w+)[\"']", source))
    read |= set(re.findall(r"job\.resources\.(\w+)\b", source)) - {"get", "items", "keys"}
    read -= {"threads"}  # a fallback the plugin reads; set it with set-threads
    assert read, "no resource names found in the plugin's source"
    assert read <= KNOWN_RESOURCES, read - KNOWN_RESOURCES


# --- profiles that ask for what no executor can map ---------------------------------------------


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ({"slurm_extra": "--gres=gpu:1"}, "passes --gres, which the SLURM executor sets itself"),
        ({"slurm_extra": "--gpus=2 --signal=TERM@60"}, "use the resource gpu: 1"),
        ({"slurm_extra": "--partition=gpu"}, "use the resource slurm_partition"),
        ({"gpus": 1}, "did you mean gpu?"),
        ({"slurm_partiton": "gpu"}, "did you mean slurm_partition?"),
        ({"gpu": "a100"}, "gpu = 'a100' is not a count"),
        ({"gpu": 1.5}, "gpu = '1.5' is not a count"),
        ({"gpu": -1}, "gpu = '-1' is not a count"),
        ({"gres": "gpu:a100:two"}, "is not <name>[:<type>][:<count>]"),
        ({"gpu_model": "a100:2"}, "gpu_model = 'a100:2' is not a GPU type name"),
        ({"mem_mb": "16G"}, "use mem: 16G with a unit"),
        ({"runtime": "soon"}, "cannot be read as a runtime"),
        ({"gpu": 1, "gres": "gpu:1"}, "asks for GPUs twice"),
    ],
)
def test_bad_resources_are_named_with_the_fix(
    tmp_path: Path, resources: dict[str, Any], expected: str
) -> None:
    folder = _write_profile(
        tmp_path / "bad", {"executor": "slurm", "set-resources": {"finetune": resources}}
    )
    problems = check_profile(folder, workflow_rule_names(REPO / "Snakefile"))
    assert len(problems) == 1, problems
    assert "finetune" in problems[0] and expected in problems[0], problems[0]


def test_our_slurm_extra_check_agrees_with_the_plugin() -> None:
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
    from snakemake_interface_common.exceptions import WorkflowError

    from vitalfm.profiles import check_values

    for extra in (
        "--gres=gpu:1",
        "--gpus 2",
        "-p gpu",
        "--mem=4G",
        "--signal=TERM@300",
        "--exclusive",
    ):
        job = SimpleNamespace(resources=_Resources(slurm_extra=extra))
        try:
            validate_slurm_extra(job)
            plugin_refuses = False
        except WorkflowError:
            plugin_refuses = True
        ours = check_values("x", {"slurm_extra": repr(extra)})
        assert bool(ours) == plugin_refuses, extra


def test_rules_the_workflow_lacks_and_custom_resources(tmp_path: Path) -> None:
    rules = workflow_rule_names(REPO / "Snakefile")
    profile = {
        "resources": {"io_slots": 2},  # a custom resource the local scheduler counts: fine
        "set-resources": {"finetun": {"gpu": 1}, "windows": {"io_slots": 1}},
        "set-threads": {"forcast": 4},
    }
    problems = check_profile(_write_profile(tmp_path / "p", profile), rules)
    assert len(problems) == 2, problems
    assert "rule 'finetun'" in problems[0] and "did you mean finetune?" in problems[0]
    assert "set-threads names rule 'forcast'" in problems[1]


def test_unreadable_or_missing_profile(tmp_path: Path) -> None:
    assert "no profile.yaml" in check_profile(tmp_path)[0]
    (tmp_path / "profile.yaml").write_text("executor: [slurm\n")
    assert "cannot read this profile" in check_profile(tmp_path)[0]
    (tmp_path / "profile.yaml").write_text("executor: slrum\n")
    assert "executor 'slrum' is not installed" in check_profile(tmp_path)[0]


def test_resource_values_read_as_snakemake_evaluates_them() -> None:
    assert resource_value("1").value == 1
    assert resource_value("'gpu:1'").value == "gpu:1"
    assert resource_value("gpu:1").value == "gpu:1"  # a SyntaxError: Snakemake keeps the text
    assert resource_value("a100").value == "a100"  # a NameError: likewise
    assert resource_value("480 * attempt").dynamic


def test_command_line_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = main([str(PROFILES / "default"), "--snakefile", str(REPO / "Snakefile")])
    assert good == 0
    bad = _write_profile(
        tmp_path / "bad", {"set-resources": {"finetune": {"slurm_extra": "--gres=gpu:1"}}}
    )
    assert main([str(bad), "--snakefile", "none"]) == 1
    assert "passes --gres" in capsys.readouterr().err


# --- the Snakefile hook: profiles and command line merged into each rule -------------------------

HOOKED = """\
from vitalfm.profiles import require_mappable_resources


rule model:
    output:
        "model.txt",
    resources:
        gpu=1,
    shell:
        "touch {output}"


require_mappable_resources(workflow)
"""


def test_hook_stops_a_run_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(HOOKED)
    args = ["-n", "--executor", "slurm", "--jobs", "1", "--set-resources"]
    good = run_snakemake(
        tmp_path, *args, "model:slurm_partition=gpu", "model:gpu_model=a100", env=ONE_THREAD
    )
    assert good.returncode == 0, good.stderr[-2000:]
    bad = {
        "model:slurm_extra='--gres=gpu:1'": "passes --gres",
        "model:gres='gpu:1'": "asks for GPUs twice",  # the rule itself declares gpu=1
        "model:gpus=1": "did you mean gpu?",
        "modle:gpu=1": "names rule 'modle'",
    }
    done = run_snakemake(tmp_path, *args, *bad, env=ONE_THREAD)
    assert done.returncode != 0
    printed = done.stdout + done.stderr  # Snakemake logs errors to either
    assert "Resources that no executor can map" in printed
    for override, expected in bad.items():
        assert expected in printed, override
    assert not (tmp_path / "model.txt").exists()


# --- config/paper.yaml --------------------------------------------------------------------------


def test_paper_config_validates_and_lists_the_released_models() -> None:
    raw = yaml.safe_load(PAPER.read_text())
    validate_config(raw)  # the whole file, every key
    cfg = load_config(PAPER)
    assert cfg["database"]["source"] == "external" and cfg["database"]["dsn"] == ""
    hubs = {m["source"].get("hub") for m in cfg["models"].values()}
    sizes = {
        "amazon/chronos-t5-{}": ("tiny", "mini", "small", "base", "large"),
        "amazon/chronos-bolt-{}": ("tiny", "mini", "small", "base"),
        "Salesforce/moirai-1.1-R-{}": ("small", "base", "large"),
    }
    for pattern, names in sizes.items():
        assert {pattern.format(n) for n in names} <= hubs, pattern
    assert {"amazon/chronos-2", "Salesforce/moirai-2.0-R-small"} <= hubs
    assert "time-series-foundation-models/Lag-Llama" in hubs
    baselines = {m["family"] for m in cfg["models"].values() if m["source"].get("scratch")}
    assert baselines == {"persistence", "nhits", "nbeats", "dlinear"}
    from vitalfm.models.registry import FAMILIES

    for entry in cfg["models"].values():  # every family is registered
        assert entry["family"] in FAMILIES, entry["family"]
    settings = {run.setting for run in study_runs(cfg)}
    assert {f"lora-r{r}" for r in (1, 2, 4, 8, 16, 32, 64)} <= settings
    assert {"dora-r2", "bitfit", "layernorm", "full", "scratch", "zero_shot"} <= settings


def test_paper_dry_run_lists_its_jobs_without_database_or_network(clone: Path) -> None:
    """The README's command, as a dry run: jobs counted from the config, nothing reached."""
    cfg = load_config(PAPER)
    runs = study_runs(cfg)
    done = run_snakemake(
        clone,
        "-n",
        "--cores",
        "all",
        "--resources",
        "gpu=2",
        "--configfile",
        "config/paper.yaml",
        env={**ONE_THREAD, **OFFLINE},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = _job_stats(done.stdout)
    expected = {
        "check_database": 1,
        "synthetic_mimic": 0,
        "pretrain": len(standins(cfg)),
        "windows": 3,
        # one job per seed (replicate); each forecast and score job covers validation and test
        "finetune": sum(len(run.seeds) for run in runs if run.trains),
        "forecast": sum(len(run.seeds) for run in runs),
        "score": sum(len(run.seeds) for run in runs),
        "events": sum(len(run.seeds) for run in runs),
    }
    assert {rule: stats.get(rule, 0) for rule in expected} == expected
    others = set(stats) - set(expected) - {"total"}
    assert others >= {"cohort", "vitals", "grid", "split", "metrics", "all"}
    assert all(stats[rule] == 1 for rule in others), stats


# --- the live cluster (sinfo), the pre-emption signal, overrides ---------------------------------

#: sinfo output of a cluster with a default CPU partition and a "gpu" partition whose nodes
#: have no GPU GRES (what made every GPU job fail at submission in the issue).
SINFO_NO_GPUS = "cpu*|up|(null)|128000|2-00:00:00|16\ngpu|up|(null)|128000|2-00:00:00|16\n"
SINFO_GPUS = "cpu*|up|(null)|128000|2-00:00:00|16\ngpu|up|gpu:a100:4(S:0-1)|256000|1-00:00:00|32\n"


def _check(*profiles: str | Path, sinfo: str | None, scontrol: str = "", tmp: Path) -> Any:
    """``python -m vitalfm.profiles`` as a user runs it, on a login node whose sinfo prints
    ``sinfo`` (None: a machine without SLURM's commands)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("which", "sh", "bash", "uname"):  # what Snakemake's import looks for; no SLURM
        found = shutil.which(tool)
        if found and not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    commands = (("sinfo", sinfo), ("scontrol", scontrol), ("squeue", ""))
    for name, text in commands if sinfo is not None else ():
        assert "'" not in text  # printed by the shell's own printf (PATH has nothing else)
        (bin_dir / name).write_text(f"#!/bin/sh\nprintf '%s' '{text}'\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run(
        [sys.executable, "-m", "vitalfm.profiles", *map(str, profiles)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_dir)},
        timeout=120,
    )


def test_the_checker_names_what_the_live_cluster_would_refuse(tmp_path: Path) -> None:
    done = _check("profiles/slurm", sinfo=SINFO_NO_GPUS, tmp=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "compared with the live cluster (2 partitions)" in done.stdout
    for rule in GPU_RULES:
        assert f"rule {rule} asks for GPUs on partition 'gpu', whose nodes have no GPU GRES" in (
            done.stderr
        )
    assert "profiles/slurm-cpu" in done.stderr  # the fix for a cluster without GPUs
    # the same profile on a cluster whose GPU partition has GPUs, and the CPU-only profile
    # on the cluster without any, pass
    assert _check("profiles/slurm", sinfo=SINFO_GPUS, tmp=tmp_path).returncode == 0
    cpu_only = _check("profiles/slurm-cpu", sinfo=SINFO_NO_GPUS, tmp=tmp_path)
    assert cpu_only.returncode == 0, cpu_only.stderr


def test_the_checker_names_missing_partitions_and_limits_too_small(tmp_path: Path) -> None:
    small = "debug*|up|(null)|8000|1:00:00|4\n"
    done = _check("profiles/slurm", sinfo=small, tmp=tmp_path)
    assert done.returncode == 1
    assert "partition 'cpu' does not exist on this cluster (sinfo lists debug*)" in done.stderr
    cpu_only = tmp_path / "site"
    text = (PROFILES / "slurm-cpu/profile.yaml").read_text()
    cpu_only.mkdir()
    (cpu_only / "profile.yaml").write_text(
        text.replace("slurm_partition: cpu", "slurm_partition: debug")
    )
    done = _check(cpu_only, sinfo=small, tmp=tmp_path)
    assert (
        "rule finetune asks for mem_mb=32000, more than the largest node of partition 'debug'"
        in (done.stderr)
    )
    assert (
        "rule finetune asks for runtime=720 min, more than partition 'debug' allows (60 min)"
        in (done.stderr)
    )
    assert "rule finetune asks for 8 CPUs, more than a node of partition 'debug' has (4)" in (
        done.stderr
    )


def test_the_checker_says_when_an_account_is_needed(tmp_path: Path) -> None:
    enforce = "AccountingStorageEnforce = associations,limits,qos\n"
    done = _check("profiles/slurm", sinfo=SINFO_GPUS, scontrol=enforce, tmp=tmp_path)
    assert done.returncode == 1 and "set slurm_account under default-resources" in done.stderr
    relaxed = _check(
        "profiles/slurm",
        sinfo=SINFO_GPUS,
        scontrol="AccountingStorageEnforce = none\n",
        tmp=tmp_path,
    )
    assert relaxed.returncode == 0, relaxed.stderr


def test_the_checker_warns_when_squeue_would_forget_jobs_too_soon(tmp_path: Path) -> None:
    short = _check(
        "profiles/slurm", sinfo=SINFO_GPUS, scontrol="MinJobAge = 60 sec\n", tmp=tmp_path
    )
    assert short.returncode == 0  # a warning: the admins set it
    assert "warning:" in short.stderr and "MinJobAge = 60 s" in short.stderr
    default = _check(
        "profiles/slurm", sinfo=SINFO_GPUS, scontrol="MinJobAge = 300 sec\n", tmp=tmp_path
    )
    assert "MinJobAge" not in default.stderr


def test_without_sinfo_the_checker_says_it_checked_the_file_only(tmp_path: Path) -> None:
    done = _check("profiles/slurm", sinfo=None, tmp=tmp_path)
    assert done.returncode == 0
    assert "checked the file only: sinfo is not available here" in done.stdout


def test_the_checker_warns_when_fine_tuning_would_lose_the_preemption_signal(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    profile = yaml.safe_load((PROFILES / "slurm/profile.yaml").read_text())
    profile["set-resources"]["finetune"]["slurm_extra"] = "--mail-type=END"
    (site / "profile.yaml").write_text(yaml.safe_dump(profile))
    done = _check(site, sinfo=None, tmp=tmp_path)
    assert done.returncode == 0  # a warning, not an error
    assert "warning:" in done.stderr and "rule finetune would run without the pre-emption" in (
        done.stderr
    )
    assert 'slurm_extra: "--signal=TERM@300 --mail-type=END"' in done.stderr
    profile["set-resources"]["finetune"]["slurm_extra"] = "--mail-type=END --signal=B:TERM@600"
    (site / "profile.yaml").write_text(yaml.safe_dump(profile))
    assert "pre-emption" not in _check(site, sinfo=None, tmp=tmp_path).stderr
    # the shipped profiles keep the signal the training rules declare
    for name in ("slurm", "slurm-cpu"):
        assert "warning" not in _check(PROFILES / name, sinfo=None, tmp=tmp_path).stderr


def test_an_override_of_one_resource_keeps_the_preemption_signal(clone: Path) -> None:
    """A command-line --set-resources replaces the profile's set-resources (Snakemake's
    behaviour); the signal, declared by the training rules, stays with the job."""
    done = run_snakemake(
        clone,
        "-n",
        "--workflow-profile",
        "profiles/slurm",
        "--set-resources",
        "finetune:gpu=0",
        env=ONE_THREAD,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [res for rule, res in _dry_run_jobs(done.stdout) if rule == "finetune"]
    assert jobs and all(res["slurm_extra"] == "--signal=TERM@300" for res in jobs)
    assert all(res["gpu"] == "0" for res in jobs)
    pretrain = [res for rule, res in _dry_run_jobs(done.stdout) if rule == "pretrain"]
    assert pretrain and all(res["slurm_extra"] == "--signal=TERM@300" for res in pretrain)
    # ... and the user is told what else the override dropped, with the way that keeps it
    assert "replaced the profile's whole set-resources" in done.stderr
    assert "forecast: cpus_per_gpu, gpu, mem_mb, runtime, slurm_partition" in done.stderr
    assert "cp -r profiles/slurm profiles/my-site" in done.stderr
    plain = run_snakemake(clone, "-n", "--workflow-profile", "profiles/slurm", env=ONE_THREAD)
    assert "replaced the profile" not in plain.stderr


def test_the_declared_resources_the_checker_assumes_are_the_rules_own(clone: Path) -> None:
    from vitalfm.profiles import WORKFLOW_DECLARED

    done = run_snakemake(clone, "-n", "--workflow-profile", "none", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    for rule, declared in WORKFLOW_DECLARED.items():
        jobs = [res for name, res in _dry_run_jobs(done.stdout) if name == rule]
        jobs = [res for res in jobs if res.get("gpu") != "0"]  # the oracle forecasts on CPU
        assert jobs, rule
        for res in jobs:
            assert {k: res.get(k) for k in declared} == {k: str(v) for k, v in declared.items()}


def test_the_kubernetes_profile_asks_for_gpus_as_its_plugin_needs(tmp_path: Path) -> None:
    done = _check(PROFILES / "kubernetes", sinfo=None, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "executor 'kubernetes' is not installed here (its resources were checked)" in (
        done.stderr
    )
    site = tmp_path / "k8s"
    site.mkdir()
    profile = yaml.safe_load((PROFILES / "kubernetes/profile.yaml").read_text())
    del profile["default-resources"]["gpu_manufacturer"]
    (site / "profile.yaml").write_text(yaml.safe_dump(profile))
    done = _check(site, sinfo=None, tmp=tmp_path)
    assert done.returncode == 1
    for rule in GPU_RULES:
        assert f"rule {rule}: the Kubernetes executor needs gpu_manufacturer nvidia or amd" in (
            done.stderr
        )
