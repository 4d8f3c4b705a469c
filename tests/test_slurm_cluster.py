"""The shipped SLURM profile on a real cluster: a single-node SLURM (munge, slurmctld, slurmd from
Debian's slurm-wlm, set up by vitalfm.testing_slurm in a temporary folder) runs the tiny study of
test_operations through ``--workflow-profile profiles/slurm``; one running fine-tune is cancelled
with scancel (Snakemake must notice and resubmit it: the shipped ``slurm-status-command: squeue``),
its resubmission is requeued with ``scontrol requeue`` (SLURM runs it again, training resumes);
the study finishes, a rerun has nothing to do, and the results equal a local run's.

The only overrides are the ones a CPU-only two-CPU node needs: no GPUs (``gpu=0`` and no
``cpus_per_gpu``), memory and threads the node has. They are given as full ``--set-resources``
entries derived from the shipped profile (partitions, runtimes and the fine-tuning
``--signal=TERM@300`` kept). Skipped, saying why, where the Debian packages cannot be installed
(not root, not Debian) or the daemons cannot start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_operations import (
    TRAINED,
    long_training,
    require_current_setup,
    run_meta,
    tiny_study,
)

from vitalfm.testing import copy_checkout
from vitalfm.testing_slurm import SlurmCluster, unavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((REPO / "profiles/slurm/profile.yaml").read_text())
#: The replicate whose fine-tuning is cancelled, then requeued.
VICTIM = ("chronos-bolt-standin", "lora-r2")
#: Seconds Snakemake may take to notice a finished or cancelled job: the plugin's longest
#: pause between status checks is 180 s; here checks start 3 s apart and grow by 10 s.
NOTICE_S = 120
#: Whole cluster run (40 jobs, two at a time on two CPUs).
RUN_S = 1200


@pytest.fixture(scope="module")
def slurm():
    reason = unavailable()
    if reason:
        pytest.skip(f"no single-node SLURM cluster on this machine: {reason}")
    try:
        cluster = SlurmCluster(cpus=2).__enter__()
    except RuntimeError as err:
        pytest.skip(f"the SLURM daemons cannot run here: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


def checkout(dest: Path, config: dict) -> Path:
    require_current_setup()
    workdir = copy_checkout(REPO, dest)
    (workdir / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return workdir


def cpu_node_overrides(memory_mb: int) -> list[str]:
    """``--set-resources`` and ``--set-threads`` for a node without GPUs and with two CPUs: the
    shipped profile's entries, each rule's full entry (a command-line --set-resources replaces
    the profile's), less the GPU requests, memory capped at ``memory_mb``; one thread per
    model job as in the local run (the rules' own ``threads: 1``), so results are comparable."""
    resources = []
    for rule, entry in PROFILE["set-resources"].items():
        for key, value in entry.items():
            if key in ("gpu", "gpu_model", "gres", "cpus_per_gpu"):
                continue
            if key == "mem_mb":
                value = min(value, memory_mb)
            resources.append(f"{rule}:{key}={value}")
        if "gpu" in entry or "gres" in entry:
            resources.append(f"{rule}:gpu=0")
    threads = [f"{rule}=1" for rule in PROFILE.get("set-threads", {})]
    return ["--set-resources", *resources, "--set-threads", *threads]


def slurm_command(*extra: str) -> list[str]:
    return [
        ".venv/bin/snakemake", "--workflow-profile", "profiles/slurm", "--configfile", "tiny.yaml",
        *cpu_node_overrides(4000),
        # the plugin waits 40 s before its first status check and after each job that ends;
        # 3 s keeps a 40-job study within minutes (MinJobAge 300 s still >= 3 x this)
        "--slurm-init-seconds-before-status-checks", "3",
        *extra,
    ]  # fmt: skip


def finetunes(cluster: SlurmCluster) -> list[dict[str, str]]:
    """The cluster's fine-tuning jobs of VICTIM (the plugin names the rule and wildcards in the
    job's comment)."""
    return [
        job for job in cluster.jobs()
        if job["comment"].startswith("rule_finetune_") and all(w in job["comment"] for w in VICTIM)
    ]  # fmt: skip


def latest_step(workdir: Path) -> int:
    """The latest checkpoint step of VICTIM's fine-tuning (0 when none)."""
    folder = workdir / "results/checkpoints" / VICTIM[0] / VICTIM[1] / "seed-0"
    steps = [int(m.group(1)) for p in folder.glob("step-*/state.json")
             if (m := re.fullmatch(r"step-(\d+)", p.parent.name))]  # fmt: skip
    return max(steps, default=0)


class Run:
    """Snakemake on the cluster, in the background, its output in a file."""

    def __init__(self, cluster: SlurmCluster, workdir: Path, command: list[str]) -> None:
        self.cluster, self.workdir = cluster, workdir
        self.log = workdir / "snakemake-slurm.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=cluster.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.started = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def why(self, problem: str) -> str:
        jobs = "\n".join(str(job) for job in self.cluster.jobs())
        return f"{problem}\n--- snakemake\n{self.output()[-6000:]}\n--- squeue\n{jobs}\n" + (
            self.cluster.log_tail(1500)
        )

    def wait_for(self, condition, seconds: float, problem: str):
        deadline = time.monotonic() + seconds
        while True:
            found = condition()
            if found:
                return found
            assert self.process.poll() is None, self.why(f"Snakemake ended before: {problem}")
            assert time.monotonic() < deadline, self.why(f"{problem} within {seconds} s")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def test_without_the_squeue_setting_snakemake_never_sees_a_job_end_here(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """What the shipped ``slurm-status-command: squeue`` prevents, on this cluster: with the
    plugin's own default wherever ``sacct`` exists (sacct), every status query fails here (no
    accounting storage), the plugin drops the job from its list without reporting it, and
    Snakemake waits for it forever. On a cluster with slurmdbd the same default misses
    exactly the cancelled jobs ("CANCELLED by <uid>"). Bounded: 30 s after the job ended."""
    workdir = checkout(tmp_path / "sacct", tiny_study())
    target = "results/database/synthetic_mimic"
    run = Run(slurm, workdir, slurm_command("--slurm-status-command", "sacct", target))
    try:
        job = run.wait_for(
            lambda: [j for j in slurm.jobs() if j["comment"] == "rule_synthetic_mimic"
                     and j["name"] == run_id(run)],
            300, "the synthetic_mimic job submitted",
        )[0]  # fmt: skip
        run.wait_for(
            lambda: any(j["id"] == job["id"] and j["state"] == "COMPLETED" for j in slurm.jobs()),
            300, f"job {job['id']} COMPLETED",
        )  # fmt: skip
        assert (workdir / target).is_dir()
        time.sleep(30)  # the plugin's checks come 3, 13, 23 s apart here
        assert run.process.poll() is None, run.why("Snakemake ended: sacct worked here after all")
        assert "Finished jobid" not in run.output()
    finally:
        run.stop()


def run_id(run: Run) -> str | None:
    """The plugin's run id (every job of the run has it as its SLURM job name)."""
    found = re.search(r"SLURM run ID: (\S+)", run.output())
    return found.group(1) if found else None


def test_the_shipped_profile_survives_scancel_and_requeue_on_a_real_slurm(
    slurm: SlurmCluster, tiny_study_long_training: Path, tmp_path: Path
) -> None:
    config = long_training(tiny_study())  # fine-tuning long enough to be caught mid-way
    timings = {}
    # the reference: the same study run locally, uninterrupted (shared with test_operations)
    local = tiny_study_long_training
    workdir = checkout(tmp_path / "cluster", config)
    run = Run(slurm, workdir, slurm_command())
    try:
        # 1. scancel a running fine-tune once it has checkpointed
        first = run.wait_for(
            lambda: latest_step(workdir) > 0
            and [j for j in finetunes(slurm) if j["state"] == "RUNNING"],
            600, "a running fine-tune with a checkpoint",
        )[0]  # fmt: skip
        cancelled_at_step = latest_step(workdir)
        slurm.run("scancel", first["id"])
        cancelled = time.monotonic()
        run.wait_for(
            lambda: any(j["id"] == first["id"] and j["state"] == "CANCELLED"
                        for j in finetunes(slurm)),
            60, f"job {first['id']} CANCELLED in squeue",
        )  # fmt: skip
        # Snakemake notices (squeue says CANCELLED) and resubmits it (retries: 3) ...
        second = run.wait_for(
            lambda: [j for j in finetunes(slurm) if j["id"] != first["id"]],
            NOTICE_S, f"the cancelled fine-tune (job {first['id']}) resubmitted: Snakemake hangs",
        )[0]  # fmt: skip
        timings["scancel to resubmission"] = time.monotonic() - cancelled

        # 2. ... and the resubmission, once it has resumed and checkpointed, is requeued
        run.wait_for(
            lambda: latest_step(workdir) > cancelled_at_step
            and any(j["id"] == second["id"] and j["state"] == "RUNNING" for j in finetunes(slurm)),
            300, f"job {second['id']} running and checkpointing after step {cancelled_at_step}",
        )  # fmt: skip
        slurm.run("scontrol", "requeue", second["id"])
        requeued = time.monotonic()
        # SLURM holds a requeued job back ~2 min (Reason=BeginTime); let it start at once
        run.wait_for(
            lambda: any(j["id"] == second["id"] and j["state"] == "PENDING"
                        for j in finetunes(slurm)),
            60, f"job {second['id']} PENDING again after scontrol requeue",
        )  # fmt: skip
        slurm.run("scontrol", "update", f"JobId={second['id']}", "StartTime=now")
        run.wait_for(
            lambda: slurm.restarts(second["id"]) >= 1
            and any(j["id"] == second["id"] and j["state"] in ("RUNNING", "COMPLETED")
                    for j in finetunes(slurm)),
            120, f"job {second['id']} running again after its requeue",
        )  # fmt: skip
        timings["requeue to rerun"] = time.monotonic() - requeued

        # 3. the study finishes
        run.wait_for(lambda: run.process.poll() is not None, RUN_S, "the study finished")
        timings["cluster run"] = time.monotonic() - run.started
        assert run.process.returncode == 0, run.why("the cluster run failed")
    finally:
        run.stop()

    output = run.output()
    assert "Using workflow specific profile profiles/slurm" in output
    assert f"SLURM-job '{first['id']}' failed, SLURM status is: 'CANCELLED'" in output
    assert not re.search(r"Falling back to 'sacct'", output), "the plugin used sacct"
    ends = {j["id"]: j["state"] for j in finetunes(slurm)}
    assert ends.get(first["id"]) == "CANCELLED" and ends.get(second["id"]) == "COMPLETED", ends
    log = (workdir / f"results/logs/finetune/{VICTIM[0]}/{VICTIM[1]}/seed-0.log").read_text()
    assert "resuming from checkpoint" in log, log[-3000:]

    # a rerun has nothing left to do
    rerun = subprocess.run(slurm_command(), cwd=workdir, env=slurm.env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Nothing to be done" in rerun.stdout + rerun.stderr

    # the results equal the local run's
    assert not list((workdir / "results/checkpoints").rglob("step-*"))
    assert not list((workdir / "results").rglob("*.part"))
    for table in ("metrics", "paired"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(workdir / f"results/metrics/{table}.parquet"),
            pd.read_parquet(local / f"results/metrics/{table}.parquet"),
        )
    for replicate in TRAINED:
        assert (
            run_meta(workdir, replicate)["training"]["best_validation_score"]
            == run_meta(local, replicate)["training"]["best_validation_score"]
        ), replicate
    print("timings (s):", {k: round(v) for k, v in timings.items()})


def test_the_profile_checker_compares_with_this_cluster(slurm: SlurmCluster) -> None:
    """The checker, on this cluster's login node, names what sbatch would refuse: the shipped
    GPU profile on a cluster whose "gpu" partition has no GPU GRES and small nodes."""
    done = subprocess.run(
        [sys.executable, "-m", "vitalfm.profiles", "profiles/slurm"],
        cwd=REPO,
        env=slurm.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "compared with the live cluster (2 partitions)" in done.stdout
    for rule in ("pretrain", "finetune", "forecast"):
        assert f"rule {rule} asks for GPUs on partition 'gpu', whose nodes have no GPU GRES" in (
            done.stderr
        )
    assert "rule finetune asks for mem_mb=64000, more than the largest node" in done.stderr
    assert "rule finetune asks for 8 CPUs, more than a node of partition 'gpu' has (2)" in (
        done.stderr
    )
