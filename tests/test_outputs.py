"""Outputs collaborators can use: permissions from the umask like any ordinary tool, JSON that
strict parsers (jq, browsers) accept, and no console script that points nowhere."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import stat
import tomllib
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from vitalfm.io import atomic_dir, atomic_path, json_text, write_json, write_parquet, write_text
from vitalfm.testing import assert_strict_json_tree, copy_checkout, strict_json_loads
from vitalfm.testing_workflow import run_snakemake, study_config_file

REPO = Path(__file__).resolve().parents[1]
# umask -> (file mode, folder mode), as touch and mkdir give them
MODES = {0o022: (0o644, 0o755), 0o027: (0o640, 0o750), 0o077: (0o600, 0o700)}


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", sorted(MODES), ids=lambda m: f"umask-{m:03o}")
def test_outputs_get_the_mode_the_umask_gives(tmp_path: Path, mask: int) -> None:
    file_mode, dir_mode = MODES[mask]
    with umask(mask):
        write_text("x\n", tmp_path / "new/a.txt")
        write_json({"a": 1}, tmp_path / "a.json")
        write_parquet(pa.table({"a": [1, 2]}), tmp_path / "a.parquet")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"\0")
        write_text("replaced\n", tmp_path / "a.txt")  # over an existing file
        write_text("again\n", tmp_path / "a.txt")
        for _ in range(2):  # a new folder, then one replacing it
            with atomic_dir(tmp_path / "model") as tmp:
                (tmp / "weights.bin").write_bytes(b"\0")
                write_json({"b": 2}, tmp / "metadata.json")
    for name in ("new/a.txt", "a.json", "a.parquet", "b.bin", "a.txt"):
        assert mode(tmp_path / name) == file_mode, name
    assert mode(tmp_path / "model") == dir_mode
    for name in ("weights.bin", "metadata.json"):
        assert mode(tmp_path / "model" / name) == file_mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.json",
        "a.parquet",
        "a.txt",
        "b.bin",
        "model",
        "new",
    ]  # no temporary left behind


def test_workflow_outputs_are_readable_by_the_group(tmp_path: Path) -> None:
    """The data rules of a real (small) study under umask 027: group-readable, not private."""
    workdir = copy_checkout(REPO, tmp_path / "clone")
    done = run_snakemake(
        workdir,
        "--cores",
        "2",
        "results/splits/split_summary.tsv",
        "--configfile",
        str(study_config_file("data")),
        umask=0o027,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = workdir / "results"
    wrong = [
        f"{path.relative_to(workdir)}: {mode(path):o}"
        for path in sorted(results.rglob("*"))
        if mode(path) != (0o750 if path.is_dir() else 0o640)
    ]
    assert wrong == []
    assert (results / "cohort/cohort.parquet").is_file()
    assert assert_strict_json_tree(results) >= 1  # the synthetic database's MANIFEST.json


def test_json_outputs_are_strict_json(tmp_path: Path) -> None:
    """NaN and infinities, Python's or numpy's, become null; numpy values plain numbers."""
    meta = {
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "np_nan": np.float64("nan"),
        "np32_inf": np.float32("inf"),
        "np32": np.float32(0.5),
        "np_int": np.int64(3),
        "np_bool": np.bool_(True),
        "array": np.array([1.0, np.nan, 2.0]),
        "nested": {"history": [{"loss": 1.5, "score": math.nan}], "pair": (1, math.inf)},
        "path": tmp_path,
        "fine": 0.25,
    }
    write_json(meta, tmp_path / "metadata.json")
    text = (tmp_path / "metadata.json").read_text()
    back = strict_json_loads(text)
    assert back == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "np_nan": None,
        "np32_inf": None,
        "np32": 0.5,
        "np_int": 3,
        "np_bool": True,
        "array": [1.0, None, 2.0],
        "nested": {"history": [{"loss": 1.5, "score": None}], "pair": [1, None]},
        "path": str(tmp_path),
        "fine": 0.25,
    }
    assert json_text({"a": [1.0, 2]}) == json.dumps({"a": [1.0, 2]}, indent=2) + "\n"
    assert math.isnan(meta["nan"])  # the caller's object is left as it was


def test_strict_json_tree_names_each_file_strict_parsers_refuse(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok/a.json").write_text('{"a": null}')
    assert assert_strict_json_tree(tmp_path) == 1
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden/nan.json").write_text('{"a": NaN}')
    (tmp_path / "inf.json").write_text("[-Infinity]")
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(AssertionError) as info:
        assert_strict_json_tree(tmp_path)
    for name in ("nan.json", "inf.json", "cut.json"):
        assert name in str(info.value)
    assert "ok/a.json" not in str(info.value)


def test_every_console_script_resolves() -> None:
    """A script declared in pyproject.toml, or installed for vitalfm, runs a real function."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    installed = {
        e.name: e.value
        for e in distribution("vitalfm").entry_points
        if e.group == "console_scripts"
    }
    assert installed == declared, "the installed package is stale: run bash envs/setup.sh"
    for name, target in declared.items():
        module, _, attr = target.partition(":")
        try:
            func = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            pytest.fail(f"console script {name} = {target!r} points nowhere: {err}")
        assert callable(func), name
