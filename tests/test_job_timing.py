"""A job's time per phase (vitalfm.job_timing): what bench/study_walltime.py adds up."""

from __future__ import annotations

import time

import pytest

from vitalfm.job_timing import JobClock, process_start_time, read_log_timing


def test_phases_add_up_to_the_job_and_overhead_is_all_but_compute() -> None:
    clock = JobClock(started=time.time() - 1.0)
    with clock.phase("model loading"):
        time.sleep(0.05)
    with clock.phase("compute"):
        time.sleep(0.1)
        with clock.phase("writing"):  # nested: the outer phase keeps the time
            time.sleep(0.02)
    with clock.phase("compute"):  # a phase may repeat
        time.sleep(0.03)
    summary = clock.summary()
    assert summary["compute_s"] == pytest.approx(0.15, abs=0.03)
    assert summary["writing_s"] == 0.0
    assert summary["interpreter and imports_s"] == pytest.approx(1.0, abs=0.05)
    parts = sum(v for k, v in summary.items() if k not in ("total_s", "overhead_s"))
    assert parts == pytest.approx(summary["total_s"], abs=0.01)
    assert summary["overhead_s"] == pytest.approx(summary["total_s"] - summary["compute_s"])
    assert read_log_timing(f"some line\n{clock.log_line()}\n") == clock.summary() | {
        "total_s": pytest.approx(summary["total_s"], abs=0.05),
        "other_s": pytest.approx(summary["other_s"], abs=0.05),
        "overhead_s": pytest.approx(summary["overhead_s"], abs=0.05),
    }


def test_an_unknown_phase_is_refused_and_a_log_without_timing_reads_none() -> None:
    with (
        pytest.raises(ValueError, match="unknown job phase 'training'"),
        JobClock().phase("training"),
    ):
        pass
    assert read_log_timing("no timing here\n") is None


def test_the_process_start_is_before_now() -> None:
    assert time.time() - 3600 < process_start_time() <= time.time()
