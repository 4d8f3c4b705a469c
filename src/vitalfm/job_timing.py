"""Where a job's wall time goes: interpreter and imports, data, model, compute, writing.

:func:`vitalfm.snakemake_script.run` starts a :class:`JobClock` for every rule's job; steps
mark their phases with :func:`phase`, and the job's log ends with one ``job timing: {...}``
line (JSON) that ``bench/study_walltime.py`` adds up over a whole study. Time before the step
starts (Python, Snakemake's script preamble, module imports) is measured from the process's
own start time; what no phase claims is reported as ``other``. Outside a Snakemake job (tests,
notebooks) the phases are recorded on a clock nobody reads, at no cost worth naming.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The phases a step may mark; everything else a job does is counted as overhead.
PHASES = ("data loading", "model loading", "compute", "writing")
#: Time from the process's start to the step: the interpreter, Snakemake's preamble, imports.
STARTUP = "interpreter and imports"
#: Lines of a job log that carry its timing start with this.
LOG_PREFIX = "job timing: "


def process_start_time() -> float:
    """Epoch seconds at which this process started (Linux /proc; else now)."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as uptime:
            up = float(uptime.read().split()[0])
        started_after_boot = int(fields[19]) / ticks  # field 22: starttime, in clock ticks
        return time.time() - up + started_after_boot
    except (OSError, ValueError, IndexError):
        return time.time()


class JobClock:
    """Seconds per phase of one job; phases may repeat (they add up) but not nest."""

    def __init__(self, started: float | None = None) -> None:
        self.started = process_start_time() if started is None else started
        self.step_started = time.time()
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._inside: str | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise ValueError(f"unknown job phase {name!r}; one of {', '.join(PHASES)}")
        if self._inside is not None:  # nested: the outer phase keeps the time
            yield
            return
        self._inside, begun = name, time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - begun
            self._inside = None

    def summary(self) -> dict[str, Any]:
        """{"total_s", "<phase>_s" ..., "other_s", "overhead_s"}: overhead is all but compute."""
        now = time.time()
        total = now - self.started
        startup = max(0.0, self.step_started - self.started)
        claimed = sum(self.seconds.values())
        parts = {STARTUP: startup, **self.seconds, "other": max(0.0, total - startup - claimed)}
        rounded = {f"{name}_s": round(value, 3) for name, value in parts.items()}
        total_s = round(total, 3)
        # Overhead from the rounded figures, so that the line's own numbers add up exactly.
        overhead_s = round(total_s - rounded["compute_s"], 3)
        return {"total_s": total_s, **rounded, "overhead_s": overhead_s}

    def log_line(self) -> str:
        return LOG_PREFIX + json.dumps(self.summary(), sort_keys=True)


_clock = JobClock()


def start_job_clock() -> JobClock:
    """A fresh clock for the job this process runs (called once, by the script glue)."""
    global _clock
    _clock = JobClock()
    return _clock


def job_clock() -> JobClock:
    return _clock


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the enclosed time towards ``name`` (one of :data:`PHASES`) of this job."""
    with _clock.phase(name):
        yield


def read_log_timing(text: str) -> dict[str, float] | None:
    """The ``job timing`` record of a job log's text, or None if the job wrote none."""
    for line in reversed(text.splitlines()):
        if line.startswith(LOG_PREFIX):
            return json.loads(line[len(LOG_PREFIX) :])
    return None
