"""Clinical events from forecasts: each window's truth, onset and forecast probability.

An event (``evaluation.events`` in the config) is a threshold on one vital, strictly below
(``below``) or strictly above (``above``), held for ``min_steps`` consecutive **observed** grid
steps. Only observed points count: a step without a reading is neither a crossing nor a
non-crossing, and it breaks a run (so MAP < 65 at steps 3 and 5 with step 4 unobserved is not
two consecutive steps).

For every (window, event) of a replicate (:func:`window_events`):

- **truth**: the event occurs among the horizon's observed points (a qualifying run of
  ``min_steps`` steps);
- **onset**: the first step (1..H) of the first qualifying run, 0 when the event does not occur;
- **ongoing**: the window's context (its observed readings, same rule) already shows the event
  somewhere; else the window is **new-onset**. The metrics report the two apart, since
  predicting an event that is already under way is trivial;
- **probability**: the forecast's probability that the event occurs on the *same observed steps*
  as the truth (the forecast is judged where the truth is known, as the error metrics are);
- **forecast onset**: the first step t at which the forecast's P(onset <= t) reaches the alarm
  threshold (``evaluation.event_alarm_probability``); 0 when it never does, which is exactly
  when the probability is below the threshold.

Probability estimators:

- **From sample paths** (where the replicate's paths file has rows): the fraction of paths in
  which the event occurs, each path judged by the truth's rule on the observed steps; P(onset
  <= t) is the fraction of paths whose own onset is at or before t.
- **From quantiles** (quantile families, or no paths file): at each step the predictive CDF is
  the linear interpolation of the stored quantile levels (after sorting the quantile values,
  so a crossing of quantiles cannot give a non-monotone CDF). Beyond the outermost stored levels
  the mass is put **at** the outermost quantile (the lowest level's mass sits at q_lowest, the
  mass above the highest level at q_highest): no tail is invented beyond what the model gave, so
  P(MAP < c) is 0 when c <= q0.025 and at least 0.025 just above it. With the default levels
  this understates a tail probability by at most 0.025 (0.1 for a model with the 0.1-0.9
  levels only). Steps are coupled **comonotonically**: one uniform u drives every step
  (u is the path's quantile level at every step), which is what a set of quantile forecasts
  without a joint distribution implies in the most persistent way (a patient who is low stays
  low). A "below" crossing at step t is then {u < p_t} with p_t = P(Y_t < c), an "above" one
  {u > 1 - p_t}: nested intervals, so P(a run crosses at all its steps) = min over the run of
  p_t, and P(event) = max over qualifying runs of that min (closed form). P(onset <= t) is the
  max over runs starting at or before t. A point forecast (every level equal) gives 0/1.

Lead time (:func:`lead_minutes`) is counted on **detected new-onset positives** only: windows
whose context does not show the event, whose horizon does, and whose probability reaches the
alarm threshold. It is (true onset step - forecast onset step) x grid minutes: positive when
the forecast's alarm step comes before the first observed event step (warned early), zero when
it is on time, negative when late. The alarm itself is available at the forecast origin; the
lead time measures how well the forecast places the event in time.

Pure numpy: :mod:`vitalfm.evaluation.event_windows` applies it to a forecast table, and
:mod:`vitalfm.evaluation.event_metrics` turns the windows into metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The window groups the metrics report apart.
NEW_ONSET = "new_onset"
ONGOING = "ongoing"


@dataclass(frozen=True)
class Event:
    """A threshold on one vital held for ``min_steps`` consecutive observed grid steps."""

    name: str
    vital: str
    threshold: float
    below: bool  # True: value < threshold; False: value > threshold
    min_steps: int = 1

    def describe(self) -> str:
        """``mbp < 65 for >= 2 steps``."""
        sign = "<" if self.below else ">"
        held = f" for >= {self.min_steps} steps" if self.min_steps > 1 else ""
        return f"{self.vital} {sign} {self.threshold:g}{held}"

    def crosses(self, values: np.ndarray) -> np.ndarray:
        """bool, same shape: the values beyond the threshold (NaN is never a crossing)."""
        with np.errstate(invalid="ignore"):
            return values < self.threshold if self.below else values > self.threshold


def parse_events(cfg: Mapping[str, Any]) -> list[Event]:
    """The events of a validated config (``evaluation.events``), in the config's order."""
    out = []
    for name, entry in (cfg["evaluation"].get("events") or {}).items():
        below = entry.get("below")
        out.append(
            Event(
                name=str(name),
                vital=str(entry["vital"]),
                threshold=float(below if below is not None else entry["above"]),
                below=below is not None,
                min_steps=int(entry.get("min_steps", 1)),
            )
        )
    return out


def run_lengths(hit: np.ndarray) -> np.ndarray:
    """int [..., T]: the length of the run of True ending at each step (0 where False)."""
    out = np.zeros(hit.shape, dtype=np.int32)
    running = np.zeros(hit.shape[:-1], dtype=np.int32)
    for t in range(hit.shape[-1]):
        running = np.where(hit[..., t], running + 1, 0)
        out[..., t] = running
    return out


def first_onset(hit: np.ndarray, min_steps: int) -> np.ndarray:
    """int [...]: the 1-based first step of the first run of >= ``min_steps`` True steps
    along the last axis, 0 where there is none."""
    complete = run_lengths(hit) >= min_steps
    any_run = complete.any(axis=-1)
    end = np.argmax(complete, axis=-1)  # 0-based step where the first run completes
    return np.where(any_run, end - min_steps + 2, 0).astype(np.int32)


def observed_truth(
    event: Event, values: np.ndarray, observed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(occurs bool [N], onset int [N]) of ``values`` [N, T] on their ``observed`` steps."""
    onset = first_onset(observed & event.crosses(values), event.min_steps)
    return onset > 0, onset


def _interpolated_level(
    quantiles: np.ndarray, levels: np.ndarray, count: np.ndarray, c: float
) -> np.ndarray:
    """The level at which the quantile function, linear between the stored levels, reaches
    ``c``, where ``count`` of the sorted ``quantiles`` [..., K] lie before ``c``."""
    top = len(levels) - 1
    lo = np.clip(count - 1, 0, top)
    hi = np.clip(count, 0, top)
    q_lo = np.take_along_axis(quantiles, lo[..., None], -1)[..., 0]
    q_hi = np.take_along_axis(quantiles, hi[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(q_hi > q_lo, (c - q_lo) / (q_hi - q_lo), 0.0)
    return levels[lo] + (levels[hi] - levels[lo]) * frac


def _cdf_below(quantiles: np.ndarray, levels: np.ndarray, c: float) -> np.ndarray:
    """P(Y < c) under the interpolated quantile function (mass beyond the outermost levels at
    the outermost quantiles): sup{u : Q(u) < c}. ``quantiles`` [..., K] sorted."""
    k = (quantiles < c).sum(axis=-1)  # levels strictly below c
    inner = _interpolated_level(quantiles, levels, k, c)
    return np.where(k == 0, 0.0, np.where(k == len(levels), 1.0, inner))


def _cdf_above(quantiles: np.ndarray, levels: np.ndarray, c: float) -> np.ndarray:
    """P(Y > c) = 1 - inf{u : Q(u) > c}, same conventions as :func:`_cdf_below`."""
    j = (quantiles <= c).sum(axis=-1)  # levels at or below c
    u = _interpolated_level(quantiles, levels, j, c)
    return np.where(j == len(levels), 0.0, np.where(j == 0, 1.0, 1.0 - u))


def step_probabilities(event: Event, quantiles: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """float [N, T]: each step's crossing probability from ``quantiles`` [N, T, K] at
    ``levels`` [K] (increasing; NaN levels of a model that lacks them must be dropped first)."""
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=-1)
    lv = np.asarray(levels, dtype=np.float64)
    cdf = _cdf_below if event.below else _cdf_above
    return cdf(q, lv, event.threshold)


def run_minimums(p: np.ndarray, observed: np.ndarray, min_steps: int) -> np.ndarray:
    """float [N, T]: at each start step s, the min of ``p`` over steps s..s+m-1 when they are
    all observed (a qualifying run can start there), else 0."""
    n, t = p.shape
    out = np.zeros((n, t))
    for s in range(t - min_steps + 1):
        span = slice(s, s + min_steps)
        ok = observed[:, span].all(axis=1)
        out[:, s] = np.where(ok, p[:, span].min(axis=1), 0.0)
    return out


def quantile_forecast(
    event: Event,
    quantiles: np.ndarray,
    levels: Sequence[float],
    observed: np.ndarray,
    alarm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(probability [N], forecast onset [N]) from quantiles [N, T, K], comonotone across steps
    (see the module docstring)."""
    p = np.where(observed, step_probabilities(event, quantiles, levels), 0.0)
    starts = run_minimums(p, observed, event.min_steps)  # P(onset == s or earlier run) parts
    cumulative = np.maximum.accumulate(starts, axis=1)  # P(onset <= s)
    return cumulative[:, -1], _alarm_step(cumulative, alarm)


def path_forecast(
    event: Event, samples: np.ndarray, observed: np.ndarray, alarm: float
) -> tuple[np.ndarray, np.ndarray]:
    """(probability [N], forecast onset [N]) from sample paths [N, T, S]: the fraction of
    paths with the event on the observed steps, and the first step where the fraction of paths
    with onset at or before it reaches ``alarm``."""
    hit = np.moveaxis(event.crosses(samples), -1, 1) & observed[:, None, :]  # [N, S, T]
    onsets = first_onset(hit, event.min_steps)  # [N, S]
    t = observed.shape[1]
    steps = np.arange(1, t + 1)
    cumulative = ((onsets[:, :, None] > 0) & (onsets[:, :, None] <= steps)).mean(axis=1)
    return cumulative[:, -1], _alarm_step(cumulative, alarm)


def _alarm_step(cumulative: np.ndarray, alarm: float) -> np.ndarray:
    """int [N]: first 1-based step where ``cumulative`` [N, T] reaches ``alarm``, else 0."""
    reached = cumulative >= alarm - 1e-12
    return np.where(reached.any(axis=1), np.argmax(reached, axis=1) + 1, 0).astype(np.int32)


def lead_minutes(
    onset: np.ndarray, forecast_onset: np.ndarray, frequency_minutes: int
) -> np.ndarray:
    """float [N]: (true onset - forecast onset) x grid minutes where both exist, else NaN
    (positive: the forecast's alarm step precedes the first observed event step)."""
    both = (onset > 0) & (forecast_onset > 0)
    return np.where(both, (onset - forecast_onset) * float(frequency_minutes), np.nan)
