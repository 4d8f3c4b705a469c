"""Atomic file output: write to a temporary name beside the target, then rename.

A job that fails or is killed half-way never leaves a file that looks finished. Outputs get
the permissions any ordinary tool gives a new file (0666 and folders 0777, less the umask), so
collaborators sharing a results folder can read them; JSON outputs are strict JSON (no NaN).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def current_umask() -> int:
    """This process's umask, read without changing it where Linux tells it (/proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once (the only portable way)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would have
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory; swap it in for ``target`` on success.

    Files are fsynced before the swap. A directory cannot be renamed onto a non-empty one, so
    an existing ``target`` is moved aside first; a crash in between leaves no ``target``
    rather than a half-written one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private (0700)
        if target.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(table: pa.Table, target: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pyarrow table to parquet atomically (zstd-compressed by default)."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_text(text: str, target: str | os.PathLike[str]) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def json_safe(obj: Any) -> Any:
    """``obj`` with what strict JSON cannot hold replaced: NaN and infinities (Python or numpy)
    become null, numpy scalars and arrays plain numbers and lists, tuples and sets lists."""
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalar or array
        return json_safe(obj.tolist())
    if isinstance(obj, Mapping):
        return json_safe(dict(obj))
    return obj


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`json_safe`; other objects as ``str``), with
    sorted keys and a final newline. Never writes ``NaN`` or ``Infinity``."""
    return (
        json.dumps(json_safe(obj), indent=indent, sort_keys=True, default=str, allow_nan=False)
        + "\n"
    )


def write_json(obj: Any, target: str | os.PathLike[str]) -> None:
    """Write ``obj`` as strict JSON (NaN and infinities as null), atomically."""
    write_text(json_text(obj), target)


def remove_leftovers(target: str | os.PathLike[str]) -> list[Path]:
    """Remove what a killed writer of ``target`` left beside it: the temporary ``.part`` files
    or folders of :func:`atomic_path` / :func:`atomic_dir` and the ``.old`` folder of an
    interrupted swap. Returns the paths removed (for the job's log)."""
    target = Path(target)
    return remove_partial_writes(target.parent, target.name)


def remove_partial_writes(folder: str | os.PathLike[str], name: str = "*") -> list[Path]:
    """The leftovers of interrupted atomic writes in ``folder``: of the file or folder ``name``,
    or (by default) of any. Returns the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for pattern in (f".{name}.*.part", f".{name}.*.old"):
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
