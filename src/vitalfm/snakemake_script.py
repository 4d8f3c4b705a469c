"""Glue for the thin scripts in ``scripts/``: log to the rule's log file, fail with one message.

Each script calls :func:`run` with a function of the ``snakemake`` object that hands one step
of :mod:`vitalfm.steps` its settings (:func:`settings_of`), operations (:func:`operations_of`)
and paths. Output goes to the rule's ``log:`` file; a :class:`~vitalfm.errors.VitalfmError`
becomes one "ERROR: problem / How to fix" message in the log and on the terminal, and exit
status 1 (Snakemake then removes the job's outputs, so nothing half-written looks finished).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from vitalfm.errors import VitalfmError
from vitalfm.job_settings import Operations, operations
from vitalfm.job_timing import start_job_clock


def run(snakemake: Any, step: Callable[[Any], None]) -> None:
    clock = start_job_clock()
    terminal = sys.__stderr__
    log_path = snakemake.log[0] if len(snakemake.log) else None
    stream = open(log_path, "w", buffering=1) if log_path else sys.stderr  # noqa: SIM115
    sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
        force=True,
    )
    _remove_leftovers(snakemake)
    _stop_with_snakemake()
    try:
        step(snakemake)
    except VitalfmError as err:
        _fail(snakemake, err, stream, terminal)
    except Exception as err:
        # a full disk, or an input that cannot be read: say which, not the reader's traceback
        explained = _explain(snakemake, err)
        if explained is None:
            raise
        _fail(snakemake, explained, stream, terminal)
    else:  # where the job's time went (bench/study_walltime.py adds these up)
        with contextlib.suppress(OSError):
            print(clock.log_line(), file=stream, flush=True)
    finally:
        with contextlib.suppress(OSError):  # the log's own disk may be the full one
            stream.flush()


def _fail(snakemake: Any, err: VitalfmError, stream: Any, terminal: Any) -> None:
    message = f"ERROR in rule {snakemake.rule}: {err}"
    with contextlib.suppress(OSError):
        print(message, file=stream, flush=True)
    if terminal is not None and stream is not terminal:
        print(message, file=terminal, flush=True)
    raise SystemExit(1) from None


def _disk_full(err: BaseException) -> OSError | None:
    """The ENOSPC error in ``err``'s chain (pyarrow words it without an errno)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and (
            seen.errno == errno.ENOSPC or "No space left on device" in str(seen)
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _explain(snakemake: Any, err: Exception) -> VitalfmError | None:
    from vitalfm.result_files import damaged_input_error, disk_full_error

    full = _disk_full(err)
    if full is not None:
        return disk_full_error(full, snakemake.rule, list(snakemake.output))
    return damaged_input_error(list(snakemake.input), snakemake.rule)


def _stop_with_snakemake(poll_s: float = 1.0) -> None:
    """Stop this job (SIGTERM to itself) when the Snakemake process that started it dies.

    Killed with SIGKILL, Snakemake cannot stop its jobs, and a job left running would race the
    rerun's own attempt for the same outputs and checkpoints. A daemon thread notices the parent
    change (the job is re-parented) and sends SIGTERM, so training writes a checkpoint and exits
    like a pre-empted job; the rerun resumes from it.
    """
    parent = os.getppid()
    if parent == 1:  # started by init itself: nothing to watch
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        logging.getLogger(__name__).warning(
            "Snakemake (pid %d), which started this job, has exited: stopping the job", parent
        )
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-snakemake", daemon=True).start()


def _remove_leftovers(snakemake: Any) -> None:
    """Clear the temporary files a killed earlier attempt of this job left beside its outputs."""
    from vitalfm.io import remove_leftovers

    for output in snakemake.output:
        for path in remove_leftovers(output):
            logging.getLogger(__name__).info("removed %s, left by an interrupted write", path)


def settings_of(snakemake: Any) -> str:
    """The job's settings: its rule's ``params: settings=`` (see :mod:`vitalfm.steps`)."""
    return str(snakemake.params.settings)


def operations_of(snakemake: Any) -> Operations:
    """How the job runs (device, checkpoints, query batching, timeout): the only values a job
    reads from the config itself, since they are no rerun trigger (:mod:`vitalfm.steps`)."""
    return operations(snakemake.config)


def synthetic_dir_of(snakemake: Any) -> str | None:
    """The synthetic CSV directory when the database input is one (source: synthetic)."""
    database = str(snakemake.input.database)
    return database if not database.endswith(".json") else None


def optional_input(snakemake: Any, name: str) -> str | None:
    """A named input that an input function may have left empty (returned [])."""
    value = getattr(snakemake.input, name, None)
    if not value:
        return None
    return str(value)


def use_rule_threads(snakemake: Any) -> None:
    """Give torch the job's threads, so concurrent jobs do not oversubscribe the cores."""
    import torch

    torch.set_num_threads(max(1, int(snakemake.threads)))
    try:  # HF progress bars would flood the job log
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
