"""What the figures share: markers, error bars, panel grids, placeholders, reference lines
(oracle, persistence), the per-run table of test and validation errors, and saving as PNG and
PDF with fixed metadata (a rerun on the same numbers gives the same files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from vitalfm.evaluation.metric_registry import MAE, SELECTION_METRIC
from vitalfm.evaluation.run_summary import SELECTION_SCALE, SELECTION_SPLIT
from vitalfm.io import atomic_path
from vitalfm.methods import method_kinds
from vitalfm.models.registry import naive_reference_family
from vitalfm.reporting import FIGURE_FORMATS
from vitalfm.reporting.lookups import overall

#: The error every figure plots: test MAE on the min-max scale, all vitals pooled.
ERROR_LABEL = f"{MAE.label} (min-max scale, all vitals)"


def kind_marker(kind: str) -> str:
    """The matplotlib marker a method kind declares (``o`` for a kind no longer registered)."""
    kinds = method_kinds()
    return kinds[kind].marker if kind in kinds else "o"


def family_colors(families: Sequence[str]) -> dict[str, Any]:
    """One colour per name: tab10, or tab20 for more than ten names (so none repeats)."""
    names = list(dict.fromkeys(families))
    cmap, size = (plt.get_cmap("tab10"), 10) if len(names) <= 10 else (plt.get_cmap("tab20"), 20)
    return {name: cmap(i % size) for i, name in enumerate(names)}


def yerr(frame: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars from the intervals (0 where an interval is missing)."""
    low = (frame["value"] - frame["ci_low"]).clip(lower=0).fillna(0)
    high = (frame["ci_high"] - frame["value"]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def panel_grid(n: int, width: float = 4.2, height: float = 3.2, max_cols: int = 3) -> tuple:
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def placeholder(message: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def save_figure(fig: plt.Figure, name: str, out_dir: Path) -> dict[str, Path]:
    """PNG and PDF, each written atomically."""
    paths = {}
    for fmt in FIGURE_FORMATS:
        target = out_dir / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            # Fixed metadata so a rerun on the same numbers gives the same PDF.
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta)
        paths[fmt] = target
    plt.close(fig)
    return paths


def with_overall(info: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The run table with each run's test MAE (value, ci_low, ci_high) and its validation MAE
    (``chosen_by``: the selection metric, what every "best" is picked on)."""
    mae = overall(metrics, MAE.name)[["value", "ci_low", "ci_high"]]
    selection = overall(
        metrics, SELECTION_METRIC.name, scale=SELECTION_SCALE, split=SELECTION_SPLIT
    )
    validation = selection["value"].rename("chosen_by")
    return info.join(mae, on="run").join(validation, on="run")


def best_of(frame: pd.DataFrame) -> pd.Series | None:
    """The row of ``frame`` with the lowest validation MAE (None if none has one)."""
    finite = frame[np.isfinite(frame["chosen_by"])]
    return finite.loc[finite["chosen_by"].idxmin()] if len(finite) else None


def references(data: pd.DataFrame) -> list[tuple[str, float, dict[str, Any]]]:
    """(label, test MAE, line style) of the oracle and persistence, where the study has them."""
    lines = []
    for _, run in data.iterrows():
        if run.get("oracle") and np.isfinite(run["value"]):
            lines.append(("oracle (bound)", run["value"], {"color": "black", "ls": ":"}))
        elif run["family"] == naive_reference_family() and np.isfinite(run["value"]):
            lines.append(("persistence", run["value"], {"color": "0.45", "ls": "-."}))
    return lines


def draw_references(ax: Any, data: pd.DataFrame) -> None:
    for label, value, style in references(data):
        ax.axhline(value, lw=1, alpha=0.9, label=label, **style)


def models_only(data: pd.DataFrame) -> pd.DataFrame:
    """The runs that are models (the oracle is a reference line, not a point)."""
    return data[~data["oracle"]] if "oracle" in data else data
