"""The workflow's files under results/: which rule makes each, and finding a damaged one.

When a job fails on an input it cannot read (a parquet file cut short by a full disk, a copy
gone wrong, a hand edit), :func:`damaged_input_error` names the file and the rule that remakes
it, instead of the reader's traceback. Checking costs nothing until a job has failed.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitalfm.errors import DataError

#: (folder or file under the working folder, the rule that writes it, whether the rule's
#: output is the whole folder). Longest prefix wins; tests check this against the workflow.
PRODUCERS: tuple[tuple[str, str, bool], ...] = (
    ("results/database/synthetic_mimic", "synthetic_mimic", True),
    ("results/database/external_database.json", "check_database", False),
    ("results/cohort/", "cohort", False),
    ("results/vitals/", "vitals", False),
    ("results/grid/", "grid", False),
    ("results/splits/", "split", False),
    ("results/windows/", "windows", False),
    ("results/models/standins/", "pretrain", True),
    ("results/runs/", "finetune", True),
    ("results/forecasts/", "forecast", False),
    ("results/scores/", "score", False),
    ("results/metrics/", "metrics", False),
    ("results/tables/", "tables", False),
    ("results/figures/", "figures", False),
)


def producer(path: str | os.PathLike[str]) -> tuple[str, Path] | None:
    """(rule, what to delete so that Snakemake remakes it) for a file under results/."""
    text = Path(os.path.relpath(Path(path).absolute())).as_posix()
    found = [(p, rule, whole) for p, rule, whole in PRODUCERS if text.startswith(p)]
    if not found:
        return None
    prefix, rule, whole = max(found, key=lambda item: len(item[0]))
    if not whole:
        return rule, Path(text)
    if prefix.endswith("/"):  # one folder per wildcard value: results/runs/<m>/<s>/seed-<k>
        depth = 3 if rule == "finetune" else 1
        parts = Path(text).relative_to(prefix).parts
        return rule, Path(prefix, *parts[:depth])
    return rule, Path(prefix)


def _check_file(path: Path) -> str | None:
    """Why ``path`` cannot be read in full (None if it can)."""
    name = path.name
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pq.read_table(path)
        elif name.endswith(".npz"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return f"its member {bad} is corrupt"
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 20):
                    pass
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        return f"{type(err).__name__}: {err}".strip()
    except Exception as err:  # pyarrow's ArrowInvalid and other readers' own errors
        return f"{type(err).__name__}: {err}".strip()
    return None


def _files(inputs: Iterable[Any]) -> list[Path]:
    out: list[Path] = []
    for item in inputs:
        path = Path(str(item))
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            out.append(path)
    return out


def damaged_input_error(inputs: Iterable[Any], rule: str) -> DataError | None:
    """A DataError naming the first input of ``rule`` that cannot be read, and how to remake
    it; None when every input reads (the failure was something else)."""
    for path in _files(inputs):
        why = _check_file(path)
        if why is None:
            continue
        made = producer(path)
        if made is None:
            return DataError(
                f"{path}, an input of rule {rule}, is damaged and cannot be read ({why})",
                f"replace {path} with a good copy, then run snakemake again",
            )
        maker, remove = made
        what = "the folder " if remove != path else ""
        return DataError(
            f"{path}, an input of rule {rule}, is damaged and cannot be read ({why})",
            f"delete {what}{remove} and run snakemake again: rule {maker} remakes it",
        )
    return None


def disk_full_error(err: OSError, rule: str, outputs: Iterable[Any]) -> DataError:
    """The message for ENOSPC: which folder's disk filled up, how much is free, what to do."""
    if err.filename:
        folders = [Path(str(err.filename)).parent]
    else:
        folders = list(dict.fromkeys(Path(str(o)).parent for o in outputs)) or [Path.cwd()]
    described = []
    for folder in folders:
        try:
            free = shutil.disk_usage(folder).free
            described.append(f"{folder} ({free / 1e6:.1f} MB free now)")
        except OSError:
            described.append(str(folder))
    return DataError(
        f"rule {rule} stopped: the disk holding {', '.join(described)} is full "
        f"({os.strerror(errno.ENOSPC)})",
        "free space on that disk, or run the study in a working folder on a larger one "
        "(snakemake --directory <folder>), then run snakemake again; this job's unfinished "
        "outputs were removed and it reruns from the start",
    )
