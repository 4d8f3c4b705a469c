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
from vitalfm.evaluation.paired import GAP_COLUMNS, PAIRED_COLUMNS
from vitalfm.evaluation.run_summary import (
    CALIBRATION_COLUMNS,
    METRICS_COLUMNS,
    REPLICATE_COLUMNS,
    REPORT_SPLIT,
)
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

    @property
    def replicates(self) -> Path:
        return self.root / "metrics" / "replicates.parquet"

    @property
    def gap(self) -> Path:
        return self.root / "metrics" / "oracle_gap.parquet"

    @property
    def calibration(self) -> Path:
        return self.root / "metrics" / "calibration.parquet"

    def run_dir(self, replicate_id: str) -> Path:
        """A trained replicate's folder (``<model>/<setting>/seed-<k>``)."""
        return self.root / "runs" / replicate_id

    def forecast(self, replicate_id: str, split: str = REPORT_SPLIT) -> Path:
        return self.root / "forecasts" / split / f"{replicate_id}.parquet"

    def forecast_json(self, replicate_id: str, split: str = REPORT_SPLIT) -> Path:
        return self.root / "forecasts" / split / f"{replicate_id}.json"

    def benchmark(self, rule: str, key: str) -> Path:
        """A job's Snakemake benchmark: ``key`` is its output's id (e.g. ``test/<replicate>``)."""
        return self.root / "benchmarks" / rule / f"{key}.tsv"

    def windows(self, split: str = REPORT_SPLIT) -> Path:
        return self.root / "windows" / f"{split}.npz"

    @property
    def test_windows(self) -> Path:
        return self.windows(REPORT_SPLIT)

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
    frame["split"] = frame["split"].astype(str)
    return frame


def load_paired(layout: ResultsLayout) -> pd.DataFrame:
    frame = _read_parquet(layout.paired, PAIRED_COLUMNS, layout.root)
    for column in ("reference", "split", "chosen_on", "reference_run"):
        frame[column] = frame[column].astype(str)
    return frame


def load_replicates(layout: ResultsLayout) -> pd.DataFrame:
    """Each seed's whole-horizon metrics (rule metrics)."""
    frame = _read_parquet(layout.replicates, REPLICATE_COLUMNS, layout.root)
    frame["split"] = frame["split"].astype(str)
    frame["seed"] = frame["seed"].astype(int)
    return frame


def load_gap(layout: ResultsLayout) -> pd.DataFrame:
    """The share of the persistence-to-oracle gap each run closes (empty without an oracle)."""
    frame = _read_parquet(layout.gap, GAP_COLUMNS, layout.root)
    frame["split"] = frame["split"].astype(str)
    return frame


def load_calibration(layout: ResultsLayout) -> pd.DataFrame:
    """Observed coverage at each quantile level per run, split and vital (rule metrics)."""
    frame = _read_parquet(layout.calibration, CALIBRATION_COLUMNS, layout.root)
    frame["split"] = frame["split"].astype(str)
    frame["level"] = frame["level"].astype(float)
    return frame


def check_runs_scored(runs: Sequence[Run], metrics: pd.DataFrame, layout: ResultsLayout) -> None:
    """Every configured run must be in the metrics, on both splits (else they are stale)."""
    scored = set(metrics["run"].unique())
    splits = set(metrics["split"].unique())
    if not {"validation", "test"} <= splits:
        raise DataError(
            f"{layout.metrics} scores only {sorted(splits)}: this version chooses on validation "
            "and reports on test",
            "rerun rule metrics (e.g. `snakemake --forcerun metrics tables figures`)",
        )
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
    """One row per run: identity, seeds, parameter counts, training time and memory, device.

    Parameter counts come from the first replicate's test forecast metadata, which every run
    has (zero-shot runs have no run folder); training facts from each trained replicate's
    ``metadata.json`` (time and steps: the mean over seeds; memory: the largest); peak memory
    from the trainer's record when present, else from the finetune job's Snakemake benchmark.
    """
    rows = []
    for order, run in enumerate(runs):
        first = run.replicate_id(run.seeds[0])
        forecast_meta = read_json(layout.forecast_json(first), layout.root)
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
            "oracle": bool(getattr(run, "is_oracle", False)),
            "trains": run.trains,
            "seeds": len(run.seeds),
            "first_replicate": first,
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
        # one forecast job per replicate covers every split: its time on the test windows is
        # the job's own record, its peak RSS the job's benchmark
        forecast_bench = read_benchmark(layout.benchmark("forecast", first))
        row["forecast_s"] = float((forecast_meta.get("forecast") or {}).get("seconds", math.nan))
        row["forecast_rss_mb"] = forecast_bench["max_rss"]
        if run.trains:
            seconds, steps, rss, device_mb, sources = [], [], [], [], set()
            for replicate in run.replicate_ids:
                meta = read_json(layout.run_dir(replicate) / "metadata.json", layout.root)
                training = meta.get("training") or {}
                params = meta.get("parameters") or params
                row["device"] = _device(meta)
                steps.append(float(training.get("steps", math.nan)))
                bench = read_benchmark(layout.benchmark("finetune", replicate))
                wall = training.get("wall_time_s")
                seconds.append(float(wall) if wall is not None else bench["s"])
                peak = _peak(training)
                device_mb.append(peak["device_mb"])
                if math.isfinite(peak["process_rss_mb"]):
                    rss.append(peak["process_rss_mb"])
                    sources.add("trainer")
                elif math.isfinite(bench["max_rss"]):
                    rss.append(bench["max_rss"])
                    sources.add("benchmark")
            row.update(
                trainable=float(params.get("trainable", math.nan)),
                total=float(params.get("total", math.nan)),
                base_total=float(params.get("base_total", math.nan)),
                steps=_mean(steps),
                train_s=_mean(seconds),
                train_device_mb=_largest(device_mb),
                train_rss_mb=_largest(rss),
                memory_source="trainer"
                if sources == {"trainer"}
                else ("benchmark" if sources else ""),
            )
        row["percent_trainable"] = (
            100.0 * row["trainable"] / row["total"] if row["total"] and row["total"] > 0 else np.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _largest(values: Sequence[float | None]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else math.nan


def load_history(layout: ResultsLayout, replicate_id: str) -> pd.DataFrame:
    """A trained replicate's ``history.tsv``."""
    path = require(layout.run_dir(replicate_id) / "history.tsv", layout.root)
    frame = pd.read_csv(path, sep="\t")
    for col in ("step", "train_loss", "validation_loss"):
        if col not in frame.columns:
            raise DataError(f"{path} lacks the column {col!r}", "rerun rule finetune for this run")
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
