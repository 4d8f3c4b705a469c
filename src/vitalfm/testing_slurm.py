"""A real single-node SLURM cluster for tests: munge, slurmctld and slurmd from Debian's
``slurm-wlm`` packages, every file (key, sockets, state, spool, logs, slurm.conf) in one
temporary folder, every daemon started here and stopped here.

No accounting database: the shipped profile reads job states with ``squeue``
(``slurm-status-command: squeue``), which needs slurmctld only; ``sacct`` then fails ("Slurm
accounting storage is disabled"), which is what the plugin's sacct default meets on such a
cluster. Client commands (sbatch, squeue, scancel, scontrol) find the cluster through
``SLURM_CONF``: run them with :attr:`SlurmCluster.env`. That environment also puts an ``srun``
first on PATH that sets SLURM_CONF again: inside a job, the plugin's job step
(snakemake-executor-plugin-slurm-jobstep 0.6.1) removes every ``SLURM_*`` variable, SLURM_CONF
too, before its ``srun``, which then looks for /etc/slurm/slurm.conf and fails ("Could not
establish a configuration source"). A real cluster keeps its slurm.conf there (or runs
configless); this one must not touch /etc.

Used by tests/test_slurm_cluster.py; :func:`unavailable` says why a machine cannot run one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Debian packages that provide the daemons and the client commands.
PACKAGES = ("slurm-wlm", "slurm-client", "munge")
#: Programs the cluster needs.
PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


#: Run beside the test (its own session): when the test's process is gone however it ended
#: (even SIGKILL), kill every process of the cluster and remove its folder.
WATCHDOG = """
import os, shutil, signal, sys, time
owner, conf, root = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
while os.path.exists(f"/proc/{owner}"):
    time.sleep(1)
for _ in range(3):
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as env:
                    if b"SLURM_CONF=" + conf in env.read().split(b"\\0"):
                        os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.5)
shutil.rmtree(root, ignore_errors=True)
"""


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def unavailable(install: bool = True) -> str | None:
    """Why this machine cannot run a cluster (None when it can). With ``install``, a root
    user on Debian first installs the packages with apt-get (Debian's own, a minute)."""
    if not missing_programs():
        return None if os.geteuid() == 0 else "the SLURM daemons here need root (run as root)"
    if not install:
        return f"SLURM programs missing: {', '.join(missing_programs())}"
    if os.geteuid() != 0:
        return (
            f"SLURM programs missing ({', '.join(missing_programs())}) and not root, so they "
            f"cannot be installed: sudo apt-get install {' '.join(PACKAGES)}"
        )
    if not Path("/etc/debian_version").is_file() or shutil.which("apt-get") is None:
        return f"SLURM programs missing ({', '.join(missing_programs())}) and no Debian apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    )
    for command in commands:
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"`{' '.join(command)}` failed: {err}"
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip()[-600:]
            return f"`{' '.join(command)}` failed (exit {done.returncode}): {tail}"
    if missing_programs():
        return f"still missing after apt-get install: {', '.join(missing_programs())}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb() -> int:
    """The node's memory as slurmd measures it (what RealMemory may claim at most)."""
    done = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30)
    found = re.search(r"RealMemory=(\d+)", done.stdout)
    if found:
        return int(found.group(1))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 95 // 100


class SlurmCluster:
    """A single-node cluster with partitions ``cpu`` (default) and ``gpu``, both on this
    machine's one node (``cpus`` CPUs, no GPU GRES). Use as a context manager: the daemons
    and every job are gone when it exits, however it exits."""

    def __init__(
        self, cpus: int = 2, min_job_age: int = 300, kill_wait: int = 10, keep: bool = False
    ) -> None:
        self.cpus = cpus
        self.keep = keep  # keep the folder (logs, state) after stop
        self.min_job_age = min_job_age
        self.kill_wait = kill_wait
        self.root = Path(tempfile.mkdtemp(prefix="vitalfm-slurm-"))  # short: socket paths
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self.node = socket.gethostname()
        self.bin = self.root / "bin"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        }
        self._daemons: list[tuple[str, subprocess.Popen]] = []

    # --- start ----------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for sub in ("state", "spool", "log", "bin"):
            (self.root / sub).mkdir()
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.conf), str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.root.chmod(0o755)
        srun = self.bin / "srun"  # see the module's docstring
        srun.write_text(
            "#!/bin/sh\n# the cluster's slurm.conf, which the SLURM plugin's job step drops\n"
            f"export SLURM_CONF='{self.conf}'\nexec '{shutil.which('srun')}' \"$@\"\n"
        )
        srun.chmod(0o755)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = self.root / "munge.socket"
        self._daemon(
            "munged",
            ["munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={self.munge_socket}", f"--pid-file={self.root / 'munged.pid'}",
             f"--log-file={self.logs / 'munged.log'}", f"--seed-file={self.root / 'munged.seed'}"],
        )  # fmt: skip
        self._wait(lambda: self.munge_socket.exists(), 15, "munged created no socket")
        self.conf.write_text(self.slurm_conf())
        self._daemon("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait(self._controller_answers, 30, "slurmctld does not answer")
        self._daemon("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(self._node_idle, 60, "the node did not come up idle")

    def slurm_conf(self) -> str:
        root = self.root
        return f"""\
# written by vitalfm.testing_slurm for one test run
ClusterName=vitalfm-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={self.logs / "slurmctld.log"}
SlurmdLogFile={self.logs / "slurmd.log"}
# no cgroups, no accounting daemon: jobs are tracked by their process tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to squeue this long (the plugin's squeue status needs >= 120 s)
MinJobAge={self.min_job_age}
# seconds between SIGTERM and SIGKILL when a job is cancelled or requeued
KillWait={self.kill_wait}
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={node_memory_mb()} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
"""

    def _daemon(self, name: str, command: list[str]) -> None:
        log = open(self.logs / f"{name}.out", "wb")  # noqa: SIM115 (closed with the daemon)
        process = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self._daemons.append((name, process))

    def _wait(self, ready, seconds: float, problem: str) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            for name, process in self._daemons:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{problem} within {seconds} s:\n{self.log_tail()}")
            time.sleep(0.3)

    def _controller_answers(self) -> bool:
        return self.run("scontrol", "ping", check=False).returncode == 0

    def _node_idle(self) -> bool:
        states = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
        return bool(states) and all(state == "idle" for state in states)

    # --- use -------------------------------------------------------------------------------

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: {done.stderr}")
        return done

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge): id, state, reason,
        name and comment (the SLURM plugin writes ``rule_<rule>_wildcards_<...>`` there)."""
        fields = ("id", "state", "reason", "name", "comment")
        out = self.run(
            "squeue", "--states=all", "--noheader", "--format=%i\x1f%T\x1f%r\x1f%j\x1f%k"
        ).stdout
        return [dict(zip(fields, line.split("\x1f"), strict=False)) for line in out.splitlines()]

    def restarts(self, job: str) -> int:
        """How often SLURM has requeued ``job``."""
        shown = self.run("scontrol", "show", "job", job, check=False).stdout
        found = re.search(r"Restarts=(\d+)", shown)
        return int(found.group(1)) if found else 0

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for path in sorted(self.logs.glob("*")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    # --- stop ------------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Pids of processes of this cluster: its daemons, job steps and jobs (all carry
        this cluster's SLURM_CONF in their environment)."""
        mine = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if mine in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Cancel every job, stop the daemons, and kill anything of this cluster still alive."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self._daemons):
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--user", "root", check=False)
                deadline = time.monotonic() + self.kill_wait + 10
                while time.monotonic() < deadline:
                    states = self.run("squeue", "--noheader", "--format=%T", check=False).stdout
                    if not states.strip():
                        break
                    time.sleep(0.5)
        for _name, process in reversed(self._daemons):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)
        for _ in range(3):
            left = self.processes()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self._daemons.clear()
        if getattr(self, "_watchdog", None) is not None:
            self._watchdog.kill()
            self._watchdog.wait()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster(**options: int) -> Iterator[SlurmCluster]:
    with SlurmCluster(**options) as running:
        yield running
