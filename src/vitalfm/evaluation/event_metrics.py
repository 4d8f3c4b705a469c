"""Rule ``event_metrics``: every run's alarm metrics per event, new-onset and ongoing windows
apart, with patient (and seed) bootstrap intervals and paired differences.

Per run, split, event and window group (:data:`GROUPS`):

- ``auroc``: the probability that a window with the event scores above one without (ties
  count one half, the Mann-Whitney rule);
- ``auprc``: average precision as scikit-learn's ``average_precision_score`` computes it
  (sum over distinct scores, highest first, of recall gained times precision), with
  ``prevalence`` (its value for a random score) beside it;
- ``brier``: mean squared difference of probability and truth;
- ``sensitivity`` and ``false_alarm_rate``: the share of windows with (without) the event whose
  probability reaches the alarm threshold;
- ``lead_minutes``: mean lead time of detected new-onset positives
  (:mod:`vitalfm.evaluation.events`; NaN for ongoing windows).

Intervals resample patients with the same draw counts as the metrics rule (the split's patients
sorted, :func:`~vitalfm.evaluation.bootstrap.patient_weights` with the same seed), each window
weighted by its patient's count; a multi-seed run also resamples its seeds
(:func:`~vitalfm.evaluation.bootstrap.seed_weights`) and averages the seeds' metrics with those
counts, like :mod:`vitalfm.evaluation.run_summary`. The paired differences against the model's
zero-shot run and against persistence use the same resamples, so they pair patients and seeds.
Weighted AUROC and AUPRC are vectorised over resamples: scores are sorted once and tied scores
grouped, then each resample's per-group positive and negative weights give both areas by
cumulative sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitalfm.evaluation.bootstrap import patient_weights, percentile_interval, seed_weights
from vitalfm.evaluation.events import NEW_ONSET, ONGOING
from vitalfm.evaluation.run_summary import CONFIDENCE, RUN_COLUMNS, run_facts

GROUPS = (NEW_ONSET, ONGOING)
METRICS = (
    "auroc",
    "auprc",
    "prevalence",
    "brier",
    "sensitivity",
    "false_alarm_rate",
    "lead_minutes",
)
#: References of the paired differences: column prefix -> what it is.
REFERENCES = ("zero_shot", "persistence")
EVENT_METRIC_COLUMNS = (
    *RUN_COLUMNS,
    "split",
    "event",
    "vital",
    "group",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    *(f"{ref}_{part}" for ref in REFERENCES for part in ("run", "difference", "ci_low", "ci_high")),
    "n_seeds",
    "n_patients",
    "n_windows",
    "n_positive",
)
#: Resampled weights held at once ([chunk, windows] floats).
CHUNK_VALUES = 4_000_000


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order sorting ``scores`` descending, start index of each run of equal scores)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def weighted_auc_ap(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC [B], average precision [B]) of ``scores`` for labels ``y`` under each row of
    ``weights`` [B, N] (sample weights); NaN where a resample has no positive (AUROC: or no
    negative) weight."""
    weights = np.atleast_2d(weights)
    b = weights.shape[0]
    auc, ap = np.full(b, np.nan), np.full(b, np.nan)
    if len(y) == 0:
        return auc, ap
    order, starts = _tie_groups(np.asarray(scores, dtype=np.float64))
    pos = np.asarray(y, bool)[order]
    chunk = max(1, CHUNK_VALUES // max(1, len(y)))
    for first in range(0, b, chunk):
        w = weights[first : first + chunk][:, order]
        tp = np.add.reduceat(np.where(pos, w, 0.0), starts, axis=1)  # [b, G], highest first
        fp = np.add.reduceat(np.where(pos, 0.0, w), starts, axis=1)
        ctp, cfp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
        n_pos, n_neg = ctp[:, -1], cfp[:, -1]
        # positives of a group beat the negatives of every lower group, tie half with their own
        neg_below = n_neg[:, None] - cfp
        pairs = (tp * (neg_below + 0.5 * fp)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc_c = pairs / (n_pos * n_neg)
            precision = np.where(ctp + cfp > 0, ctp / (ctp + cfp), 0.0)
            ap_c = (tp * precision).sum(axis=1) / n_pos
        auc[first : first + chunk] = np.where((n_pos > 0) & (n_neg > 0), auc_c, np.nan)
        ap[first : first + chunk] = np.where(n_pos > 0, ap_c, np.nan)
    return auc, ap


def roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at each distinct score, from (0, 0)."""
    order, starts = _tie_groups(np.asarray(scores, dtype=np.float64))
    pos = np.asarray(y, bool)[order]
    tp = np.cumsum(np.add.reduceat(pos.astype(float), starts))
    fp = np.cumsum(np.add.reduceat((~pos).astype(float), starts))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def group_metrics(frame: pd.DataFrame, weights: np.ndarray, alarm: float) -> dict[str, np.ndarray]:
    """{metric: [B]} of one replicate's windows of one (event, group), each window weighted by
    the row of ``weights`` [B, N] (its patient's draw count; one row of ones: the estimate)."""
    y = frame["truth"].to_numpy(bool)
    p = frame["probability"].to_numpy(np.float64)
    alarmed = p >= alarm
    lead = frame["lead_minutes"].to_numpy(np.float64)
    detected = np.isfinite(lead) & y & alarmed
    auc, ap = weighted_auc_ap(y, p, weights)
    total = weights.sum(axis=1)
    pos = weights @ y.astype(float)
    neg = total - pos
    return {
        "auroc": auc,
        "auprc": ap,
        "prevalence": _ratio(pos, total),
        "brier": _ratio(weights @ (p - y) ** 2, total),
        "sensitivity": _ratio(weights @ (y & alarmed).astype(float), pos),
        "false_alarm_rate": _ratio(weights @ (~y & alarmed).astype(float), neg),
        "lead_minutes": _ratio(weights @ np.where(detected, lead, 0.0), weights @ detected),
    }


def _seed_mean(values: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """[S, B] -> [B]: the mean over seeds weighted by ``draws`` [B, S] (None: one seed)."""
    if draws is None:
        return values[0]
    finite = np.isfinite(values)
    w = draws.T * finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(finite, values, 0.0) * w).sum(axis=0) / w.sum(axis=0)


def group_of(frame: pd.DataFrame, group: str) -> pd.DataFrame:
    return frame[frame["ongoing"]] if group == ONGOING else frame[~frame["ongoing"]]


def run_event_metrics(
    tables: Sequence[pd.DataFrame],
    patients: np.ndarray,
    weights: np.ndarray,
    seed_draws: np.ndarray | None,
    alarm: float,
) -> dict[tuple[str, str], dict[str, Any]]:
    """One run's metrics on one split from its replicates' event tables (one per seed).

    {(event, group): {"value": {metric: float}, "boot": {metric: [B]}, counts...}}; the value
    is the mean over seeds of each seed's metric, the resamples the seed-weighted means.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    keys = dict.fromkeys((e, g) for t in tables for e in t["event"].unique() for g in GROUPS)
    for event, group in keys:
        parts = [group_of(table[table["event"] == event], group) for table in tables]
        if not any(len(part) for part in parts):
            continue  # no window of this group (e.g. no context shows the event): no row
        values, boots, first = [], [], parts[0]
        for part in parts:
            columns = np.searchsorted(patients, part["subject_id"].to_numpy(np.int64))
            point = group_metrics(part, np.ones((1, len(part))), alarm)
            boot = group_metrics(part, weights[:, columns], alarm)
            values.append([point[m][0] for m in METRICS])
            boots.append(np.stack([boot[m] for m in METRICS]))  # [M, B]
        seed_values = np.array(values)  # [S, M]
        finite = np.isfinite(seed_values)
        with np.errstate(invalid="ignore"):
            mean = np.where(
                finite.any(axis=0),
                np.where(finite, seed_values, 0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1),
                np.nan,
            )
        stacked = np.stack(boots)  # [S, M, B]
        boot = {m: _seed_mean(stacked[:, i], seed_draws) for i, m in enumerate(METRICS)}
        out[(event, group)] = {
            "vital": str(next(p for p in parts if len(p))["vital"].iloc[0]),
            "value": dict(zip(METRICS, mean, strict=True)),
            "boot": boot,
            "n_patients": int(first["subject_id"].nunique()),
            "n_windows": len(first),
            "n_positive": int(first["truth"].sum()),
        }
    return out


def event_tables(
    runs: Sequence[Any],
    tables: Mapping[tuple[str, str, int], pd.DataFrame],
    resamples: int,
    seed: int,
    alarm: float,
    splits: Sequence[str],
    persistence_family: str | None,
) -> pd.DataFrame:
    """The ``clinical_events`` metrics table from every replicate's event table
    (``tables[(split, run id, seed)]``), columns :data:`EVENT_METRIC_COLUMNS`."""
    study_seeds = sorted({s for run in runs for s in run.seeds})
    seed_draws = seed_weights(study_seeds, resamples, seed)
    zero_shot = {r.model: r for r in runs if r.is_zero_shot}
    persistence = next((r for r in runs if r.family == persistence_family), None)
    rows = []
    for split in splits:
        per_run = {r.run_id: [tables[(split, r.run_id, s)] for s in r.seeds] for r in runs}
        subjects = [t["subject_id"].to_numpy(np.int64) for ts in per_run.values() for t in ts]
        patients = np.unique(np.concatenate(subjects)) if subjects else np.zeros(0, np.int64)
        weights = patient_weights(len(patients), resamples, seed)
        summaries = {}
        for run in runs:
            draws = seed_draws[:, [study_seeds.index(s) for s in run.seeds]]
            summaries[run.run_id] = run_event_metrics(
                per_run[run.run_id], patients, weights, draws if len(run.seeds) > 1 else None, alarm
            )
        for run in runs:
            refs = {"zero_shot": zero_shot.get(run.model), "persistence": persistence}
            facts = run_facts(run)
            for (event, group), cell in summaries[run.run_id].items():
                for metric in METRICS:
                    boot = cell["boot"][metric]
                    low, high = percentile_interval(boot[:, None], CONFIDENCE)
                    row = {
                        **facts,
                        "split": split,
                        "event": event,
                        "vital": cell["vital"],
                        "group": group,
                        "metric": metric,
                        "value": cell["value"][metric],
                        "ci_low": low[0],
                        "ci_high": high[0],
                        "n_seeds": len(run.seeds),
                        "n_patients": cell["n_patients"],
                        "n_windows": cell["n_windows"],
                        "n_positive": cell["n_positive"],
                    }
                    for name, ref in refs.items():
                        other = None
                        if ref is not None and ref.run_id != run.run_id:
                            other = summaries[ref.run_id].get((event, group))
                        if other is None:
                            row.update(
                                {
                                    f"{name}_run": "",
                                    f"{name}_difference": np.nan,
                                    f"{name}_ci_low": np.nan,
                                    f"{name}_ci_high": np.nan,
                                }
                            )
                            continue
                        diff = boot - other["boot"][metric]
                        d_low, d_high = percentile_interval(diff[:, None], CONFIDENCE)
                        row.update(
                            {
                                f"{name}_run": ref.run_id,
                                f"{name}_difference": cell["value"][metric]
                                - other["value"][metric],
                                f"{name}_ci_low": d_low[0],
                                f"{name}_ci_high": d_high[0],
                            }
                        )
                    rows.append(row)
    if not rows:
        return pd.DataFrame({c: [] for c in EVENT_METRIC_COLUMNS})
    return pd.DataFrame(rows)[list(EVENT_METRIC_COLUMNS)]
