"""Test helpers that run the workflow as a user does: real Snakemake in a subprocess, on the
test studies of ``.test/config/``.

The test studies follow the Snakemake-workflows convention (a ``.test`` folder of configs that
CI runs): each is a complete config (``--configfile`` replaces config.yaml), written as a file
so that a failing test can be rerun by hand with the same command. The test suite, which is
what CI runs, runs every one of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Where a checkout keeps its test studies, relative to its root.
STUDY_CONFIGS = Path(".test/config")


def study_config_file(name: str) -> Path:
    """``.test/config/<name>.yaml``, relative to a checkout's root (Snakemake runs from there,
    so it is what ``--configfile`` takes)."""
    return STUDY_CONFIGS / f"{name}.yaml"


def load_study_config(root: Path, name: str) -> dict[str, Any]:
    """The test study ``name`` of the checkout at ``root``, to derive a variant from."""
    import yaml

    return yaml.safe_load((root / study_config_file(name)).read_text())


def run_snakemake(
    workdir: Path,
    *args: str,
    snakefile: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """``python -m snakemake ARGS`` on the workflow in ``workdir``, run from there, its output
    captured as text.

    ``snakefile``: another workflow (default ``workdir/Snakefile``); ``env``: variables set on
    top of this process's environment; ``umask``: the run's umask (default: this process's).
    """
    snakefile = workdir / "Snakefile" if snakefile is None else snakefile
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(snakefile),
            "--directory",
            str(workdir),
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        umask=umask,
    )
