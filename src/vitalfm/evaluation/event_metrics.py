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

Intervals resample patients as the metrics rule does (the split's patients with a window in any
run's event table, sorted, and :func:`~vitalfm.evaluation.bootstrap.patient_weights` with the
bootstrap's seed: the same draws as the metrics rule's wherever the two see the same patients),
each window weighted by its patient's count; a multi-seed run also resamples its seeds
(:func:`~vitalfm.evaluation.bootstrap.seed_weights`) and averages the seeds' metrics with those
counts, like :mod:`vitalfm.evaluation.run_summary`. The paired differences against the model's
zero-shot run and against persistence use the same resamples, so they pair patients and seeds.
The point estimates of AUROC and AUPRC are exact (scores sorted once, tied scores grouped,
cumulative weighted sums; checked against scikit-learn). Their resamples are vectorised over
patients instead of windows: with the probabilities on a 0.001 grid (:data:`SCORE_RESOLUTION`),
each patient's positive and negative windows are counted per occupied bin, and one matrix
product per class gives every resample's weight per bin, from which both areas follow by
cumulative sums (cost resamples x patients x bins, not resamples x windows: a paper-scale
study has tens of thousands of test windows per event and replicate). Ties within a bin count
one half, so a resample's AUROC moves by at most half the share of positive-negative pairs
closer than 0.001.
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
#: The bootstrap's AUROC and AUPRC rank probabilities on this grid (point estimates do not):
#: 1001 bins at most, so resampling costs resamples x patients x bins whatever the number of
#: windows. Probabilities from <= 1000 sample paths are multiples of 1/S and stay distinct.
SCORE_RESOLUTION = 1e-3


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order sorting ``scores`` descending, start index of each run of equal scores)."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _areas(tp: np.ndarray, fp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC [B], average precision [B]) from the positive and negative weight of each group
    of tied scores, ``tp`` and ``fp`` [B, G] with groups ordered from the highest score."""
    ctp, cfp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    n_pos, n_neg = ctp[:, -1], cfp[:, -1]
    # positives of a group beat the negatives of every lower group, tie half with their own
    neg_below = n_neg[:, None] - cfp
    pairs = (tp * (neg_below + 0.5 * fp)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = pairs / (n_pos * n_neg)
        precision = np.where(ctp + cfp > 0, ctp / np.where(ctp + cfp > 0, ctp + cfp, 1.0), 0.0)
        ap = (tp * precision).sum(axis=1) / n_pos
    return (
        np.where((n_pos > 0) & (n_neg > 0), auc, np.nan),
        np.where(n_pos > 0, ap, np.nan),
    )


def weighted_auc_ap(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC [B], average precision [B]) of ``scores`` for labels ``y`` under each row of
    ``weights`` [B, N] (sample weights), exact; NaN where a resample has no positive (AUROC:
    or no negative) weight. Cost B x N: the point estimates use it, with one row."""
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
        auc[first : first + chunk], ap[first : first + chunk] = _areas(tp, fp)
    return auc, ap


def score_bins(scores: np.ndarray) -> np.ndarray:
    """int [N]: each probability on the :data:`SCORE_RESOLUTION` grid (ties within a bin)."""
    return np.rint(np.clip(scores, 0.0, 1.0) / SCORE_RESOLUTION).astype(np.int64)


def resampled_auc_ap(
    y: np.ndarray, scores: np.ndarray, patient: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC [B], average precision [B]) of every resample, window n weighted by
    ``weights[b, patient[n]]``, with scores on the :data:`SCORE_RESOLUTION` grid.

    Each patient's positives and negatives are counted per occupied score bin ([P, G]); one
    matrix product per class gives every resample's weight per bin, so the cost is
    B x P x G (G <= 1001 bins), not B x N windows."""
    y = np.asarray(y, bool)
    bins = score_bins(np.asarray(scores, dtype=np.float64))
    occupied, group = np.unique(-bins, return_inverse=True)  # highest score first
    n_groups, n_patients = len(occupied), weights.shape[1]
    cell = patient.astype(np.int64) * n_groups + group.reshape(-1)
    size = n_patients * n_groups
    positives = np.bincount(cell[y], minlength=size).reshape(n_patients, n_groups)
    negatives = np.bincount(cell[~y], minlength=size).reshape(n_patients, n_groups)
    # draw counts times window counts are whole numbers far below 2**24: exact in float32,
    # whose products are twice as fast
    w32 = weights.astype(np.float32)
    tp = (w32 @ positives.astype(np.float32)).astype(np.float64)
    fp = (w32 @ negatives.astype(np.float32)).astype(np.float64)
    return _areas(tp, fp)


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


def group_metrics(
    frame: pd.DataFrame,
    patient: np.ndarray,
    weights: np.ndarray,
    alarm: float,
    exact: bool = False,
) -> dict[str, np.ndarray]:
    """{metric: [B]} of one replicate's windows of one (event, group): window n weighted by
    ``weights[b, patient[n]]`` (its patient's draw count in resample b). Every metric but the
    areas is a ratio of per-patient sums; the areas are :func:`resampled_auc_ap`, or
    :func:`weighted_auc_ap` on the unrounded scores when ``exact`` (the point estimates)."""
    y = frame["truth"].to_numpy(bool)
    p = frame["probability"].to_numpy(np.float64)
    alarmed = p >= alarm
    lead = frame["lead_minutes"].to_numpy(np.float64)
    detected = np.isfinite(lead) & y & alarmed
    terms = np.stack(
        [
            np.ones(len(y)),
            y.astype(float),
            (p - y) ** 2,
            (y & alarmed).astype(float),
            (~y & alarmed).astype(float),
            np.where(detected, lead, 0.0),
            detected.astype(float),
        ],
        axis=1,
    )
    per_patient = np.stack(
        [np.bincount(patient, t, minlength=weights.shape[1]) for t in terms.T], axis=1
    )
    total, pos, sq, hits, false, lead_sum, n_detected = (weights @ per_patient).T
    if exact:
        auc, ap = weighted_auc_ap(y, p, weights[:, patient])
    else:
        auc, ap = resampled_auc_ap(y, p, patient, weights)
    return {
        "auroc": auc,
        "auprc": ap,
        "prevalence": _ratio(pos, total),
        "brier": _ratio(sq, total),
        "sensitivity": _ratio(hits, pos),
        "false_alarm_rate": _ratio(false, total - pos),
        "lead_minutes": _ratio(lead_sum, n_detected),
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


#: The metrics that rank or count events, NaN for a cell with fewer than ``min_windows``
#: windows with the event or without it (``evaluation.event_min_windows``).
EVENT_COUNT_METRICS = ("auroc", "auprc", "sensitivity", "lead_minutes")


def run_event_metrics(
    tables: Sequence[pd.DataFrame],
    patients: np.ndarray,
    weights: np.ndarray,
    seed_draws: np.ndarray | None,
    alarm: float,
    min_windows: int = 1,
) -> dict[tuple[str, str], dict[str, Any]]:
    """One run's metrics on one split from its replicates' event tables (one per seed).

    {(event, group): {"value": {metric: float}, "boot": {metric: [B]}, counts...}}; the value
    is the mean over seeds of each seed's metric, the resamples the seed-weighted means.
    :data:`EVENT_COUNT_METRICS` are NaN (value and resamples) where the first replicate has
    fewer than ``min_windows`` windows with the event or without it.
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
            present, local = np.unique(columns, return_inverse=True)
            point = group_metrics(part, local, np.ones((1, len(present))), alarm, exact=True)
            boot = group_metrics(part, local, weights[:, present], alarm)
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
        positives = int(first["truth"].sum())
        if min(positives, len(first) - positives) < min_windows:
            for i, metric in enumerate(METRICS):
                if metric in EVENT_COUNT_METRICS:
                    mean[i] = np.nan
                    boot[metric] = np.full_like(boot[metric], np.nan)
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
    min_windows: int = 1,
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
                per_run[run.run_id],
                patients,
                weights,
                draws if len(run.seeds) > 1 else None,
                alarm,
                min_windows,
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
