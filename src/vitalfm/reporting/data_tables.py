"""The data-stage tables: the cohort's selection steps, the patient-level splits with their
windows and points, and each vital's rows and grid coverage.

Read from the data rules' summaries (``results/<stage>/<stage>_summary.tsv``) and the window
index files; a missing file names the rule that makes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.reporting import TABLES
from vitalfm.reporting.formatting import MISSING, Table, fmt_count, fmt_percent
from vitalfm.reporting.inputs import ResultsLayout, require


def _tsv(layout: ResultsLayout, stage: str) -> pd.DataFrame:
    return pd.read_csv(require(layout.summary(stage), layout.root), sep="\t")


def _window_counts(layout: ResultsLayout, vitals: Sequence[str]) -> pd.DataFrame:
    """Windows and observed horizon points per split, from the window index files."""
    rows = []
    for split in ("train", "validation", "test"):
        index = pd.read_parquet(require(layout.window_index(split), layout.root))
        row: dict[str, Any] = {"split": split, "windows": len(index)}
        for vital in vitals:
            col = f"{vital}_horizon_observed"
            if col in index.columns:
                row[f"{vital}_windows"] = int((index[col] > 0).sum())
                row[f"{vital}_points"] = int(index[col].sum())
        row["points"] = sum(v for k, v in row.items() if k.endswith("_points"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def cohort_tables(layout: ResultsLayout, cfg: Mapping[str, Any]) -> list[Table]:
    from vitalfm.data.vitals import vital_names_from_config

    vitals = vital_names_from_config(cfg["vitals"])
    windows = _window_counts(layout, vitals)
    total_windows, total_points = int(windows["windows"].sum()), int(windows["points"].sum())

    cohort = _tsv(layout, "cohort").rename(
        columns={
            "step": "Step",
            "description": "Criterion",
            "subjects": "Patients",
            "admissions": "Admissions",
            "icustays": "ICU stays",
        }
    )
    cohort_table = Table(
        "cohort",
        TABLES["cohort"],
        cohort.map(lambda v: fmt_count(v) if isinstance(v, (int, np.integer)) else str(v)),
        [
            "Patients, admissions and ICU stays left after each inclusion step, in order.",
            f"The cohort's stays give {total_windows:,d} forecasting windows with "
            f"{total_points:,d} observed horizon points over all vitals and splits (see the "
            "splits table).",
        ],
    )

    splits = _tsv(layout, "splits").set_index("split")
    rows = []
    for split, row in splits.iterrows():
        counted = windows.loc[split] if split in windows.index else None
        rows.append(
            {
                "Split": split,
                "Patients": fmt_count(row["n_subjects"]),
                "ICU stays": fmt_count(row["n_icustays"]),
                "Share of patients": fmt_percent(100 * row["fraction_subjects"]),
                "Windows": fmt_count(counted["windows"]) if counted is not None else MISSING,
                "Observed horizon points": fmt_count(counted["points"])
                if counted is not None
                else MISSING,
            }
        )
    w = cfg["windows"]
    splits_table = Table(
        "splits",
        TABLES["splits"],
        pd.DataFrame(rows),
        [
            "Patients are split, so no patient appears in two sets.",
            f"Windows: {w['context_hours']} h context -> {w['horizon_hours']} h horizon every "
            f"{w['stride_hours']} h on a {cfg['grid']['frequency_minutes']}-minute grid; "
            "observed horizon points summed over vitals (filled points are not counted).",
        ],
    )

    vit = _tsv(layout, "vitals").set_index("vital")
    grid = _tsv(layout, "grid").set_index("vital")
    rows = []
    for vital in [v for v in vitals if v in grid.index]:
        g = grid.loc[vital]
        v = vit.loc[vital] if vital in vit.index else None
        test = windows.loc["test"] if "test" in windows.index else None
        rows.append(
            {
                "Vital": vital,
                "Rows kept": fmt_count(v["rows_kept"]) if v is not None else MISSING,
                "Stays with data": fmt_count(v["stays_with_data"]) if v is not None else MISSING,
                "Grid bins": fmt_count(g["bins_total"]),
                "Observed": fmt_count(g["bins_observed"]),
                "Missing": fmt_count(g["bins_missing"]),
                "% observed": fmt_percent(100 * g["bins_observed"] / g["bins_total"])
                if g["bins_total"]
                else MISSING,
                "Test windows": fmt_count(test.get(f"{vital}_windows", math.nan))
                if test is not None
                else MISSING,
                "Test points": fmt_count(test.get(f"{vital}_points", math.nan))
                if test is not None
                else MISSING,
            }
        )
    vitals_table = Table(
        "vitals_grid",
        TABLES["vitals_grid"],
        pd.DataFrame(rows),
        [
            "Rows kept: chartevents rows after the error flag, NULL and plausibility filters.",
            "Grid bins: observed (holding the mean of their readings) or empty; nothing is filled "
            "on the grid (what models see of a context's gaps: windows.fill, causal per window).",
            "Test windows / points: test windows with an observed horizon for the vital, and "
            "their observed horizon points (what the metrics score).",
        ],
    )
    return [cohort_table, splits_table, vitals_table]
