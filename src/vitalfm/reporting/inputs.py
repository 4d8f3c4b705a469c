"""Reading what the workflow wrote: metrics, paired differences, run metadata, benchmarks.

Paths follow the workflow's layout under one results folder (``results/`` by default); a
missing required file is a :class:`~vitalfm.errors.DataError` naming the file and the rule that
makes it. Benchmark files are optional (a run made outside Snakemake has none): their columns
are then NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.errors import DataError
from vitalfm.evaluation.metrics import METRICS_COLUMNS, PAIRED_COLUMNS
from vitalfm.study import Run


@dataclass(frozen=True)
class ResultsLayout:
    """Where the workflow puts each input of the report, under one results folder."""

    root: Path = Path("results")

    @property
    def metrics(self) -> Path:
        return self.root / "metrics" / "metrics.parquet"

    @property
    def paired(self) -> Path:
        return self.root / "metrics" / "paired.parquet"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def forecast(self, run_id: str) -> Path:
        return self.root / "forecasts" / f"{run_id}.parquet"

    def forecast_json(self, run_id: str) -> Path:
        return self.root / "forecasts" / f"{run_id}.json"

    def benchmark(self, rule: str, run_id: str) -> Path:
        return self.root / "benchmarks" / rule / f"{run_id}.tsv"

    @property
    def test_windows(self) -> Path:
        return self.root / "windows" / "test.npz"

    def window_index(self, split: str) -> Path:
        return self.root / "windows" / f"{split}.parquet"

    def summary(self, stage: str) -> Path:
        """The data stage's summaries: cohort, vitals, grid, splits."""
        return self.root / stage / f"{'split' if stage == 'splits' else stage}_summary.tsv"


# The rule that writes each kind of input, for the "how to fix" of a missing file.
_MAKER = {
    "metrics": "metrics",
    "runs": "finetune",
    "forecasts": "forecast",
    "windows": "windows",
    "cohort": "cohort",
    "vitals": "vitals",
    "grid": "grid",
    "splits": "split",
}


def require(path: Path, root: Path | None = None) -> Path:
    """``path`` if it exists, else a DataError naming it and the rule that makes it."""
    if path.exists():
        return path
    rule = None
    try:
        part = path.relative_to(root).parts[0] if root is not None else path.parent.name
        rule = _MAKER.get(part)
    except ValueError:
        pass
    made_by = f" (made by rule {rule})" if rule else ""
    raise DataError(
        f"the report needs {path}, which does not exist{made_by}",
        f"run `snakemake {path}` (or the whole workflow) first",
    )


def _read_parquet(path: Path, columns: Sequence[str], root: Path) -> pd.DataFrame:
    frame = pd.read_parquet(require(path, root))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {missing}",
            "rerun rule metrics with this version of vitalfm",
        )
    for col in ("run", "model", "setting", "vital", "metric", "scale"):
        if col in frame.columns:
            frame[col] = frame[col].astype(str)
    return frame


def load_metrics(layout: ResultsLayout) -> pd.DataFrame:
    frame = _read_parquet(layout.metrics, METRICS_COLUMNS, layout.root)
    frame["baseline"] = frame["baseline"].astype(bool)
    frame["rank"] = frame["rank"].astype(float)
    frame["step"] = frame["step"].astype(int)
    return frame


def load_paired(layout: ResultsLayout) -> pd.DataFrame:
    frame = _read_parquet(layout.paired, PAIRED_COLUMNS, layout.root)
    frame["reference"] = frame["reference"].astype(str)
    return frame


def check_runs_scored(runs: Sequence[Run], metrics: pd.DataFrame, layout: ResultsLayout) -> None:
    """Every configured run must be in the metrics (else they are stale)."""
    scored = set(metrics["run"].unique())
    absent = [run.run_id for run in runs if run.run_id not in scored]
    if absent:
        raise DataError(
            f"{layout.metrics} has no rows for the configured run(s) {absent[:5]}"
            + (" ..." if len(absent) > 5 else ""),
            "rerun rule metrics (e.g. `snakemake --forcerun metrics tables figures`)",
        )


def read_json(path: Path, root: Path) -> dict[str, Any]:
    try:
        return json.loads(require(path, root).read_text())
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path} is not valid JSON ({err})", "rerun the rule that made it"
        ) from None


def read_benchmark(path: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one Snakemake job; NaN when there is no file."""
    if not path.is_file():
        return {"s": math.nan, "max_rss": math.nan}
    frame = pd.read_csv(path, sep="\t")
    # `repeat()` benchmarks have one row per repetition: the mean time, the largest RSS.
    return {
        "s": float(pd.to_numeric(frame["s"], errors="coerce").mean()),
        "max_rss": float(pd.to_numeric(frame["max_rss"], errors="coerce").max()),
    }


def _device(meta: Mapping[str, Any]) -> str:
    device = meta.get("device") or {}
    name = str(device.get("device") or "unknown")
    gpu = device.get("gpu_name")
    return f"{name} ({gpu})" if gpu else name


def _peak(training: Mapping[str, Any]) -> dict[str, float]:
    # The engine writes `peak_memory_mb`; accept `peak_memory` as well.
    peak = training.get("peak_memory_mb") or training.get("peak_memory") or {}
    return {
        key: float(peak[key]) if peak.get(key) is not None else math.nan
        for key in ("process_rss_mb", "device_mb")
    }


def run_table(runs: Sequence[Run], layout: ResultsLayout) -> pd.DataFrame:
    """One row per run: identity, parameter counts, training time and memory, device.

    Parameter counts come from the forecast's metadata, which every run has (zero-shot runs
    have no run folder); training facts from the run's ``metadata.json``; peak memory from the
    trainer's record when present, else from the finetune job's Snakemake benchmark.
    """
    rows = []
    for order, run in enumerate(runs):
        forecast_meta = read_json(layout.forecast_json(run.run_id), layout.root)
        params = forecast_meta.get("parameters") or {}
        row: dict[str, Any] = {
            "order": order,
            "run": run.run_id,
            "model": run.model,
            "family": run.family,
            "setting": run.setting,
            "method": run.method.get("method", run.method["kind"]),
            "kind": run.method["kind"],
            "rank": float(run.method["rank"]) if "rank" in run.method else math.nan,
            "baseline": bool(getattr(run, "baseline", False)),
            "trains": run.trains,
            "trainable": float(params.get("trainable", math.nan)),
            "total": float(params.get("total", math.nan)),
            "base_total": float(params.get("base_total", math.nan)),
            "device": _device(forecast_meta),
            "train_s": math.nan,
            "steps": math.nan,
            "train_rss_mb": math.nan,
            "train_device_mb": math.nan,
            "memory_source": "",
        }
        forecast_bench = read_benchmark(layout.benchmark("forecast", run.run_id))
        row["forecast_s"] = forecast_bench["s"]
        row["forecast_rss_mb"] = forecast_bench["max_rss"]
        if run.trains:
            meta = read_json(layout.run_dir(run.run_id) / "metadata.json", layout.root)
            training = meta.get("training") or {}
            params = meta.get("parameters") or params
            row.update(
                trainable=float(params.get("trainable", math.nan)),
                total=float(params.get("total", math.nan)),
                base_total=float(params.get("base_total", math.nan)),
                device=_device(meta),
                steps=float(training.get("steps", math.nan)),
            )
            bench = read_benchmark(layout.benchmark("finetune", run.run_id))
            wall = training.get("wall_time_s")
            row["train_s"] = float(wall) if wall is not None else bench["s"]
            peak = _peak(training)
            row["train_device_mb"] = peak["device_mb"]
            if math.isfinite(peak["process_rss_mb"]):
                row["train_rss_mb"], row["memory_source"] = peak["process_rss_mb"], "trainer"
            elif math.isfinite(bench["max_rss"]):
                row["train_rss_mb"], row["memory_source"] = bench["max_rss"], "benchmark"
        row["percent_trainable"] = (
            100.0 * row["trainable"] / row["total"] if row["total"] and row["total"] > 0 else np.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def load_history(layout: ResultsLayout, run_id: str) -> pd.DataFrame:
    path = require(layout.run_dir(run_id) / "history.tsv", layout.root)
    frame = pd.read_csv(path, sep="\t")
    for col in ("step", "train_loss", "validation_loss"):
        if col not in frame.columns:
            raise DataError(f"{path} lacks the column {col!r}", "rerun rule finetune for this run")
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
