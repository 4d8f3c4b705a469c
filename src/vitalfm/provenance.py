"""What produced a result: package versions and the git revision, for every output's metadata.

Free of torch and pandas, so that the report and the benchmarks can record the same facts as
the model jobs without loading the engine.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

#: The packages every run's metadata records.
PACKAGES = (
    "vitalfm",
    "torch",
    "transformers",
    "peft",
    "chronos-forecasting",
    "uni2ts",
    "gluonts",
    "numpy",
    "pandas",
)


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """{package: installed version or "not installed"}."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def software_versions() -> dict[str, str]:
    return package_versions(PACKAGES)


def git_revision() -> str:
    """The commit of this source tree, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
