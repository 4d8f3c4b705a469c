"""Test helpers: a real PostgreSQL server for the synthetic-database tests, and small readers.

:func:`shared_server` reuses the suite-wide ``pg_server`` fixture when a conftest provides one,
and otherwise starts one embedded server for the process; call it from a fixture.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vitalfm.db.embedded import EmbeddedPostgres

_schema_counter = itertools.count()
_US_PER_MINUTE = 60_000_000


_fallback_server: EmbeddedPostgres | None = None


def shared_server(request: pytest.FixtureRequest) -> EmbeddedPostgres:
    """The suite's ``pg_server`` fixture when a conftest provides one; otherwise one embedded
    server for the whole process (stopped at exit by EmbeddedPostgres itself)."""
    global _fallback_server
    try:
        return request.getfixturevalue("pg_server")
    except pytest.FixtureLookupError:
        pass
    if _fallback_server is None:
        _fallback_server = EmbeddedPostgres().start()
    return _fallback_server


def unique_schema(prefix: str) -> str:
    """A schema name no other test in this session (or process) uses."""
    return f"{prefix}_{os.getpid()}_{next(_schema_counter)}"


def drop_schema(conn: Any, schema: str) -> None:
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    conn.commit()


def toy_windows(
    split: str = "train",
    n_stays: int = 6,
    steps_per_stay: int = 60,
    vital_names: tuple[str, ...] = ("heart_rate", "mbp"),
    context_steps: int = 24,
    horizon_steps: int = 12,
    stride_steps: int = 4,
    seed: int = 0,
    missing_fraction: float = 0.1,
) -> Any:
    """A small WindowSet of vital-like series (level + slow wave + noise, some gaps).

    For engine and model tests that need windows without running the data half of the DAG.
    """
    import numpy as np

    from vitalfm.data.windows import WindowSet

    rng = np.random.default_rng(seed)
    total = n_stays * steps_per_stay
    t = np.arange(steps_per_stay)
    blocks = []
    for _ in range(n_stays):
        columns = []
        for j, _name in enumerate(vital_names):
            level = 80.0 + 10 * j + rng.normal(0, 8)
            wave = 6 * np.sin(2 * np.pi * t / rng.uniform(20, 40) + rng.uniform(0, 6))
            columns.append(level + wave + rng.normal(0, 1.5, steps_per_stay))
        blocks.append(np.stack(columns, axis=1))
    values = np.concatenate(blocks).astype(np.float32)
    observed = rng.random(values.shape) >= missing_fraction
    values[~observed] = np.nan
    window = context_steps + horizon_steps
    offsets = np.arange(n_stays + 1, dtype=np.int64) * steps_per_stay
    starts, stay_index = [], []
    for s in range(n_stays):
        for start in range(0, steps_per_stay - window + 1, stride_steps):
            starts.append(offsets[s] + start)
            stay_index.append(s)
    starts_arr = np.array(starts, dtype=np.int64)
    horizon_rows = starts_arr[:, None] + context_steps + np.arange(horizon_steps)
    horizon_observed = observed[horizon_rows].sum(axis=1).astype(np.int16)
    assert values.shape[0] == total
    return WindowSet(
        split=split,
        vital_names=tuple(vital_names),
        frequency_minutes=15,
        context_steps=context_steps,
        horizon_steps=horizon_steps,
        stride_steps=stride_steps,
        min_horizon_observed=1,
        values=values,
        observed=observed,
        stay_ids=np.arange(200001, 200001 + n_stays, dtype=np.int32),
        subject_ids=np.arange(1001, 1001 + n_stays, dtype=np.int32),
        stay_offsets=offsets,
        # stays start at different times of day (37 h 15 min apart) so calendar features differ
        stay_start_times=1_600_000_000_000_000
        + np.arange(n_stays, dtype=np.int64) * (37 * 60 + 15) * _US_PER_MINUTE,
        window_start_rows=starts_arr,
        window_stay_index=np.array(stay_index, dtype=np.int32),
        horizon_observed=horizon_observed,
    )


# --- every adaptation method end to end, for any family -----------------------------------

#: Values small enough for CPU tests where a kind's defaults are not (a kind not named here
#: runs with its defaults).
SMALL_METHOD_VALUES: dict[str, dict[str, Any]] = {
    "lora": {"rank": 2, "alpha": 16},
    "dora": {"rank": 2},
    "vera": {"rank": 16},
    "fourierft": {"n_frequency": 20},
}


def every_method() -> dict[str, dict[str, Any]]:
    """One method entry per kind a pretrained model may use (from the registry, so a new kind
    is run end to end on every family without being listed here)."""
    from vitalfm.methods import method_kinds

    return {
        name: {"kind": name, **SMALL_METHOD_VALUES.get(name, {})}
        for name, kind in method_kinds(configurable_only=True).items()
        if kind.for_pretrained
    }


def every_setting() -> tuple[str, ...]:
    """The run settings :func:`every_method` expands to (``lora-r2``, ``vera-r16``, ...)."""
    from vitalfm.methods import expand_method

    return tuple(s for name, entry in every_method().items() for s in expand_method(name, entry))


def toy_window_files(root: Any) -> dict[str, Any]:
    """Train, validation and test window files of :func:`toy_windows` under ``root``."""
    files = {}
    for i, split in enumerate(("train", "validation", "test")):
        files[split] = root / f"{split}.npz"
        toy_windows(split, n_stays=4 if split == "train" else 2, seed=i).save(files[split])
    return files


def tiny_study_config(
    family: str,
    standin: str,
    options: dict[str, Any] | None = None,
    vitals: tuple[str, ...] = ("heart_rate", "mbp"),
) -> dict[str, Any]:
    """A validated config with one stand-in model ``m`` and every method, 2 training steps."""
    from vitalfm.config import validate_config

    model: dict[str, Any] = {"family": family, "source": {"standin": standin}}
    if options:
        model["options"] = options
    return validate_config(
        {
            "vitals": {"names": list(vitals)},
            "models": {"m": model},
            "methods": every_method(),
            "training": {
                "max_steps": 2,
                "batch_size": 8,
                "eval_every": 1,
                "checkpoint_every": 1,
                "validation_max_series": 16,
            },
            "forecast": {"num_samples": 8, "batch_size": 32},
            "device": {"preference": "cpu"},
        }
    )


def run_every_setting(
    cfg: dict[str, Any],
    settings: Any,
    window_files: dict[str, Any],
    standin_dir: Any,
    work: Any,
) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any]]]:
    """Fine-tune (unless zero-shot) and forecast model ``m`` with each setting, through the
    workflow's run functions, checking what holds for every family and method.

    Returns ``{setting: (finetune metadata or None, forecast metadata)}``.
    """
    import pyarrow.parquet as pq
    import torch

    from vitalfm.methods import method_kind
    from vitalfm.models.base import ModelSource
    from vitalfm.models.registry import forecaster_class
    from vitalfm.steps import standalone
    from vitalfm.study import method_settings

    kinds = {setting: method_kind(entry["kind"]) for setting, entry in method_settings(cfg).items()}
    family = forecaster_class(cfg["models"]["m"]["family"])
    base = family.load(ModelSource(path=str(standin_dir)), torch.device("cpu"))
    base_total = sum(p.numel() for p in base.module.parameters())
    results: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
    for setting in settings:
        run_dir = work / "runs" / setting
        trained = None
        if kinds[setting].trains:
            trained = standalone.finetune(
                cfg,
                "m",
                setting,
                window_files["train"],
                window_files["validation"],
                run_dir,
                work / "ck" / setting,
                standin_dir=str(standin_dir),
            )
            params = trained["parameters"]
            assert 0 < params["trainable"] <= params["total"], setting
            whole = kinds[setting].saves == "model"
            assert (params["trainable"] == params["total"]) == whole, setting
            assert trained["training"]["steps"] == 2 and trained["standin"] is True
            assert (run_dir / "history.tsv").is_file()
            check_saved_model_travels(
                run_dir / "model", kinds[setting].saves, setting, base, standin_dir, cfg
            )
        out = work / "forecasts" / f"{setting}.parquet"
        forecast = standalone.forecast(
            cfg,
            "m",
            setting,
            window_files["test"],
            out,
            out.with_suffix(".json"),
            run_dir=run_dir if kinds[setting].trains else None,
            standin_dir=str(standin_dir),
        )
        assert pq.read_table(out).num_rows == forecast["forecast"]["rows"] > 0
        assert forecast["parameters"]["base_total"] == base_total
        assert forecast["median_finite_fraction"] == 1.0
        assert "stand-in" in forecast["source"]
        results[setting] = (trained, forecast)
    assert not list((work / "runs").glob(".*part"))  # no half-written run folder left
    return results


def library_snippet(card: str) -> str | None:
    """The Python block a model card gives under "With the family's own library", if any."""
    marker = "With the family's own library:"
    if marker not in card:
        return None
    block = card.split(marker, 1)[1].split("```python", 1)[1]
    return block.split("```", 1)[0]


def check_saved_model_travels(
    folder: Path, saves: str, setting: str, base: Any, standin_dir: Any, cfg: dict[str, Any]
) -> None:
    """A finetune run's saved folder works away from the study: adapters name their base by
    absolute path, a model card sits beside the weights, and the card's own loading code
    (run as a user would, from another working directory) yields the weights the study
    forecasts with."""
    import contextlib
    import copy

    import torch

    from vitalfm.methods import MethodSpec
    from vitalfm.methods.adapting import load_adapted
    from vitalfm.models.base import ADAPTER_CONFIG, ModelSource
    from vitalfm.study import method_settings

    card = (folder / "README.md").read_text()
    assert f"`{setting}`" in card and "## How to load it" in card, setting
    if saves == "adapter":
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
        assert config["base_model_name_or_path"] == str(Path(standin_dir).resolve()), setting
        assert f"base_model: {json.dumps(str(Path(standin_dir).resolve()))}" in card
    snippet = library_snippet(card)
    if snippet is None:
        return
    if saves == "adapter":
        spec = MethodSpec.from_config(setting, method_settings(cfg)[setting])
        fresh = type(base).load(ModelSource(path=str(standin_dir)), torch.device("cpu"))
        study_module = load_adapted(copy.deepcopy(fresh.module), spec, folder)
    else:
        study_module = type(base).load(ModelSource(path=str(folder)), torch.device("cpu")).module
    namespace: dict[str, Any] = {}
    with contextlib.chdir(Path(folder).anchor):  # elsewhere: a relative base would not resolve
        exec(snippet.replace("<this folder>", str(folder)), namespace)
    loaded = namespace.get("module")
    if loaded is None:
        loaded = type(base).network_of(namespace["pipeline"])
    theirs = loaded.state_dict()
    for name, tensor in study_module.state_dict().items():
        torch.testing.assert_close(theirs[name], tensor, msg=f"{setting}: {name}")


# --- the from-scratch baselines -------------------------------------------------------------

#: The baseline families as ``models:`` entries, sized for CPU tests.
TINY_BASELINES: dict[str, dict[str, Any]] = {
    "persistence": {"family": "persistence", "source": {"scratch": True}, "methods": ["zero_shot"]},
    "nhits": {
        "family": "nhits",
        "source": {"scratch": True},
        "methods": ["scratch"],
        "options": {"stacks": 2, "hidden_size": 32, "pooling": [2, 1], "downsample": [2, 1]},
    },
    "nbeats": {
        "family": "nbeats",
        "source": {"scratch": True},
        "methods": ["scratch"],
        "options": {"stacks": 1, "blocks": 2, "hidden_size": 32},
    },
    "dlinear": {
        "family": "dlinear",
        "source": {"scratch": True},
        "methods": ["scratch"],
        "options": {"kernel_size": 5, "hidden_size": 8},
    },
}


def tiny_baseline_config(
    max_steps: int = 2,
    learning_rate: float = 3e-3,
    vitals: tuple[str, ...] = ("heart_rate", "mbp"),
) -> dict[str, Any]:
    """A validated config with :data:`TINY_BASELINES` (persistence zero-shot, the others
    trained by method ``scratch`` for ``max_steps`` steps)."""
    from vitalfm.config import validate_config

    return validate_config(
        {
            "vitals": {"names": list(vitals)},
            "models": TINY_BASELINES,
            "methods": {
                "zero_shot": {"kind": "zero_shot"},
                "scratch": {"kind": "scratch", "learning_rate": learning_rate},
            },
            "training": {
                "max_steps": max_steps,
                "batch_size": 32,
                "eval_every": max(1, max_steps // 4),
                "checkpoint_every": max(1, max_steps // 2),
                "patience": 100,
                "validation_max_series": 64,
            },
            "forecast": {"num_samples": 50, "batch_size": 64},
            # toy windows are not the synthetic database's stays: no oracle
            "evaluation": {"oracle": False},
            "device": {"preference": "cpu"},
        }
    )


def copy_checkout(root: Path, dest: Path) -> Path:
    """Copy what a fresh clone of ``root`` would hold, plus the new files git does not ignore
    (so uncommitted work is tested too); symlinks stay symlinks."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = root / name.decode()
        if source.is_file() or source.is_symlink():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


def hf_cache_from_folder(folder: Path, hf_home: Path, repo_id: str) -> Path:
    """Put the files of checkpoint ``folder`` into the Hugging Face cache under ``hf_home`` as
    a hub download leaves them; returns the snapshot folder.

    The layout is huggingface_hub's documented cache (``hub/models--<org>--<name>/``: the file
    contents under ``blobs/<hash>``, ``refs/main`` holding the commit id, and
    ``snapshots/<commit>/<file>`` a relative symlink to its blob). huggingface_hub has no
    offline way to add files to a cache (every writer downloads), so it is written here; the
    tests check it with huggingface_hub's ``scan_cache_dir``.
    """
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    commit = hashlib.sha1("".join(digests.values()).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for path, digest in digests.items():
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# --- score tables for the aggregation tests -------------------------------------------------------


def score_rows(errors: dict[int, list[float]]) -> Any:
    """A score table (the score rule's format) of whole-horizon cells from each patient's
    point errors: ``errors[subject_id]`` lists them; the min-max scale divides them by 100."""
    import pandas as pd

    from vitalfm.evaluation.metric_registry import STATISTICS

    rows = []
    for scale, unit in (("original", 1.0), ("minmax", 100.0)):
        for subject, errs in errors.items():
            row = dict.fromkeys(STATISTICS, 0.0)
            row.update(
                subject_id=subject,
                scale=scale,
                vital="all",
                step=0,
                n_points=len(errs),
                n_windows=len(errs),
                ae=sum(abs(e) for e in errs) / unit,
                se=sum(e * e for e in errs) / unit**2,
                abs_y=100.0 * len(errs) / unit,
            )
            rows.append(row)
    return pd.DataFrame(rows)


# --- strict JSON ----------------------------------------------------------------------------------


def strict_json_loads(text: str) -> Any:
    """Parse ``text`` as JSON the way jq and browsers do: ``NaN``, ``Infinity`` and
    ``-Infinity`` (which Python's json module accepts by default) raise ValueError."""
    import json

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def assert_strict_json_tree(root: str | os.PathLike[str]) -> int:
    """Parse every ``*.json`` file under ``root`` (hidden folders included) strictly; fail
    naming each file that is not valid JSON. Returns how many files were checked."""
    bad = []
    files = sorted(p for p in Path(root).rglob("*.json") if p.is_file())
    for path in files:
        try:
            strict_json_loads(path.read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            bad.append(f"{path}: {err}")
    assert not bad, "JSON outputs that strict parsers refuse:\n" + "\n".join(bad)
    return len(files)
