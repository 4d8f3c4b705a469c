"""What the tables and figures read from the metrics rule's tables, and in which order.

One metric per run (:func:`overall`), a paired difference (:func:`paired_for`), the share of the
persistence-to-oracle gap (:func:`gap_for`), what validation chose (every "best" is chosen on
the registry's selection metric on validation, then reported on test), and the order models,
vitals and metrics are listed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.evaluation.metric_registry import MAE, REGISTRY, SELECTION_METRIC, Metric
from vitalfm.evaluation.run_summary import REPORT_SPLIT, SELECTION_SCALE, SELECTION_SPLIT
from vitalfm.methods import ranked_kinds, zero_shot_kind
from vitalfm.reporting.inputs import ResultsLayout, run_table
from vitalfm.study import Run

#: Method kinds with a rank (swept in the rank-sweep table and figure).
RANKED_KINDS = ranked_kinds()
#: The method kind (and paired-difference reference) every adapted run is compared with.
ZERO_SHOT = zero_shot_kind()


def overall(
    metrics: pd.DataFrame,
    metric: str,
    scale: str = "minmax",
    vital: str = "all",
    step: int = 0,
    split: str = REPORT_SPLIT,
) -> pd.DataFrame:
    """One metric per run on one split (value, ci_low, ci_high, counts), indexed by run."""
    sel = metrics[
        (metrics["metric"] == metric)
        & (metrics["scale"] == scale)
        & (metrics["vital"] == vital)
        & (metrics["step"] == step)
        & (metrics["split"] == split)
    ]
    return sel.drop_duplicates("run").set_index("run")


def paired_for(
    paired: pd.DataFrame,
    reference: str,
    metric: str,
    scale: str = "minmax",
    vital: str = "all",
    split: str = REPORT_SPLIT,
) -> pd.DataFrame:
    """Paired differences against one reference ("zero_shot" or "best_baseline"), by run."""
    sel = paired[
        (paired["reference"] == reference)
        & (paired["metric"] == metric)
        & (paired["scale"] == scale)
        & (paired["vital"] == vital)
        & (paired["split"] == split)
    ]
    return sel.drop_duplicates("run").set_index("run")


def gap_for(gap: pd.DataFrame, metric: str = MAE.name, scale: str = "minmax") -> pd.DataFrame:
    """The share of the persistence-to-oracle gap each run closes on test, by run."""
    if gap.empty:
        return gap
    sel = gap[
        (gap["metric"] == metric)
        & (gap["scale"] == scale)
        & (gap["vital"] == "all")
        & (gap["split"] == REPORT_SPLIT)
    ]
    return sel.drop_duplicates("run").set_index("run")


def chosen_on_validation(metrics: pd.DataFrame, runs: Sequence[str]) -> str | None:
    """Of ``runs``, the one with the lowest validation min-max MAE (the selection metric, mean
    over seeds)."""
    validation = _selection_values(metrics)
    values = [value_of(validation, r) for r in runs]
    if not np.isfinite(values).any():
        return None
    return list(runs)[int(np.nanargmin(values))]


def validation_best_mask(
    metrics: pd.DataFrame, runs: Sequence[str], vital: str = "all"
) -> np.ndarray:
    """Which of ``runs`` is best on validation MAE (a lone run is not "best" of anything)."""
    validation = _selection_values(metrics, vital)
    return best_mask([value_of(validation, r) for r in runs], SELECTION_METRIC)


def _selection_values(metrics: pd.DataFrame, vital: str = "all") -> pd.DataFrame:
    """The selection metric on validation, by run."""
    name, scale = SELECTION_METRIC.name, SELECTION_SCALE
    return overall(metrics, name, scale=scale, vital=vital, split=SELECTION_SPLIT)


def value_of(frame: pd.DataFrame, run: str, column: str = "value") -> float:
    """A run's number in a lookup (NaN when the run is not there)."""
    return float(frame.loc[run, column]) if run in frame.index else math.nan


def best_mask(values: Sequence[float], metric: Metric) -> np.ndarray:
    """Which entries are best (ties all marked): lowest error, or coverage nearest nominal."""
    array = metric.badness(np.asarray(values, dtype=float))
    finite = np.isfinite(array)
    if finite.sum() < 2:  # a lone setting is not "best" of anything
        return np.zeros(len(array), dtype=bool)
    return finite & (array == np.nanmin(array))


def best_baseline_run(paired: pd.DataFrame) -> str | None:
    """The baseline the metrics rule paired against, if the study has one."""
    refs = paired.loc[paired["reference"] == "best_baseline", "reference_run"].dropna().unique()
    return str(refs[0]) if len(refs) else None


def reported_metrics(metrics: pd.DataFrame) -> list[Metric]:
    """The registered metrics the metrics table holds: the selection metric first, then the
    registry's order (the main comparison's columns)."""
    present = set(metrics["metric"].unique())
    ordered = [SELECTION_METRIC, *(m for m in REGISTRY if m is not SELECTION_METRIC)]
    return [m for m in ordered if m.name in present]


def vitals_in(metrics: pd.DataFrame, cfg: Mapping[str, Any]) -> list[str]:
    """The vitals of the metrics table: "all" first, then the config's order."""
    from vitalfm.data.vitals import vital_names_from_config

    present = set(metrics["vital"].unique())
    ordered = [v for v in vital_names_from_config(cfg["vitals"]) if v in present]
    extra = sorted(present - set(ordered) - {"all"})
    return (["all"] if "all" in present else []) + ordered + extra


def model_order(info: pd.DataFrame) -> list[str]:
    """Foundation models in config order, then the baselines, then the oracle."""
    columns = ["order", "baseline", "oracle"] if "oracle" in info else ["order", "baseline"]
    firsts = info.groupby("model", sort=False)[columns].first()
    keys = ["oracle", "baseline", "order"] if "oracle" in firsts else ["baseline", "order"]
    return list(firsts.sort_values(keys, kind="stable").index)


def models_in_order(info: pd.DataFrame, oracle: bool = True) -> list[str]:
    """:func:`model_order`, without the oracle unless ``oracle``."""
    order = model_order(info)
    if oracle or "oracle" not in info:
        return order
    oracles = set(info.loc[info["oracle"], "model"])
    return [m for m in order if m not in oracles]


def oracle_runs(info: pd.DataFrame) -> list[str]:
    return list(info.loc[info["oracle"], "run"]) if "oracle" in info else []


def run_info(runs: Sequence[Run], layout: ResultsLayout, metrics: pd.DataFrame) -> pd.DataFrame:
    """:func:`run_table`, with a run counted as a baseline when its config or the metrics
    say so."""
    info = run_table(runs, layout)
    flagged = metrics.groupby("run")["baseline"].any()
    info["baseline"] = info["baseline"] | info["run"].map(flagged).eq(True)
    return info
