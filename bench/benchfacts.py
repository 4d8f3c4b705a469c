"""Facts every benchmark records beside its numbers (machine, versions, commit, load), the
report file they go to, and measurements run in a fresh interpreter.

torch is imported only where needed, so that worker processes measuring their own peak
memory (bench/extraction.py) do not carry it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": torch.cuda.is_available(),
    }


def versions() -> dict[str, str]:
    """The same package versions every run's metadata records."""
    from vitalfm.provenance import software_versions

    return software_versions()


def git_state() -> dict[str, Any]:
    """The commit measured, and whether src/ differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "src_dirty": bool(git("status", "--short", "src"))}


def load() -> float:
    return os.getloadavg()[0]


def summarise(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_json_subprocess(argv: Sequence[str], what: str) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh interpreter; its last stdout line is the JSON result."""
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_report(out: Path, benchmark: str, settings: dict[str, Any], **body: Any) -> None:
    """Write a benchmark's JSON report: the facts above, its settings, then ``body``."""
    report = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "git": git_state(),
        "settings": settings,
        **body,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written {out}")


def adapt_for_timed_training(
    forecaster: Any, spec: Any, steps: int, batch: int, **config: Any
) -> tuple[Any, int, int]:
    """Adapt ``forecaster`` with ``spec`` (seeded; its module is consumed) and a Trainer config
    for ``steps`` steps that forecasts no validation series and neither stops early nor
    checkpoints within them; returns (config, trainable, total parameters). ``config`` entries
    override the config's other fields."""
    import torch

    from vitalfm.engine.train import TrainingConfig
    from vitalfm.methods.adapting import adapt, parameter_counts

    torch.manual_seed(0)
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    trainable, total = parameter_counts(forecaster.module)
    training = TrainingConfig(
        max_steps=steps,
        batch_size=batch,
        learning_rate=1e-4,
        eval_every=steps,
        checkpoint_every=steps + 1,
        patience=10**6,
        selection_metric="loss",
        validation_forecast_series=0,
        **config,
    )
    return training, trainable, total
