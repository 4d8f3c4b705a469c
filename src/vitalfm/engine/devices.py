"""Pick the device a job runs on: claim one free GPU per process, or run on CPU.

Why this exists: Snakemake counts GPUs as a resource (``resources: gpu=1`` and
``--resources gpu=2``) so that no more GPU jobs run at once than there are GPUs, but it never
says *which* GPU a job gets (it does not set ``CUDA_VISIBLE_DEVICES``). Left alone, every job
would use ``cuda:0`` and two concurrent jobs on a 2-GPU machine would share one GPU while the
other idles. So each job claims a device itself:

* ``flock`` on ``<lock_dir>/gpu<id>.lock``, exclusive and non-blocking, tried for each device in
  turn. The file descriptor stays open for the life of the claim. The kernel drops an ``flock``
  when its last descriptor is closed, which includes the process dying by any means (SIGKILL,
  OOM killer, a crash), so a dead job can never leave a GPU "taken" the way a stale pid file
  would. Lock files are never deleted: unlinking a lock file races with a process that has just
  opened it and would let two processes hold "the same" lock on different inodes.
* The lock directory must be local to the host (GPUs are per host); the default is in the
  system temp directory, one per user. Jobs of different users only coordinate if they share a
  ``VITALFM_GPU_LOCK_DIR`` that all of them can write to.
* When a cluster scheduler already granted devices (SLURM sets ``CUDA_VISIBLE_DEVICES`` for a
  job's GPUs) or the user pinned exactly one device with ``CUDA_VISIBLE_DEVICES``, that choice
  is used as is, without a lock. When ``CUDA_VISIBLE_DEVICES`` lists several devices, the job
  claims one of them by lock; lock names use the ids listed there (the physical ids), so jobs
  with overlapping visible sets exclude each other correctly. Under SLURM the listed ids may be
  renumbered per job (0, 1, ... inside every job's cgroup), so there the locks are kept in a
  per-job subdirectory.
* Without a CUDA device the same jobs run on CPU (preference ``auto``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from vitalfm.errors import VitalfmError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "VITALFM_GPU_LOCK_DIR"
_PREFERENCE_RE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


class DeviceError(VitalfmError):
    """No usable device for the requested preference, or none became free in time."""


@dataclass
class DeviceClaim:
    """A device this process may use; for a claimed GPU, holds its lock until released.

    A claim that is dropped without :meth:`release` keeps its lock until the process exits, on
    purpose: ``device = claim_device().device`` must not free the GPU for another job while this
    one still computes on it.
    """

    device: torch.device
    index: int | None
    reason: str
    physical_id: str | None = None
    lock_path: Path | None = None
    _fd: int | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Give the device back (close the lock). Safe to call more than once."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the holder note would mislead a human reading the file
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        log.info("released %s (%s)", self.device, self.lock_path)

    @property
    def held(self) -> bool:
        """Whether this claim still holds a lock."""
        return self._fd is not None

    def __enter__(self) -> DeviceClaim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for run metadata."""
        return {
            "device": str(self.device),
            "index": self.index,
            "physical_id": self.physical_id,
            "reason": self.reason,
            "lock": str(self.lock_path) if self.lock_path is not None else None,
            "gpu_name": _gpu_name(self.device),
        }


def describe_environment() -> dict[str, Any]:
    """Torch and CUDA facts for run metadata."""
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    names: list[str] = []
    for i in range(count):
        try:
            names.append(torch.cuda.get_device_name(i))
        except Exception:  # a broken driver must not break metadata
            names.append("unknown")
    return {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cuda_available": available,
        "device_count": count,
        "device_names": names,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "SLURM_JOB_ID": os.environ.get("SLURM_JOB_ID"),
    }


def default_lock_dir() -> Path:
    """``$VITALFM_GPU_LOCK_DIR``, else ``<tempdir>/vitalfm-gpu-locks-<uid>``."""
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"vitalfm-gpu-locks-{os.getuid()}"


def claim_device(
    preference: str = "auto",
    *,
    lock_dir: str | os.PathLike[str] | None = None,
    device_count: int | None = None,
    wait_s: float = 24 * 3600,
    poll_s: float = 2.0,
) -> DeviceClaim:
    """Return the device this process should use, claiming a free GPU if there is a choice.

    ``preference`` is ``auto`` (a free GPU, else CPU), ``cpu``, ``cuda`` (a free GPU, error if
    there is none) or ``cuda:N`` (exactly device N as torch numbers it, waiting for it if it is
    taken). When every candidate GPU is taken, waits up to ``wait_s`` seconds, checking every
    ``poll_s``. ``device_count`` overrides what torch reports (tests simulate GPUs with it; the
    returned ``cuda:i`` device is then only a name).
    """
    kind, wanted = _parse_preference(preference)
    if kind == "cpu":
        return DeviceClaim(torch.device("cpu"), None, "CPU requested")

    if device_count is None:
        device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = _parse_visible(visible_env)
    # Lock names use these ids: physical ids where CUDA_VISIBLE_DEVICES lists them.
    ids = [str(i) for i in range(device_count)] if visible is None else visible[:device_count]

    if not ids:
        return _no_device(kind, preference, visible_env)
    if wanted is not None and wanted >= len(ids):
        raise DeviceError(
            f"device {preference!r} requested, but only {len(ids)} CUDA device(s) are visible"
            + (f" (CUDA_VISIBLE_DEVICES={visible_env})" if visible_env is not None else ""),
            f"ask for one of cuda:0 .. cuda:{len(ids) - 1}, or 'cuda' / 'auto' for any free one",
        )

    slurm_job = os.environ.get("SLURM_JOB_ID")
    if visible is not None and len(ids) == 1:
        who = f"SLURM job {slurm_job} granted" if slurm_job else "user set"
        reason = f"{who} CUDA_VISIBLE_DEVICES={visible_env}: using cuda:0 without a lock"
        log.info("%s", reason)
        return DeviceClaim(torch.device("cuda", 0), None, reason, physical_id=ids[0])

    root = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if visible is not None and slurm_job:
        root = root / f"slurm-{_safe_name(slurm_job)}"
    candidates = [wanted] if wanted is not None else list(range(len(ids)))
    return _claim_by_lock(root, ids, candidates, visible_env, wait_s=wait_s, poll_s=poll_s)


def _parse_preference(preference: str) -> tuple[str, int | None]:
    match = _PREFERENCE_RE.match(preference.strip().lower())
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DeviceError(
            f"unknown device preference {preference!r}",
            "use one of 'auto', 'cpu', 'cuda' or 'cuda:N' (N a device number)",
        )
    wanted = match.group(2)
    return match.group(1), int(wanted) if wanted is not None else None


def _parse_visible(value: str | None) -> list[str] | None:
    """Device ids listed in CUDA_VISIBLE_DEVICES; None when it is unset.

    CUDA stops at the first invalid entry; a negative number is the usual way to hide every
    device, so entries from one on are dropped.
    """
    if value is None:
        return None
    ids: list[str] = []
    for token in value.split(","):
        token = token.strip()
        if not token or token.startswith("-") or token == "NoDevFiles":
            break
        ids.append(token)
    return ids


def _no_device(kind: str, preference: str, visible_env: str | None) -> DeviceClaim:
    why = "no CUDA device"
    if visible_env is not None:
        why += f" (CUDA_VISIBLE_DEVICES={visible_env!r})"
    elif not torch.cuda.is_available() and torch.version.cuda is None:
        why += " (this torch is a CPU-only build)"
    if kind == "auto":
        return DeviceClaim(torch.device("cpu"), None, f"{why}: CPU")
    raise DeviceError(
        f"device {preference!r} requested, but {why}",
        "run on a machine with an NVIDIA GPU and a CUDA build of torch (check "
        "`nvidia-smi` and `python -c 'import torch; print(torch.cuda.is_available())'`), "
        "or set the device to 'auto' or 'cpu' to run on CPU",
    )


def _claim_by_lock(
    root: Path,
    ids: list[str],
    candidates: list[int],
    visible_env: str | None,
    *,
    wait_s: float,
    poll_s: float,
) -> DeviceClaim:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DeviceError(
            f"cannot create the GPU lock directory {root}: {err.strerror}",
            f"set {LOCK_DIR_ENV} to a writable directory on this host's local disk",
        ) from None
    deadline = time.monotonic() + max(wait_s, 0.0)
    waiting_logged = False
    while True:
        for local in candidates:
            path = root / f"gpu{_safe_name(ids[local])}.lock"
            fd = _try_lock(path)
            if fd is None:
                continue
            physical = ids[local]
            if visible_env is None:
                where = f"GPU {local} of {len(ids)}"
            else:
                where = f"GPU {physical} (cuda:{local} of CUDA_VISIBLE_DEVICES={visible_env})"
            reason = f"claimed {where} (lock {path})"
            log.info("%s", reason)
            return DeviceClaim(
                torch.device("cuda", local),
                int(physical) if physical.isdigit() else None,
                reason,
                physical_id=physical,
                lock_path=path,
                _fd=fd,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not waiting_logged:
            log.info(
                "all %d candidate GPU(s) are taken; waiting up to %.0f s for one (locks in %s)",
                len(candidates),
                wait_s,
                root,
            )
            waiting_logged = True
        time.sleep(min(max(poll_s, 0.01), remaining))

    holders = "; ".join(
        f"{p.name}: {_holder_note(p)}"
        for p in (root / f"gpu{_safe_name(ids[i])}.lock" for i in candidates)
    )
    raise DeviceError(
        f"no free GPU after waiting {wait_s:g} s: every candidate lock in {root} is held "
        f"({holders})",
        "wait for the jobs holding them to finish, run fewer GPU jobs at once (snakemake "
        "--resources gpu=N with N at most the number of GPUs), or end a stray process named "
        "in the lock files",
    )


def _try_lock(path: Path) -> int | None:
    """Open and exclusively lock ``path``; the open descriptor, or None if another holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        writable = True
    except PermissionError:
        # Another user's lock file in a shared lock directory: flock needs no write access.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if writable:
        note = (
            f"pid={os.getpid()} host={socket.gethostname()} "
            f"since={datetime.now(UTC).isoformat(timespec='seconds')}\n"
        )
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
    return fd


def _holder_note(path: Path) -> str:
    try:
        note = path.read_text().strip()
    except OSError:
        return "unreadable"
    return note or "holder unknown"


def _safe_name(text: str) -> str:
    """A device id (number, GPU-UUID, MIG id) or job id made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _gpu_name(device: torch.device) -> str | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    try:
        return torch.cuda.get_device_name(device)
    except Exception:  # a simulated device index or a broken driver: metadata only
        return None
