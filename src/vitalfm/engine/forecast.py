"""Batched forecasting over every window of a split, one parquet table per run.

The same function serves zero-shot and adapted models: only the forecaster's module differs.
Each row is one (window, vital, horizon step) with the truth, whether it is scorable
(observed, not filled), the median and the study's quantile levels, all in original units.
A :data:`Predictor` stands in for a forecaster where the forecasts come from elsewhere (the
synthetic study's oracle, :func:`oracle_predictor`).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from vitalfm.data.windows import WindowSet
from vitalfm.engine.training_data import usable_rows
from vitalfm.evaluation.quantiles import FORECAST_LEVELS, quantile_column
from vitalfm.models.base import Forecast, Forecaster, ModelError, TimeAxis

log = logging.getLogger(__name__)


class ForecastError(ModelError):
    """Forecasting cannot go on as configured (e.g. the GPU runs out of memory)."""


DEFAULT_LEVELS = FORECAST_LEVELS


def interpolation_plan(
    native: Sequence[float], levels: Sequence[float]
) -> list[tuple[int, int, float]]:
    """How each wanted level is read off a model's own levels ``native`` (ascending):
    ``(lower, upper, weight)``, the value being ``q[lower] + weight * (q[upper] - q[lower])``;
    ``lower == upper`` for a level the model has, ``lower == -1`` for a level outside the
    model's range (NaN, not extrapolated)."""
    grid = [float(q) for q in native]
    plan = []
    for level in map(float, levels):
        # torch.isclose(grid, level, atol=1e-9) with its default rtol
        exact = [i for i, q in enumerate(grid) if abs(q - level) <= 1e-9 + 1e-5 * abs(level)]
        if exact:
            plan.append((exact[0], exact[0], 0.0))
        elif level < grid[0] or level > grid[-1]:
            plan.append((-1, -1, 0.0))
        else:
            above = bisect.bisect_left(grid, level)
            weight = (level - grid[above - 1]) / (grid[above] - grid[above - 1])
            plan.append((above - 1, above, weight))
    return plan


def to_quantiles(forecast: Forecast, levels: Sequence[float]) -> torch.Tensor:
    """[B, len(levels), H] float32 quantiles (on the CPU for native levels) from samples or
    from the model's own levels.

    Native quantiles are interpolated linearly (in float64) between the model's levels; levels
    outside the model's range are NaN rather than extrapolated (an 0.1-0.9 model has no 95%
    interval); a level the model has is copied as it is (:func:`write_quantiles`).
    """
    if forecast.samples is not None:
        samples = forecast.samples.double()
        wanted = torch.tensor(levels, dtype=torch.float64, device=samples.device)
        return torch.quantile(samples, wanted, dim=1).permute(1, 0, 2).float()
    if forecast.quantiles is None:
        raise ModelError("a forecast has neither samples nor quantiles", "fix the family module")
    batch, _, horizon = forecast.quantiles.shape
    out = np.empty((len(levels), batch, horizon), np.float32)
    write_quantiles(forecast, levels, out)
    return torch.from_numpy(out).permute(1, 0, 2)


def write_quantiles(forecast: Forecast, levels: Sequence[float], out: np.ndarray) -> None:
    """Write :func:`to_quantiles` level-major into ``out`` [len(levels), B, H] (float32)."""
    if forecast.samples is not None:
        out[...] = to_quantiles(forecast, levels).permute(1, 0, 2).cpu().numpy()
        return
    if forecast.quantiles is None:
        raise ModelError("a forecast has neither samples nor quantiles", "fix the family module")
    values = forecast.quantiles.detach().float().cpu().numpy()  # [B, Q, H]
    for j, (lower, upper, weight) in enumerate(
        interpolation_plan(forecast.quantile_levels, levels)
    ):
        if lower < 0:
            out[j] = np.nan
        elif lower == upper:
            out[j] = values[:, lower]
        else:
            low = values[:, lower].astype(np.float64)
            with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in torch
                out[j] = low + weight * (values[:, upper].astype(np.float64) - low)


@dataclass(frozen=True)
class ForecastConfig:
    num_samples: int = 100
    batch_size: int = 256
    quantile_levels: tuple[float, ...] = DEFAULT_LEVELS
    seed: int = 0


def replicate_seed(base: int, seed: int) -> int:
    """The sampling seed of a replicate: (forecast.seed, its training seed) mixed, so that
    replicates draw independent sample paths."""
    return int(np.random.SeedSequence([int(base), int(seed)]).generate_state(1)[0]) % 2**31


#: ``predict(vital, rows, context, time, num_samples, batch_seed) -> Forecast`` for window
#: rows of one vital: what :func:`forecast_windows` calls instead of a forecaster (the oracle).
Predictor = Callable[[str, np.ndarray, torch.Tensor, TimeAxis, int, int], Forecast]


def oracle_predictor(synthetic: Mapping[str, Any], windows: WindowSet) -> Predictor:
    """The synthetic study's reference: samples of each horizon bin from the generator's own
    state at the window's origin (:func:`vitalfm.synthetic.oracle.oracle_samples`);
    ``synthetic`` is the generator's settings (the config's ``synthetic`` section)."""
    from vitalfm.synthetic.oracle import oracle_samples

    stays, origins = windows.window_icustay_ids(), windows.origin_seconds()

    def predict(
        vital: str, rows: np.ndarray, context: torch.Tensor, time: Any, samples: int, seed: int
    ) -> Forecast:
        drawn = oracle_samples(
            synthetic,
            stays[rows],
            origins[rows],
            vital,
            windows.horizon_steps,
            windows.frequency_minutes,
            samples,
            seed,
        )
        paths = torch.from_numpy(np.ascontiguousarray(drawn, dtype=np.float32))
        return Forecast(median=paths.quantile(0.5, dim=1), samples=paths)

    return predict


#: A deterministic forecaster (:attr:`Forecaster.deterministic`) is called with the series of
#: several of the study's batches at once: calls of equal size holding at most this many context
#: values (or one batch, if that is larger). For the study's contexts (24 steps) that is up to
#: 1,365 series a call instead of 128. Measured (bench/chronos_forecast.py,
#: bench/moirai_forecast.py): each call of a small model costs several ms of Python in the
#: libraries, and a model of the released small size slows down again beyond ~800 series a call
#: (its activations outgrow the CPU caches). The call's input stays tiny next to one batch of
#: long contexts, so forecast.batch_size still bounds the memory.
DETERMINISTIC_CALL_VALUES = 2**15


@dataclass(frozen=True)
class _Call:
    """One predict call: series ``start:stop`` in the engine's order (vital by vital), the
    vital of its first series, and its sampling seed (None: a deterministic call, unseeded)."""

    vital: str
    start: int
    stop: int
    seed: int | None


def _calls(
    counts: Sequence[tuple[str, int]], config: ForecastConfig, deterministic: bool, limit: int
) -> list[_Call]:
    """The predict calls over ``counts`` (series per vital, in order): one per batch of
    ``config.batch_size`` series of a vital, batch ``i`` (counted over all vitals) seeded with
    ``config.seed * 1_000_003 + i``; for a deterministic forecaster the same series in as few
    equal calls of at most ``limit`` series as will do, across vitals."""
    batches: list[_Call] = []
    offset = 0
    for vital, count in counts:
        for start in range(0, count, config.batch_size):
            stop = min(start + config.batch_size, count)
            seed = config.seed * 1_000_003 + len(batches)
            batches.append(_Call(vital, offset + start, offset + stop, seed))
        offset += count
    if not deterministic or not batches:
        return batches
    bounds = np.linspace(0, offset, -(-offset // limit) + 1).round().astype(int).tolist()
    firsts = np.cumsum([count for _, count in counts])
    vital_of = [vital for vital, _ in counts]
    return [
        _Call(vital_of[int(np.searchsorted(firsts, start, side="right"))], start, stop, None)
        for start, stop in itertools.pairwise(bounds)
    ]


def forecast_windows(
    forecaster: Forecaster | None,
    windows: WindowSet,
    vitals: Sequence[str],
    config: ForecastConfig,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> tuple[pa.Table, dict[str, float]]:
    """Forecast every scorable window of every vital (see :func:`usable_rows`); returns the
    table and timing facts. ``predictor`` replaces ``forecaster.predict`` (see
    :data:`Predictor`).

    The series are cut into batches of ``config.batch_size`` per vital; batch ``i`` (counted
    over all vitals) samples from ``torch.manual_seed(config.seed * 1_000_003 + i)``. A
    deterministic forecaster (:attr:`Forecaster.deterministic`: no random draws, each row's
    forecast depends on its own context only) is called with several batches' series at once
    (:data:`DETERMINISTIC_CALL_VALUES`): the same rows, the same forecasts (up to the last bit
    in the tests: tests/test_engine.py), in fewer calls.
    """
    if (forecaster is None) == (predictor is None):
        raise ModelError("forecast_windows needs a forecaster or a predictor", "pass one")
    horizon = windows.horizon_steps
    deterministic = predictor is None and forecaster is not None and forecaster.deterministic
    if predictor is None:
        model = forecaster

        def predictor(
            vital: str, rows: np.ndarray, context: torch.Tensor, time: TimeAxis, n: int, seed: int
        ) -> Forecast:
            return model.predict(context, horizon, n, time=time)

    levels = tuple(config.quantile_levels)
    if 0.5 not in levels:
        levels = tuple(sorted({*levels, 0.5}))

    # every series (window, vital) in the engine's order: vital by vital, windows ascending
    rows_of = {vital: usable_rows(windows, vital) for vital in vitals}
    present = [vital for vital in vitals if len(rows_of[vital])]
    rows = np.concatenate([rows_of[v] for v in vitals]) if vitals else np.zeros(0, np.int64)
    contexts = [windows.context(v, rows_of[v]) for v in vitals]
    context_all = np.ascontiguousarray(
        np.concatenate(contexts) if contexts else np.zeros((0, windows.context_steps))
    )
    limit = max(config.batch_size, DETERMINISTIC_CALL_VALUES // max(1, windows.context_steps))
    n_series = len(rows)
    window_start_s, step_s = windows.window_start_seconds()[rows], windows.frequency_minutes * 60
    median = np.empty((n_series, horizon), np.float32)
    # level-major, so that each quantile column is one contiguous block
    quantiles = np.empty((len(levels), n_series, horizon), np.float32)

    started = time.perf_counter()
    bar = tqdm(total=n_series, desc="forecast", disable=not progress, mininterval=15.0)
    counts = [(vital, len(rows_of[vital])) for vital in vitals]
    # a deterministic call may span vitals: its vital and seed go unused (forecaster.predict)
    for call in _calls(counts, config, deterministic, limit):
        first, stop = call.start, call.stop
        if call.seed is not None:  # (a deterministic call draws nothing)
            torch.manual_seed(call.seed)
        context = torch.from_numpy(context_all[first:stop])
        axis = TimeAxis(window_start_s[first:stop], step_s)
        seed = 0 if call.seed is None else call.seed
        forecast = predictor(call.vital, rows[first:stop], context, axis, config.num_samples, seed)
        median[first:stop] = forecast.median.float().cpu().numpy()
        write_quantiles(forecast, levels, quantiles[:, first:stop])
        bar.update(stop - first)
    bar.close()
    elapsed = time.perf_counter() - started

    truth = np.concatenate(
        [windows.horizon(v, rows_of[v]) for v in vitals] or [np.zeros((0, horizon))]
    )
    observed = np.concatenate(
        [windows.horizon_observed_mask(v, rows_of[v]) for v in vitals]
        or [np.zeros((0, horizon), bool)]
    )
    vital_codes = np.repeat(
        np.arange(len(present), dtype=np.int32), [len(rows_of[v]) for v in present]
    )
    arrays = {
        "window_id": pa.array(np.repeat(rows, horizon)),
        "subject_id": pa.array(np.repeat(windows.window_subject_ids()[rows], horizon)),
        "icustay_id": pa.array(np.repeat(windows.window_icustay_ids()[rows], horizon)),
        "vital": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(vital_codes, horizon), pa.int32()), pa.array(present, pa.string())
        ),
        "step": pa.array(np.tile(np.arange(1, horizon + 1, dtype=np.int16), n_series)),
        "y_true": pa.array(
            np.where(observed, truth, np.nan).reshape(-1).astype(np.float32), pa.float32()
        ),
        "observed": pa.array(observed.reshape(-1)),
        "median": pa.array(median.reshape(-1), pa.float32()),
    }
    for j, level in enumerate(levels):
        arrays[quantile_column(level)] = pa.array(quantiles[j].reshape(-1), pa.float32())
    table = pa.table(arrays)
    facts = {
        "series": n_series,
        "rows": table.num_rows,
        "seconds": elapsed,
        "series_per_s": n_series / elapsed if elapsed else float("nan"),
        "quantile_levels": list(levels),
    }
    return table, facts
