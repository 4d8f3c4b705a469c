"""Rules events and event_metrics on small files: the scripts as Snakemake runs them, a
replicate with sample paths beside quantile-only ones, and the metrics table's rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from evaluation_testing import Namespace, make_forecasts, run_script

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.data.windows import WindowSet
from vitalfm.evaluation.event_metrics import EVENT_METRIC_COLUMNS, METRICS
from vitalfm.study import SPLITS_SCORED, study_runs
from vitalfm.testing import toy_windows

SAMPLES = 40


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return validate_config(
        {
            "vitals": {"names": ["heart_rate", "mbp"]},
            "models": {
                "m": {"family": "chronos", "source": {"standin": "chronos-t5"}},
                "persistence": {
                    "family": "persistence",
                    "source": {"scratch": True},
                    "methods": ["zero_shot"],
                },
            },
            "methods": {"zero_shot": {"kind": "zero_shot"}, "lora": {"kind": "lora", "rank": 2}},
            "training": {"seeds": [0, 1]},
            "evaluation": {"bootstrap": {"resamples": 40, "seed": 0}, "oracle": False},
        }
    )


def _windows(split: str, seed: int):
    """Toy windows whose MAP hovers around 65 and HR around 100, so events happen."""
    windows = toy_windows(split, n_stays=5, steps_per_stay=60, seed=seed)
    windows.values[:, 0] += 20.0
    windows.values[:, 1] -= 25.0
    return windows


def _paths_table(forecasts: pd.DataFrame, seed: int) -> pa.Table:
    """A sample-path file as the forecast rule writes it: one row per observed point."""
    rng = np.random.default_rng(seed)
    rows = forecasts[forecasts["observed"]]
    spread = (rows["q0.9"] - rows["q0.1"]).to_numpy(np.float32)[:, None] / 2.56
    samples = rows["median"].to_numpy(np.float32)[:, None] + spread * rng.standard_normal(
        (len(rows), SAMPLES), dtype=np.float32
    )
    return pa.table(
        {
            "window_id": pa.array(rows["window_id"].to_numpy(np.int64)),
            "vital": pa.array(rows["vital"].astype(str).tolist(), pa.string()),
            "step": pa.array(rows["step"].to_numpy(np.int16)),
            "samples": pa.FixedSizeListArray.from_arrays(
                pa.array(samples.reshape(-1), pa.float32()), SAMPLES
            ),
        }
    )


@pytest.fixture(scope="module")
def made(cfg: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every replicate's forecasts (one with sample paths), then rule events' script."""
    work = tmp_path_factory.mktemp("events")
    (work / "logs").mkdir()
    windows = {}
    for i, split in enumerate(SPLITS_SCORED):
        windows[split] = work / "windows" / f"{split}.npz"
        windows[split].parent.mkdir(parents=True, exist_ok=True)
        _windows(split, i).save(windows[split])
    keys, files = [], []
    for r, run in enumerate(study_runs(cfg)):
        for seed in run.seeds:
            rep = run.replicate_id(seed)
            forecasts, paths, outs = [], [], []
            for split in SPLITS_SCORED:
                frame = make_forecasts(WindowSet.load(windows[split]), seed=10 * r + seed)
                target = work / "forecasts" / split / f"{rep}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(target)
                sample_paths = target.with_suffix(".paths.parquet")
                with_paths = run.setting == "lora-r2" and seed == 0
                table = _paths_table(frame, seed)
                pq.write_table(table if with_paths else table.slice(0, 0), sample_paths)
                forecasts.append(str(target))
                paths.append(str(sample_paths))
                outs.append(str(work / "events" / split / f"{rep}.parquet"))
                keys.append((split, run.run_id, seed))
                files.append(outs[-1])
            sm = SimpleNamespace(
                config=cfg,
                params=SimpleNamespace(
                    settings=job_settings.events(cfg), splits=list(SPLITS_SCORED)
                ),
                wildcards=SimpleNamespace(model=run.model, setting=run.setting, seed=str(seed)),
                input=SimpleNamespace(
                    forecasts=forecasts,
                    paths=paths,
                    windows=[str(windows[s]) for s in SPLITS_SCORED],
                ),
                output=outs,
                log=[str(work / "logs" / f"{rep.replace('/', '_')}.log")],
                rule="events",
                threads=1,
            )
            run_script("events.py", sm)
    order = sorted(range(len(keys)), key=lambda i: SPLITS_SCORED.index(keys[i][0]))
    return {"work": work, "keys": [keys[i] for i in order], "files": [files[i] for i in order]}


def test_event_tables_hold_each_window_and_event(made: dict[str, Any]) -> None:
    table = pd.read_parquet(made["files"][-1])
    assert set(table["event"]) == {
        "hypotension",
        "sustained_hypotension",
        "tachycardia",
        "severe_tachycardia",
        "bradycardia",
    }
    assert table["truth"].any() and (~table["truth"]).any()
    assert table["ongoing"].any() and (~table["ongoing"]).any()
    assert table["probability"].between(0, 1).all()
    # detected new-onset positives have a lead time, everything else none
    detected = table["truth"] & (table["probability"] >= 0.5) & ~table["ongoing"]
    assert table.loc[detected, "lead_minutes"].notna().all()
    assert table.loc[~detected, "lead_minutes"].isna().all()
    assert (table["lead_minutes"].dropna() % 15 == 0).all()


def test_sample_paths_are_used_where_the_file_has_rows(made: dict[str, Any]) -> None:
    sources = {
        key: set(pd.read_parquet(path)["source"])
        for key, path in zip(made["keys"], made["files"], strict=True)
    }
    assert sources[("test", "m/lora-r2", 0)] == {"paths"}
    assert sources[("test", "m/lora-r2", 1)] == {"quantiles"}
    assert sources[("test", "persistence/zero_shot", 0)] == {"quantiles"}


def test_event_metrics_rule_writes_every_run_event_group_and_comparison(
    cfg: dict[str, Any], made: dict[str, Any]
) -> None:
    work: Path = made["work"]
    outputs = Namespace(
        events=str(work / "metrics" / "clinical_events.parquet"),
        events_csv=str(work / "metrics" / "clinical_events.csv"),
    )
    sm = SimpleNamespace(
        config=cfg,
        params=SimpleNamespace(settings=job_settings.event_metrics(cfg), event_keys=made["keys"]),
        input=SimpleNamespace(events=made["files"]),
        output=outputs,
        log=[str(work / "logs" / "event_metrics.log")],
        rule="event_metrics",
        threads=1,
    )
    run_script("event_metrics.py", sm)
    table = pd.read_parquet(outputs["events"])
    assert list(table.columns) == list(EVENT_METRIC_COLUMNS)
    assert set(table["run"]) == {"m/zero_shot", "m/lora-r2", "persistence/zero_shot"}
    assert set(table["split"]) == set(SPLITS_SCORED)
    assert set(table["group"]) == {"new_onset", "ongoing"}
    assert set(table["metric"]) == set(METRICS)
    auroc = table[table["metric"] == "auroc"].dropna(subset=["value"])
    assert auroc["value"].between(0, 1).all()
    assert (auroc["ci_low"] <= auroc["value"] + 1e-12).all()
    lora = table[(table["run"] == "m/lora-r2") & (table["metric"] == "brier")]
    assert (lora["zero_shot_run"] == "m/zero_shot").all()
    assert (lora["persistence_run"] == "persistence/zero_shot").all()
    assert lora["zero_shot_difference"].notna().all()
    assert (table.loc[table["run"] == "m/lora-r2", "n_seeds"] == 2).all()
    persistence = table[table["run"] == "persistence/zero_shot"]
    assert (persistence["persistence_run"] == "").all()
    ongoing_lead = table[(table["group"] == "ongoing") & (table["metric"] == "lead_minutes")]
    assert ongoing_lead["value"].isna().all()
    assert pd.read_csv(outputs["events_csv"]).shape == table.shape


def test_report_writes_the_table_and_figure_of_the_validation_best_runs(
    cfg: dict[str, Any], made: dict[str, Any]
) -> None:
    from vitalfm.evaluation.metric_registry import SELECTION_METRIC
    from vitalfm.steps.report import clinical_events

    work: Path = made["work"]
    events = work / "metrics" / "clinical_events.parquet"
    if not events.exists():
        test_event_metrics_rule_writes_every_run_event_group_and_comparison(cfg, made)
    # validation prefers m's zero-shot run over its lora run
    metrics = pd.DataFrame(
        {
            "run": ["m/zero_shot", "m/lora-r2", "persistence/zero_shot"],
            "metric": SELECTION_METRIC.name,
            "scale": "minmax",
            "vital": "all",
            "step": 0,
            "split": "validation",
            "value": [0.01, 0.02, 0.03],
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
    )
    metrics_path = work / "metrics" / "metrics.parquet"
    metrics.to_parquet(metrics_path)
    windows = {
        run: made["files"][made["keys"].index(("test", run, 0))]
        for run in ("m/zero_shot", "m/lora-r2", "persistence/zero_shot")
    }
    clinical_events(
        job_settings.report(cfg), events, metrics_path, windows, work / "tables", work / "figures"
    )
    table = pd.read_csv(work / "tables" / "clinical_events.csv")
    # m's lora run is neither zero-shot nor chosen on validation: not shown
    assert set(table["run"]) == {"m/zero_shot", "persistence/zero_shot"}
    assert table["event"].str.startswith("sustained_hypotension (mbp < 65 for >= 2 steps)").any()
    assert (work / "tables" / "clinical_events.md").read_text().startswith("**Alarms")
    for fmt in ("png", "pdf"):
        assert (work / "figures" / f"clinical_events.{fmt}").stat().st_size > 1000


def test_a_study_without_events_gets_empty_tables_and_a_figure_that_says_so(
    cfg: dict[str, Any], made: dict[str, Any], tmp_path: Path
) -> None:
    from vitalfm.evaluation.metric_registry import SELECTION_METRIC
    from vitalfm.steps import evaluation
    from vitalfm.steps.report import clinical_events

    none = validate_config({**_raw(cfg), "evaluation": {"events": {}, "oracle": False}})
    split, run, seed = made["keys"][-1]
    forecasts = made["work"] / "forecasts" / split / f"{run}/seed-{seed}.parquet"
    out = tmp_path / "events.parquet"
    evaluation.events(
        job_settings.events(none),
        "r",
        forecasts,
        made["work"] / "windows" / f"{split}.npz",
        out,
    )
    assert pd.read_parquet(out).empty
    keys = [(s, r.run_id, k) for s in SPLITS_SCORED for r in study_runs(none) for k in r.seeds]
    outputs = {"events": tmp_path / "m.parquet", "events_csv": tmp_path / "m.csv"}
    evaluation.event_metrics(job_settings.event_metrics(none), keys, [out] * len(keys), outputs)
    assert pd.read_parquet(outputs["events"]).empty
    metrics = pd.DataFrame(
        {"run": ["m/zero_shot"], "metric": SELECTION_METRIC.name, "scale": "minmax"}
        | {"vital": "all", "step": 0, "split": "validation", "value": 0.1}
    )
    metrics.to_parquet(tmp_path / "metrics.parquet")
    clinical_events(
        job_settings.report(none),
        outputs["events"],
        tmp_path / "metrics.parquet",
        {},
        tmp_path,
        tmp_path,
    )
    assert (tmp_path / "clinical_events.png").exists()
    assert "event" in (tmp_path / "clinical_events.csv").read_text()


def _raw(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in ("vitals", "models", "methods", "training")}


def test_a_paths_file_missing_observed_points_is_refused(made: dict[str, Any]) -> None:
    from vitalfm.errors import DataError
    from vitalfm.evaluation.event_windows import window_events
    from vitalfm.evaluation.events import Event

    split = SPLITS_SCORED[-1]
    windows = WindowSet.load(made["work"] / "windows" / f"{split}.npz")
    frame = make_forecasts(windows, seed=1)
    paths = _paths_table(frame, 0)
    event = Event("hypotension", "mbp", 65.0, below=True)
    table = window_events(frame, windows, [event], 0.5, paths)
    assert set(table["source"]) == {"paths"}
    with pytest.raises(DataError, match="lacks paths for observed points of mbp"):
        first = paths.column("vital").to_pylist().index("mbp")
        gap = pa.concat_tables([paths.slice(0, first), paths.slice(first + 1)])
        window_events(frame, windows, [event], 0.5, gap)
