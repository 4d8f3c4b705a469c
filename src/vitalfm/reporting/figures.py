"""Rule ``figures``: every figure of :data:`vitalfm.reporting.FIGURES`, as PNG and PDF.

The figures live in modules of one subject each: :mod:`~.error_figures` (error against rank,
against trainable parameters with the Pareto front, by horizon step), :mod:`~.calibration_figure`
(observed coverage against each quantile level), :mod:`~.forecast_figures`
(example forecasts) and :mod:`~.training_figures` (loss curves); :mod:`~.plotting` holds what
they share. A study without what a figure needs (no rank sweep, no trained run) gets a figure
that says so, so the workflow's outputs do not depend on which families and methods the config
lists.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from vitalfm.errors import DataError
from vitalfm.reporting import FIGURES
from vitalfm.reporting.calibration_figure import calibration_figure
from vitalfm.reporting.error_figures import horizon_figure, pareto_figure, rank_sweep_figure
from vitalfm.reporting.forecast_figures import example_figure
from vitalfm.reporting.inputs import (
    ResultsLayout,
    check_runs_scored,
    load_calibration,
    load_metrics,
)
from vitalfm.reporting.lookups import run_info, vitals_in
from vitalfm.reporting.plotting import save_figure, with_overall
from vitalfm.reporting.training_figures import loss_figure
from vitalfm.study import study_runs

log = logging.getLogger(__name__)


def build_figures(
    cfg: Mapping[str, Any],
    results_dir: str | Path = "results",
    out_dir: str | Path | None = None,
    n_examples: int = 3,
    seed: int = 0,
) -> dict[str, dict[str, Path]]:
    """Write every figure of :data:`vitalfm.reporting.FIGURES`; {name: {format: path}}."""
    layout = ResultsLayout(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else layout.root / "figures"
    runs = study_runs(cfg)
    if not runs:
        raise DataError("the config has no runs", "list models and methods in the config")
    metrics = load_metrics(layout)
    check_runs_scored(runs, metrics, layout)
    data = with_overall(run_info(runs, layout, metrics), metrics)
    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "vitalfm"})
    makers = {
        "rank_sweep": lambda: rank_sweep_figure(data),
        "pareto": lambda: pareto_figure(data),
        "error_by_horizon": lambda: horizon_figure(
            metrics, data, int(cfg["grid"]["frequency_minutes"])
        ),
        "calibration": lambda: calibration_figure(
            load_calibration(layout), metrics, data, vitals_in(metrics, cfg)
        ),
        "example_forecasts": lambda: example_figure(data, layout, n_examples, seed),
        "loss_curves": lambda: loss_figure(data, layout),
    }
    assert list(makers) == list(FIGURES), "FIGURES and build_figures disagree"
    written = {}
    for name, make in makers.items():
        written[name] = save_figure(make(), name, out)
        log.info("figure %s written", name)
    return written
