"""Facts every benchmark records beside its numbers: machine, versions, commit, load."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": torch.cuda.is_available(),
    }


def versions() -> dict[str, str]:
    import chronos
    import peft
    import transformers

    import vitalfm

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "chronos-forecasting": getattr(chronos, "__version__", "unknown"),
        "vitalfm": getattr(vitalfm, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_dirty": bool(git("status", "--short", "src"))}


def load() -> float:
    return os.getloadavg()[0]


def summarise(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
