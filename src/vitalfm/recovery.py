"""After a crash: tell the user the one command that clears a lock a killed Snakemake left.

Snakemake locks its working folder (``.snakemake/locks/``) while it runs and removes the lock
when it exits; a Snakemake killed with SIGKILL (or a power loss) cannot, and the next run stops
with "Directory cannot be locked". Snakemake's lock records no process id, so it cannot tell a
stale lock from a live run; neither can we across machines (a cluster's shared folder), so
nothing here removes a lock. We only look for a live Snakemake working in this folder on this
machine and, when there is none, say which command clears the lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

UNLOCK_COMMAND = ".venv/bin/snakemake --unlock"


def _is_snakemake_here(process: psutil.Process, workdir: Path) -> bool:
    try:
        command = " ".join(process.cmdline())
        return "snakemake" in command and Path(process.cwd()).resolve() == workdir
    except (psutil.Error, OSError):
        return False


def live_snakemake_elsewhere(workdir: str | os.PathLike[str]) -> bool:
    """Whether another Snakemake process (not this one or its parents) works in ``workdir``."""
    here = Path(workdir).resolve()
    ours = {os.getpid()}
    ours.update(p.pid for p in psutil.Process().parents())
    return any(
        _is_snakemake_here(process, here)
        for process in psutil.process_iter()
        if process.pid not in ours
    )


def stale_lock_hint(workdir: str | os.PathLike[str] = ".") -> str | None:
    """The message to show when a lock is left and no Snakemake here holds it; else None."""
    locks = Path(workdir) / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.glob("*.lock")):
        return None
    if live_snakemake_elsewhere(workdir):
        return None
    return (
        "NOTE: .snakemake/locks/ holds the lock of an earlier Snakemake run that was killed (no "
        "Snakemake is running in this folder on this machine). If Snakemake stops below with "
        f'"Directory cannot be locked", clear it with:\n    {UNLOCK_COMMAND}\n'
        "then run your command again: finished jobs are kept, and fine-tuning resumes from its "
        "last checkpoint. (On a shared cluster folder, first make sure no run is going on "
        "another machine.)"
    )
