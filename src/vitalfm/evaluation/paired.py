"""Paired comparisons of runs: differences against a reference, and the oracle gap closed.

Every run of a split shares the same resampled patients, and every run with the study's full
seed list the same resampled seeds (:mod:`vitalfm.evaluation.summary`), so a paired difference
(run minus reference, both resampled together) pairs patients and seeds. References: each
model's zero-shot run, and the best baseline, **chosen on validation** (the registry's selection
metric on the min-max scale) and then compared on both splits. With an oracle (synthetic data)
and a persistence run, each run also gets the share of the persistence-to-oracle gap it closes,
(persistence - run) / (persistence - oracle), of every error metric, with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.evaluation.bootstrap import percentile_interval
from vitalfm.evaluation.metric_registry import METRICS, REGISTRY, SELECTION_METRIC
from vitalfm.evaluation.metrics import is_better, ratio
from vitalfm.evaluation.run_summary import (
    CONFIDENCE,
    SELECTION_SCALE,
    RunSummary,
    is_baseline,
)

PAIRED_COLUMNS = (
    "run",
    "model",
    "setting",
    "split",
    "reference",
    "reference_run",
    "chosen_on",
    "scale",
    "vital",
    "metric",
    "value",
    "reference_value",
    "difference",
    "ci_low",
    "ci_high",
    "fraction_better",
)
GAP_COLUMNS = (
    "run",
    "model",
    "setting",
    "split",
    "persistence_run",
    "oracle_run",
    "scale",
    "vital",
    "metric",
    "value",
    "persistence_value",
    "oracle_value",
    "share_closed",
    "ci_low",
    "ci_high",
)


def paired_rows(
    run: Any,
    split: str,
    summary: RunSummary,
    reference: str,
    ref_run: Any,
    ref: RunSummary,
    chosen_on: str,
) -> pd.DataFrame:
    """Whole-horizon differences run minus reference, on the same resampled patients (and
    seeds, where both have them)."""
    common = [key for key in summary.whole if key in ref.whole]
    mine_idx, whole_mine = summary.columns(common)
    ref_idx, whole_ref = ref.columns(common)
    parts = []
    for metric in METRICS:
        mine = summary.resamples[metric][:, mine_idx]
        theirs = ref.resamples[metric][:, ref_idx]
        low, high = percentile_interval(mine - theirs, CONFIDENCE)
        both = np.isfinite(mine) & np.isfinite(theirs)
        better = (is_better(metric, mine, theirs) & both).sum(axis=0)
        value = summary.values[metric][whole_mine]
        reference_value = ref.values[metric][whole_ref]
        parts.append(
            pd.DataFrame(
                {
                    "scale": [key[0] for key in common],
                    "vital": [key[1] for key in common],
                    "metric": metric,
                    "value": value,
                    "reference_value": reference_value,
                    "difference": value - reference_value,
                    "ci_low": low,
                    "ci_high": high,
                    "fraction_better": ratio(better, both.sum(axis=0)),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).assign(
        run=run.run_id,
        model=run.model,
        setting=run.setting,
        split=split,
        reference=reference,
        reference_run=ref_run.run_id,
        chosen_on=chosen_on,
    )
    return frame[list(PAIRED_COLUMNS)]


def gap_rows(
    run: Any,
    split: str,
    summary: RunSummary,
    persistence: Any,
    pers: RunSummary,
    oracle: Any,
    orac: RunSummary,
) -> pd.DataFrame:
    """The share of the persistence-to-oracle gap a run closes, per error metric."""
    common = [k for k in summary.whole if k in pers.whole and k in orac.whole]
    trio = [(part, *part.columns(common)) for part in (summary, pers, orac)]
    parts = []
    for metric in (m.name for m in REGISTRY.error_metrics()):
        mine, base, best = (part.resamples[metric][:, columns] for part, columns, _ in trio)
        value, base_value, best_value = (part.values[metric][cells] for part, _, cells in trio)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (base_value - value) / (base_value - best_value)
            boot = (base - mine) / (base - best)
        boot = np.where(np.isfinite(boot), boot, np.nan)
        low, high = percentile_interval(boot, CONFIDENCE)
        parts.append(
            pd.DataFrame(
                {
                    "scale": [k[0] for k in common],
                    "vital": [k[1] for k in common],
                    "metric": metric,
                    "value": value,
                    "persistence_value": base_value,
                    "oracle_value": best_value,
                    "share_closed": share,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).assign(
        run=run.run_id,
        model=run.model,
        setting=run.setting,
        split=split,
        persistence_run=persistence.run_id,
        oracle_run=oracle.run_id,
    )
    return frame[list(GAP_COLUMNS)]


def best_baseline(runs: Sequence[Any], summaries: Mapping[str, RunSummary]) -> Any | None:
    """The baseline run with the lowest selection metric (min-max MAE; vital all, whole
    horizon) in ``summaries`` (the selection split's)."""
    best, best_value = None, np.inf
    metric, scale = SELECTION_METRIC.name, SELECTION_SCALE
    for run in runs:
        if not is_baseline(run):
            continue
        summary = summaries[run.run_id]
        if (scale, "all") not in summary.whole:
            continue
        _, cells = summary.columns([(scale, "all")])
        value = summary.values[metric][cells[0]]
        if np.isfinite(value) and value < best_value:
            best, best_value = run, value
    return best
