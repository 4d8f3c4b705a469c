"""The environment upstream Lag-Llama runs in (gluonts 0.14 with its Lightning), for tests that
check that files this project writes load there.

Upstream Lag-Llama is not on PyPI and pins ``gluonts[torch]<=0.14.4``; gluonts 0.14 pins
``lightning<2.2``, ``numpy~=1.16`` and ``pandas<2.2``, none of which fit beside this project's
stack. So the environment is a separate virtual environment, built once per machine under
``~/.cache/vitalfm/test-envs/<name>-<key>/`` (``VITALFM_TEST_ENVS`` moves the folder), where
the key is a hash of :data:`UPSTREAM_PINS`, the torch version and the Python version: change a
pin and a new one is built beside the old. torch is pinned to the version this project runs
(the wheel pip most likely already has), the rest as below.

Build it (or find it) with ``python -m vitalfm.testing_upstream``; it prints the environment's
python. :func:`upstream_python` returns ``(python, None)`` or ``(None, why it cannot be built)``
for a test to skip with.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: What upstream Lag-Llama's requirements resolve to on Python 3.11 (its last gluonts, and
#: the Lightning, numpy and pandas gluonts 0.14 accepts): the packages that decide how a
#: checkpoint unpickles are pinned exactly; their own dependencies are left to pip.
UPSTREAM_PINS = (
    "gluonts[torch]==0.14.4",
    "lightning==2.1.4",
    "pytorch-lightning==2.1.4",
    "numpy==1.26.4",
    "pandas==2.1.4",
    "scipy==1.13.1",
    "pydantic==2.14.4",
    # Lightning 2.1 imports pkg_resources, gone from setuptools 81 (recent torch needs >= 77)
    "setuptools<81",
)
NAME = "gluonts-0.14.4"
BUILD_COMMAND = f"{Path(sys.executable).name} -m vitalfm.testing_upstream"
#: Every import the tests need; the environment counts as built once these import.
CHECK_IMPORTS = "import gluonts.torch.modules.loss, gluonts.torch.distributions, lightning, torch"
READY = "ready"


def _torch_pin() -> str:
    from importlib import metadata

    return f"torch=={metadata.version('torch')}"


def cache_root() -> Path:
    configured = os.environ.get("VITALFM_TEST_ENVS")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vitalfm" / "test-envs"


def requirements() -> list[str]:
    return [*UPSTREAM_PINS, _torch_pin()]


def env_dir() -> Path:
    """The environment's folder: its name says what it is, its key what exactly."""
    key_text = "\n".join([*requirements(), f"python {sys.version_info[:2]}"])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:12]
    return cache_root() / f"{NAME}-{key}"


def _python(folder: Path) -> Path:
    return folder / "bin" / "python"


def _run(command: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True)


def build(progress: bool = False) -> Path:
    """The environment's python, building the environment first if it is not there.

    One build at a time per folder (a file lock); a half-built folder (no ready marker) is
    removed and built again. Raises ``subprocess.CalledProcessError`` (the log says why) or
    ``OSError``.
    """
    folder = env_dir()
    if (folder / READY).is_file():
        return _python(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / READY).is_file():  # built by another process while this one waited
            return _python(folder)
        shutil.rmtree(folder, ignore_errors=True)
        log = folder.parent / f"{folder.name}.log"
        log.write_text("")
        started = time.perf_counter()
        if progress:
            print(f"building {folder} (log: {log})", file=sys.stderr)
        try:
            _run([sys.executable, "-m", "venv", str(folder)], log)
            pip = [str(_python(folder)), "-m", "pip", "install", "--only-binary", ":all:"]
            _run([*pip, *requirements()], log)
            _run([str(_python(folder)), "-c", CHECK_IMPORTS], log)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # the log stays
            raise
        seconds = time.perf_counter() - started
        (folder / READY).write_text("\n".join([*requirements(), f"built in {seconds:.0f} s", ""]))
        if progress:
            print(f"built in {seconds:.0f} s", file=sys.stderr)
    return _python(folder)


def upstream_python() -> tuple[Path | None, str | None]:
    """``(python, None)``, or ``(None, why)`` when the environment cannot be built here."""
    try:
        return build(), None
    except subprocess.CalledProcessError as err:
        log = env_dir().parent / f"{env_dir().name}.log"
        tail = log.read_text().strip().splitlines()[-3:] if log.is_file() else []
        why = f"`{' '.join(map(str, err.cmd[:6]))} ...` failed ({' / '.join(tail)}; full log {log})"
    except OSError as err:
        why = f"{type(err).__name__}: {err}"
    return None, (
        f"no gluonts 0.14 environment (upstream Lag-Llama's) could be built: {why}. It needs "
        f"pip access to a package index with {', '.join(requirements())}; build it with "
        f"`{BUILD_COMMAND}`"
    )


if __name__ == "__main__":
    print(build(progress=True))
