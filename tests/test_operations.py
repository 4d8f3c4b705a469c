"""Operations, as a user meets them: the README's commands run verbatim by real Snakemake in a
fresh copy of the repository, on a tiny study: results follow config changes (and only the
jobs a change affects rerun), the default profile loads, and a run killed with SIGKILL (Snakemake
alone, or its whole process group) is recovered by the README's recovery command and ends with
the same results as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from vitalfm.testing import copy_checkout
from vitalfm.testing_workflow import load_study_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TRAINED = {  # the tiny study's trained replicates
    "chronos-bolt-standin/lora-r2/seed-0",
    "chronos-bolt-standin/dora-r2/seed-0",
    "dlinear/scratch/seed-0",
}
UNTRAINED = {
    "chronos-bolt-standin/zero_shot/seed-0",
    "persistence/zero_shot/seed-0",
    "oracle/oracle/seed-0",
}
SPLITS = ("validation", "test")
DORA = "chronos-bolt-standin/dora-r2/seed-0"


def readme_block(marker: str) -> str:
    """The command in the ```bash block right after ``<!-- marker -->`` in README.md."""
    found = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", README, re.S)
    assert found, f"README.md has no bash block after <!-- {marker} -->"
    return found.group(1).strip()


def tiny_study() -> dict:
    """The tiny study (.test/config/tiny.yaml): config.yaml shrunk to a minute, one stand-in with
    three settings, two baselines. The README's commands read config.yaml, so the tests write it
    there."""
    return load_study_config(REPO, "tiny")


def changed(config: dict, key: str, value: object) -> dict:
    config = json.loads(json.dumps(config))
    *path, last = key.split(".")
    entry = config
    for part in path:
        entry = entry[part]
    entry[last] = value
    return config


def shell(workdir: Path, command: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """A README command, verbatim, in ``workdir`` (as a user types it into bash)."""
    return subprocess.run(
        ["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=timeout
    )


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def require_current_setup() -> None:
    """The copies share this suite's venv, and the README's study command starts with
    ``bash envs/setup.sh``: with a stale set-up stamp it would reinstall this project, from a
    temporary copy, into the shared venv. The test command (setup, then pytest) keeps it current.
    """
    pins = (REPO / "envs/requirements.lock").read_bytes() + (REPO / "pyproject.toml").read_bytes()
    stamp = Path(sys.prefix, ".vitalfm-setup")
    current = stamp.is_file() and stamp.read_text().strip() == hashlib.sha256(pins).hexdigest()
    assert current, "the venv is older than the pins: run `bash envs/setup.sh` first"


def new_checkout(dest: Path, config: dict) -> Path:
    """A fresh copy of the repository whose config.yaml is ``config``, with the suite's venv."""
    require_current_setup()
    workdir = copy_checkout(REPO, dest)
    venv = workdir / ".venv"
    if venv.is_symlink():  # a checkout whose .venv is itself a link (git ignores only folders)
        venv.unlink()
    venv.symlink_to(sys.prefix, target_is_directory=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def run_tiny_study(dest: Path) -> Path:
    """The tiny study, run with the README's study command, verbatim (the ``tiny_study``
    fixture of conftest.py, shared by this module and tests/test_slurm_cluster.py)."""
    workdir = new_checkout(dest, tiny_study())
    ok(shell(workdir, readme_block("study-command"), timeout=1800))
    return workdir


def run_uninterrupted(study: Path, dest: Path) -> Path:
    """A copy of the tiny study rerun with long fine-tuning, never interrupted: the reference
    of the recovery tests (conftest.py's ``tiny_study_long_training``)."""
    workdir = copy_study(study, dest)
    config = long_training(yaml.safe_load((workdir / "config.yaml").read_text()))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    ok(shell(workdir, readme_block("study-command"), timeout=1800))
    return workdir


@pytest.fixture
def study(tiny_study: Path) -> Path:
    return tiny_study


@pytest.fixture
def uninterrupted(tiny_study_long_training: Path) -> Path:
    return tiny_study_long_training


def copy_study(study: Path, dest: Path) -> Path:
    """A copy of a finished study with its Snakemake records and file times."""
    shutil.copytree(study, dest, symlinks=True)
    return dest


# --- the default profile --------------------------------------------------------------------------


def test_the_default_profile_loads_without_being_named(study: Path) -> None:
    done = ok(shell(study, ".venv/bin/snakemake -n"))
    assert "Using workflow specific profile profiles/default" in done.stderr
    assert "Nothing to be done" in done.stdout + done.stderr


# --- results follow the config --------------------------------------------------------------------


def planned(done: subprocess.CompletedProcess) -> dict[str, set[str]]:
    """{rule: the first output of each job} of a dry run."""
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", done.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        output = re.search(r"^\s+output: ([^,\n]+)", block, re.M)
        if rule and rule.group(1) != "all":
            jobs.setdefault(rule.group(1), set()).add(output.group(1) if output else "")
    return jobs


def forecasts_of(replicates: set[str]) -> set[str]:
    """The forecast jobs of ``replicates`` by their first output (one job forecasts every split)."""
    return {f"results/forecasts/{SPLITS[0]}/{rep}.parquet" for rep in replicates}


def scores_of(replicates: set[str]) -> set[str]:
    """The score jobs of ``replicates`` by their first output (one job scores every split)."""
    return {f"results/scores/{SPLITS[0]}/{rep}.parquet" for rep in replicates}


def events_of(replicates: set[str]) -> set[str]:
    """The events jobs of ``replicates`` by their first output (one job covers every split)."""
    return {f"results/events/{SPLITS[0]}/{rep}.parquet" for rep in replicates}


def downstream_of(replicates: set[str], trained: set[str]) -> dict[str, set[str]]:
    """What must rerun when ``replicates`` are forecast anew (and ``trained`` retrained)."""
    jobs = {
        "forecast": forecasts_of(replicates),
        "score": scores_of(replicates),
        "events": events_of(replicates),
        **REPORT,
    }
    if trained:
        jobs["finetune"] = {f"results/runs/{rep}" for rep in trained}
    return jobs


EVENT_REPORT = {
    "event_metrics": {"results/metrics/clinical_events.parquet"},
    "clinical_events_report": {"results/tables/clinical_events.csv"},
}
REPORT = {
    "metrics": {"results/metrics/metrics.parquet"},
    "tables": {"results/tables/findings.csv"},
    "figures": {"results/figures/rank_sweep.png"},
    **EVENT_REPORT,
}
WINDOWS = {"windows": {f"results/windows/{s}.npz" for s in ("train", *SPLITS)}}
BOLT = {r for r in TRAINED | UNTRAINED if r.startswith("chronos-bolt")}
CHANGES: dict[str, tuple[str, object, dict[str, set[str]]]] = {
    "training": ("training.max_steps", 4, downstream_of(TRAINED, TRAINED)),
    "one method's hyper-parameter": (
        "methods.dora.alpha",
        8,
        downstream_of(
            {"chronos-bolt-standin/dora-r2/seed-0"}, {"chronos-bolt-standin/dora-r2/seed-0"}
        ),
    ),
    "forecast": ("forecast.num_samples", 6, downstream_of(TRAINED | UNTRAINED, set())),
    "evaluation": ("evaluation.bootstrap.resamples", 40, REPORT),
    # an event setting reruns the event jobs (and the tables and figures, which record the
    # effective config), not the forecasts, scores or metrics
    "an event setting": (
        "evaluation.event_alarm_probability",
        0.4,
        {
            "events": events_of(TRAINED | UNTRAINED),
            **{rule: REPORT[rule] for rule in ("tables", "figures")},
            **EVENT_REPORT,
        },
    ),
    "a data value (windows)": (
        "windows.stride_hours",
        1.5,
        {**WINDOWS, **downstream_of(TRAINED | UNTRAINED, TRAINED)},
    ),
    "a data value (cohort)": (
        "cohort.min_age_years",
        30,
        {
            "cohort": {"results/cohort/cohort.parquet"},
            "vitals": {"results/vitals/vitals.parquet"},
            "grid": {"results/grid/grid.parquet"},
            "split": {"results/splits/manifest.parquet"},
            **WINDOWS,
            **downstream_of(TRAINED | UNTRAINED, TRAINED),
        },
    ),
    "a model option": (
        "models.dlinear.options.kernel_size",
        5,
        downstream_of({"dlinear/scratch/seed-0"}, {"dlinear/scratch/seed-0"}),
    ),
    "pretraining": (
        "pretrain.max_steps",
        12,
        {
            "pretrain": {"results/models/standins/chronos-bolt"},
            **downstream_of(BOLT, BOLT & TRAINED),
        },
    ),
    "the device": ("device.preference", "cpu", {}),
    "how often checkpoints are written": ("training.checkpoint_every", 2, {}),
    "keeping checkpoints": ("training.keep_checkpoints", True, {}),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_config_change_reruns_exactly_the_jobs_it_affects(
    study: Path, tmp_path: Path, change: str
) -> None:
    key, value, expected = CHANGES[change]
    config = changed(yaml.safe_load((study / "config.yaml").read_text()), key, value)
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(config))
    done = ok(shell(study, f".venv/bin/snakemake -n --configfile {tmp_path / 'changed.yaml'}"))
    jobs = planned(done)
    assert set(jobs) == set(expected), f"{key}: {sorted(jobs)}"
    for rule, outputs in expected.items():
        if rule in ("tables", "figures", "clinical_events_report"):
            continue  # one job each, many outputs: the rule is enough
        assert jobs[rule] == outputs, f"{key}: rule {rule}"
    if expected:
        assert "Params have changed since last execution" in done.stdout


def run_meta(workdir: Path, replicate: str) -> dict:
    return json.loads((workdir / f"results/runs/{replicate}/metadata.json").read_text())


def forecast_meta(workdir: Path, replicate: str, split: str = "test") -> dict:
    return json.loads((workdir / f"results/forecasts/{split}/{replicate}.json").read_text())


def mtimes(workdir: Path, pattern: str) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in workdir.glob(pattern)}


def test_reruns_carry_the_new_values(study: Path, tmp_path: Path) -> None:
    workdir = copy_study(study, tmp_path / "study")
    config = yaml.safe_load((workdir / "config.yaml").read_text())

    def rerun(key: str, value: object, check: Callable[[], None]) -> None:
        nonlocal config
        config = changed(config, key, value)
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        ok(shell(workdir, ".venv/bin/snakemake --cores all"))
        check()
        again = ok(shell(workdir, ".venv/bin/snakemake -n"))
        assert "Nothing to be done" in again.stdout + again.stderr, key

    lora, dora = "chronos-bolt-standin/lora-r2/seed-0", DORA
    runs_before = mtimes(workdir, "results/runs/*/*/seed-0/metadata.json")

    def new_steps() -> None:
        for replicate in TRAINED:
            assert run_meta(workdir, replicate)["training_config"]["max_steps"] == 4
        assert not list((workdir / "results/checkpoints").rglob("step-*"))  # none kept

    rerun("training.max_steps", 4, new_steps)
    runs_before = mtimes(workdir, "results/runs/*/*/seed-0/metadata.json")

    def new_alpha() -> None:
        assert run_meta(workdir, dora)["method"]["alpha"] == 8
        after = mtimes(workdir, "results/runs/*/*/seed-0/metadata.json")
        changed_runs = {p for p in after if after[p] != runs_before[p]}
        assert changed_runs == {str(workdir / f"results/runs/{dora}/metadata.json")}
        assert run_meta(workdir, lora)["method"]["alpha"] == 16

    rerun("methods.dora.alpha", 8, new_alpha)
    runs_before = mtimes(workdir, "results/runs/*/*/seed-0/metadata.json")
    scores_before = mtimes(workdir, "results/scores/*/*/*/*.parquet")

    def new_samples() -> None:
        for replicate in TRAINED | UNTRAINED:
            assert forecast_meta(workdir, replicate)["forecast_config"]["num_samples"] == 6
        assert mtimes(workdir, "results/runs/*/*/seed-0/metadata.json") == runs_before

    rerun("forecast.num_samples", 6, new_samples)
    scores_before = mtimes(workdir, "results/scores/*/*/*/*.parquet")
    metrics_before = pd.read_parquet(workdir / "results/metrics/metrics.parquet")

    def new_resamples() -> None:
        assert mtimes(workdir, "results/scores/*/*/*/*.parquet") == scores_before
        metrics = pd.read_parquet(workdir / "results/metrics/metrics.parquet")
        assert metrics["value"].equals(metrics_before["value"])  # the same scores ...
        assert not metrics["ci_low"].equals(metrics_before["ci_low"])  # ... resampled anew

    # what a kill mid-write left beside the metrics goes when the metrics job runs again
    leftover = workdir / "results/metrics/.metrics.parquet.k1ll3d.part"
    leftover.write_bytes(b"half a parquet file")
    rerun("evaluation.bootstrap.resamples", 40, new_resamples)
    assert not leftover.exists()
    assert "left by an interrupted write" in (workdir / "results/logs/metrics.log").read_text()


# --- recovery after a kill ----------------------------------------------------------------------


def long_training(config: dict) -> dict:
    """Fine-tuning long enough to be killed mid-way, with frequent checkpoints."""
    config = changed(config, "training.max_steps", 400)
    config = changed(config, "training.eval_every", 100)
    return changed(config, "training.checkpoint_every", 20)


def processes_in(workdir: Path) -> list[psutil.Process]:
    """Processes of a run in ``workdir`` (Snakemake and its jobs)."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(workdir) in " ".join(process.cmdline()) or (
                "python" in process.name() and Path(process.cwd()) == workdir
            ):
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def start_and_kill(workdir: Path, whole_group: bool) -> None:
    """Start the README's study command; SIGKILL it once fine-tuning has checkpointed."""
    runner = subprocess.Popen(
        ["bash", "-c", readme_block("study-command")],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not list((workdir / "results/checkpoints").rglob("step-*/state.json")):
        assert runner.poll() is None, "the run ended before any checkpoint was written"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    if whole_group:
        os.killpg(runner.pid, signal.SIGKILL)
    else:
        # bash may have exec'd Snakemake (the last command of its line) or started it
        started = psutil.Process(runner.pid)
        snakemake = [
            p for p in [started, *started.children(recursive=True)]
            if "bin/snakemake" in " ".join(p.cmdline())
        ]  # fmt: skip
        assert len(snakemake) == 1, snakemake
        os.kill(snakemake[0].pid, signal.SIGKILL)
    runner.wait(timeout=60)
    # no job outlives its Snakemake: each stops itself (after a checkpoint) within seconds,
    # long before its training would end
    deadline = time.monotonic() + 10
    while processes_in(workdir):
        assert time.monotonic() < deadline, f"left running: {processes_in(workdir)}"
        time.sleep(0.5)


@pytest.mark.parametrize("whole_group", [False, True], ids=["snakemake-alone", "process-group"])
def test_a_killed_run_is_recovered_by_the_readme_command(
    study: Path, uninterrupted: Path, tmp_path: Path, whole_group: bool
) -> None:
    workdir = copy_study(study, tmp_path / "study")
    config = long_training(yaml.safe_load((workdir / "config.yaml").read_text()))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    start_and_kill(workdir, whole_group)

    if not whole_group:  # each job saw its Snakemake die, checkpointed and stopped
        logs = [p.read_text() for p in (workdir / "results/logs/finetune").rglob("*.log")]
        stopped = [log for log in logs if "which started this job, has exited" in log]
        assert stopped and all("a checkpoint was saved" in log for log in stopped)

    # the README's study command meets the lock, and the message names the command that clears it
    locked = shell(workdir, readme_block("study-command"))
    assert locked.returncode != 0
    assert "Directory cannot be locked" in locked.stderr + locked.stdout
    assert ".venv/bin/snakemake --unlock" in locked.stderr

    # what the README says to type after a crash
    ok(shell(workdir, readme_block("recovery-command"), timeout=1800))
    logs = "".join(p.read_text() for p in (workdir / "results/logs/finetune").rglob("*.log"))
    assert "resuming from checkpoint" in logs
    assert not list((workdir / "results/checkpoints").rglob("step-*"))
    assert not [p for p in (workdir / "results").rglob("*.part")]
    for table in ("metrics", "paired"):
        recovered = pd.read_parquet(workdir / f"results/metrics/{table}.parquet")
        reference = pd.read_parquet(uninterrupted / f"results/metrics/{table}.parquet")
        pd.testing.assert_frame_equal(recovered, reference)
    for replicate in TRAINED:
        assert (
            run_meta(workdir, replicate)["training"]["best_validation_score"]
            == run_meta(uninterrupted, replicate)["training"]["best_validation_score"]
        )


# --- every other command of the README ------------------------------------------------------------

#: Commands that need what this machine lacks: the internet, or (running the test suite) itself.
NOT_HERE = (".venv/bin/hf download", ".venv/bin/python -m pytest")
#: Commands that only read, plan or redo the tables: run verbatim. The others would run the paper
#: study (released weights, GPUs, a MIMIC-III server): run verbatim plus ``-n``, so Snakemake
#: parses them as typed and plans what they name.
VERBATIM = (
    " -n",
    "--report",
    "--forcerun",
    "--unlock",
    "--lint",
    "vitalfm.profiles",
    "ruff",
    "cp -r",
)


def readme_commands() -> list[str]:
    """Every ``.venv/bin/...`` command of the README: bash-block lines and inline code, less
    comments; those of the study, test and recovery blocks are run by the tests above and CI."""
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    inline = [c.strip() for c in re.findall(r"`([^`\n]*\.venv/bin/[^`\n]*)`", README)]
    marked = {readme_block(m) for m in ("study-command", "test-command", "recovery-command")}
    commands = []
    for command in [*lines, *inline]:
        copies_a_profile = command.startswith("cp -r profiles/")  # a step of a block: run it
        if ".venv/bin/" not in command and not copies_a_profile:
            continue
        if command in marked or command in commands:
            continue
        if not any(command.startswith(skip) or f" {skip}" in command for skip in NOT_HERE):
            commands.append(command)
    return commands


def test_the_readme_lists_the_commands_we_check() -> None:
    commands = readme_commands()
    assert any("--configfile config/paper.yaml" in c for c in commands)
    assert any("profiles/slurm" in c for c in commands)
    assert any("--forcerun tables" in c for c in commands)
    assert any(c.endswith("seed-0.parquet --configfile config/paper.yaml") for c in commands)


def test_every_readme_command_works_as_typed(study: Path, tmp_path: Path) -> None:
    workdir = copy_study(study, tmp_path / "study")
    for command in readme_commands():
        verbatim = any(marker in command for marker in VERBATIM)
        typed = command if verbatim else f"{command} -n"
        done = shell(workdir, typed)
        assert done.returncode == 0, f"{typed}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        targets = [w for w in command.split() if w.startswith("results/")]
        for target in targets:  # a named target is planned, not swallowed as a config file
            assert re.search(rf"output: [^\n]*{re.escape(target)}", done.stdout), typed
    assert (workdir / "report.html").is_file()
