"""Training data for the engine: batches that are a pure function of (seed, step).

(Named apart from the :mod:`vitalfm.data` package, which builds the study's windows; this
module turns windows or a pretraining corpus into training batches.)

Drawing batch ``step`` from ``np.random.default_rng([seed, step])`` instead of iterating an
epoch-based loader means a job resumed at step ``k`` sees exactly the batches an
uninterrupted job would have seen, with no sampler state to checkpoint.

Window data given the study's min-max ranges also hand the Trainer a fixed subset of
validation series to forecast (:meth:`WindowTrainingData.validation_forecast_set`), so that
early stopping and the best checkpoint follow the study's forecast metric rather than the
family's training objective.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from vitalfm.config import check_minmax_ranges
from vitalfm.data.windows import WindowSet
from vitalfm.errors import DataError
from vitalfm.models.base import SeriesBatch, TimeAxis


class TrainingData(Protocol):
    context_steps: int
    horizon_steps: int

    def train_batch(self, step: int, batch_size: int) -> SeriesBatch: ...

    def validation_batches(self, batch_size: int) -> Iterator[SeriesBatch]: ...

    def validation_forecast_set(self, max_series: int) -> ValidationForecastSet | None:
        """Validation series to forecast for model selection; None: select on the loss."""
        ...

    def describe(self) -> dict[str, Any]: ...


def usable_rows(windows: WindowSet, vital: str) -> np.ndarray:
    """Windows of ``vital`` with an observed horizon and at least one context value.

    A window whose context holds no value of the vital (a gap longer than the context) gives
    a model nothing to condition on; training on it teaches nothing and scoring it measures
    nothing, so neither training nor forecasting uses it.
    """
    rows = windows.windows_for(vital)
    has_context = np.isfinite(windows.context(vital, rows)).any(axis=1)
    return rows[has_context]


@dataclass
class SeriesPairs:
    """Univariate examples gathered from a window set: one row per (window, vital)."""

    context: np.ndarray  # float32 [P, C], NaN where missing
    target: np.ndarray  # float32 [P, H], NaN where not observed (filled or missing)
    window_ids: np.ndarray  # int64 [P]
    vitals: np.ndarray  # object [P]
    start_s: np.ndarray  # int64 [P], epoch seconds of the first context point
    step_s: int

    @classmethod
    def from_windows(cls, windows: WindowSet, vitals: Sequence[str]) -> SeriesPairs:
        contexts, targets, ids, names = [], [], [], []
        window_start_s = windows.window_start_seconds()
        for vital in vitals:
            rows = usable_rows(windows, vital)
            target = windows.horizon(vital, rows).astype(np.float32, copy=True)
            target[~windows.horizon_observed_mask(vital, rows)] = np.nan
            contexts.append(windows.context(vital, rows).astype(np.float32, copy=False))
            targets.append(target)
            ids.append(rows)
            names.append(np.full(len(rows), vital, dtype=object))
        window_ids = np.concatenate(ids)
        return cls(
            np.concatenate(contexts),
            np.concatenate(targets),
            window_ids,
            np.concatenate(names),
            window_start_s[window_ids],
            windows.frequency_minutes * 60,
        )

    def __len__(self) -> int:
        return int(self.context.shape[0])

    def subset(self, rows: np.ndarray | slice) -> SeriesPairs:
        return SeriesPairs(
            self.context[rows],
            self.target[rows],
            self.window_ids[rows],
            self.vitals[rows],
            self.start_s[rows],
            self.step_s,
        )

    def batch(self, rows: np.ndarray | slice) -> SeriesBatch:
        return SeriesBatch(
            torch.from_numpy(self.context[rows]),
            torch.from_numpy(self.target[rows]),
            TimeAxis(self.start_s[rows], self.step_s),
        )


@dataclass
class ValidationForecastSet:
    """Validation series the Trainer forecasts at every evaluation, with each series' min-max
    range (``low``, ``high`` [N]: the range of its vital, as the study scores it)."""

    pairs: SeriesPairs
    low: np.ndarray  # float64 [N]
    high: np.ndarray  # float64 [N]

    def __len__(self) -> int:
        return len(self.pairs)


class WindowTrainingData:
    """Train and validation examples from the study's windows (all configured vitals).

    ``ranges`` ({vital: (low, high)}, the config's ``evaluation.minmax_ranges``) turn on
    model selection on a validation forecast metric (see :meth:`validation_forecast_set`);
    without them the Trainer selects on the validation loss. ``seed`` orders the training
    batches (a replicate's seed); the validation subsets are drawn with ``validation_seed``,
    fixed for the study, so every replicate of every run is chosen on the same series.
    """

    def __init__(
        self,
        train: WindowSet,
        validation: WindowSet,
        vitals: Sequence[str],
        seed: int,
        validation_max_series: int,
        ranges: Mapping[str, Sequence[float]] | None = None,
        validation_seed: int = 0,
    ) -> None:
        self.train = SeriesPairs.from_windows(train, vitals)
        self.validation = SeriesPairs.from_windows(validation, vitals)
        for name, pairs in (("train", self.train), ("validation", self.validation)):
            if len(pairs) == 0:
                raise DataError(
                    f"the {name} split has no window with an observed horizon",
                    "use more patients, shorter windows or a lower windows.min_horizon_observed",
                )
        self.ranges = check_minmax_ranges(ranges, vitals) if ranges is not None else None
        if len(self.validation) > validation_max_series:
            keep = np.random.default_rng([validation_seed, 1]).choice(
                len(self.validation), validation_max_series, replace=False
            )
            keep.sort()
            self.validation = self.validation.subset(keep)
        self.seed = seed
        self.validation_seed = validation_seed
        self.context_steps = train.context_steps
        self.horizon_steps = train.horizon_steps

    def train_batch(self, step: int, batch_size: int) -> SeriesBatch:
        rows = np.random.default_rng([self.seed, 0, step]).integers(0, len(self.train), batch_size)
        return self.train.batch(rows)

    def validation_batches(self, batch_size: int) -> Iterator[SeriesBatch]:
        for start in range(0, len(self.validation), batch_size):
            yield self.validation.batch(slice(start, start + batch_size))

    def validation_forecast_set(self, max_series: int) -> ValidationForecastSet | None:
        """At most ``max_series`` of the validation-loss series (all vitals), drawn once with
        the seed; None without min-max ranges or for 0 series."""
        if self.ranges is None or max_series < 1:
            return None
        pairs = self.validation
        if len(pairs) > max_series:
            keep = np.random.default_rng([self.validation_seed, 4]).choice(
                len(pairs), max_series, replace=False
            )
            pairs = pairs.subset(np.sort(keep))
        low = np.array([self.ranges[v][0] for v in pairs.vitals], dtype=np.float64)
        high = np.array([self.ranges[v][1] for v in pairs.vitals], dtype=np.float64)
        return ValidationForecastSet(pairs, low, high)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "source": "windows",
            "train_series": len(self.train),
            "validation_series": len(self.validation),
            "context_steps": self.context_steps,
            "horizon_steps": self.horizon_steps,
        }
        if self.ranges is not None:
            described["minmax_ranges"] = {v: list(r) for v, r in self.ranges.items()}
        return described


class CorpusTrainingData:
    """Random crops of a synthetic pretraining corpus [N, L].

    Each example is a crop of ``max_context + horizon`` points; a random number of its first
    points is blanked (NaN) so that the model sees contexts from ``min_context`` to
    ``max_context`` long, as left-padded batches in the Chronos pipelines look. The last
    ``validation_fraction`` of the series is held out for validation. The corpus has no
    calendar, so each crop gets a random start time (within a year, on a ``step_s`` grid)
    for the families with calendar features.
    """

    YEAR_S = 365 * 24 * 3600
    EPOCH_2000_S = 946_684_800

    def __init__(
        self,
        corpus: np.ndarray,
        min_context: int,
        max_context: int,
        horizon: int,
        seed: int,
        validation_fraction: float = 0.05,
        step_s: int = 900,
    ) -> None:
        if corpus.shape[1] < max_context + horizon:
            raise DataError(
                f"corpus series have {corpus.shape[1]} points, fewer than context {max_context} "
                f"+ horizon {horizon}",
                "raise pretrain.corpus.length or lower pretrain.max_context_steps",
            )
        n_validation = max(1, int(len(corpus) * validation_fraction))
        self.corpus = corpus[:-n_validation]
        self.held_out = corpus[-n_validation:]
        self.min_context, self.max_context = min_context, max_context
        self.context_steps, self.horizon_steps = max_context, horizon
        self.seed = seed
        self.step_s = step_s
        rng = np.random.default_rng([seed, 2])
        self.validation = self._crops(self.held_out, rng, len(self.held_out))

    def _crops(self, series: np.ndarray, rng: np.random.Generator, n: int) -> SeriesBatch:
        length = self.max_context + self.horizon_steps
        contexts, targets, kept = [], [], 0
        while kept < n:
            rows = rng.integers(0, len(series), n)
            starts = rng.integers(0, series.shape[1] - length + 1, n)
            crops = series[rows[:, None], starts[:, None] + np.arange(length)].astype(np.float32)
            context, target = crops[:, : self.max_context].copy(), crops[:, self.max_context :]
            blank = self.max_context - rng.integers(self.min_context, self.max_context + 1, n)
            context[np.arange(self.max_context) < blank[:, None]] = np.nan
            # Instance-normalising models (Bolt, Chronos-2) divide by the context's spread: a
            # flat synthetic context would blow their loss up by orders of magnitude.
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                spread = np.nanstd(context, axis=1)
                level = np.nanmean(np.abs(context), axis=1)
            usable = np.isfinite(spread) & (spread > 1e-3 * np.maximum(level, 1e-3))
            usable &= np.isfinite(target).any(axis=1)
            contexts.append(context[usable])
            targets.append(target[usable])
            kept += int(usable.sum())
        context = np.concatenate(contexts)[:n]
        target = np.concatenate(targets)[:n]
        start_s = self.EPOCH_2000_S + rng.integers(0, self.YEAR_S // self.step_s, n) * self.step_s
        return SeriesBatch(
            torch.from_numpy(context),
            torch.from_numpy(target.copy()),
            TimeAxis(start_s.astype(np.int64), self.step_s),
        )

    def train_batch(self, step: int, batch_size: int) -> SeriesBatch:
        return self._crops(self.corpus, np.random.default_rng([self.seed, 0, step]), batch_size)

    def validation_batches(self, batch_size: int) -> Iterator[SeriesBatch]:
        for start in range(0, len(self.validation), batch_size):
            yield self.validation[start : start + batch_size]

    def validation_forecast_set(self, max_series: int) -> ValidationForecastSet | None:
        """None: pretraining selects on (and only reports) the validation loss."""
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "source": "synthetic corpus",
            "train_series": len(self.corpus),
            "validation_series": len(self.validation),
            "context_steps": self.max_context,
            "min_context_steps": self.min_context,
            "horizon_steps": self.horizon_steps,
        }
