"""Batched forecasting over every window of a split, one parquet table per run.

The same function serves zero-shot and adapted models: only the forecaster's module differs.
Each row is one (window, vital, horizon step) with the truth, whether it is scorable
(observed, not filled), the median and the study's quantile levels, all in original units.
A :data:`Predictor` stands in for a forecaster where the forecasts come from elsewhere (the
synthetic study's oracle, :func:`oracle_predictor`).
"""

from __future__ import annotations

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


def to_quantiles(forecast: Forecast, levels: Sequence[float]) -> torch.Tensor:
    """[B, len(levels), H] quantiles from samples or from the model's own quantile levels.

    Native quantiles are interpolated linearly between the model's levels; levels outside the
    model's range are NaN rather than extrapolated (an 0.1-0.9 model has no 95% interval).
    """
    wanted = torch.tensor(levels, dtype=torch.float64)
    if forecast.samples is not None:
        samples = forecast.samples.double()
        return torch.quantile(samples, wanted, dim=1).permute(1, 0, 2).float()
    if forecast.quantiles is None:
        raise ModelError("a forecast has neither samples nor quantiles", "fix the family module")
    native = torch.tensor(forecast.quantile_levels, dtype=torch.float64)
    values = forecast.quantiles.double()  # [B, Q, H]
    out = torch.full(
        (values.shape[0], len(levels), values.shape[2]), float("nan"), dtype=torch.float64
    )
    for j, level in enumerate(wanted.tolist()):
        exact = torch.isclose(native, torch.tensor(level, dtype=torch.float64), atol=1e-9)
        if exact.any():
            out[:, j] = values[:, int(exact.nonzero()[0])]
            continue
        if level < native[0] or level > native[-1]:
            continue
        upper = int(torch.searchsorted(native, torch.tensor(level, dtype=torch.float64)))
        lower = upper - 1
        weight = (level - native[lower]) / (native[upper] - native[lower])
        out[:, j] = values[:, lower] + weight * (values[:, upper] - values[:, lower])
    return out.float()


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
    :data:`Predictor`)."""
    if (forecaster is None) == (predictor is None):
        raise ModelError("forecast_windows needs a forecaster or a predictor", "pass one")
    horizon = windows.horizon_steps
    if predictor is None:
        model = forecaster

        def predictor(
            vital: str, rows: np.ndarray, context: torch.Tensor, time: TimeAxis, n: int, seed: int
        ) -> Forecast:
            return model.predict(context, horizon, n, time=time)

    levels = tuple(config.quantile_levels)
    if 0.5 not in levels:
        levels = tuple(sorted({*levels, 0.5}))
    columns: dict[str, list[np.ndarray]] = {
        name: []
        for name in (
            "window_id",
            "subject_id",
            "icustay_id",
            "vital",
            "step",
            "y_true",
            "observed",
            "median",
            *map(quantile_column, levels),
        )
    }
    window_subjects, window_stays = windows.window_subject_ids(), windows.window_icustay_ids()
    window_start_s, step_s = windows.window_start_seconds(), windows.frequency_minutes * 60
    total = sum(len(usable_rows(windows, v)) for v in vitals)
    started, n_series = time.perf_counter(), 0
    bar = tqdm(total=total, desc="forecast", disable=not progress, mininterval=15.0)
    batch_index = 0
    for vital in vitals:
        rows = usable_rows(windows, vital)
        context_all = windows.context(vital, rows)
        truth_all = windows.horizon(vital, rows)
        observed_all = windows.horizon_observed_mask(vital, rows)
        start_s_all = window_start_s[rows]
        for start in range(0, len(rows), config.batch_size):
            part = slice(start, start + config.batch_size)
            batch_seed = config.seed * 1_000_003 + batch_index
            torch.manual_seed(batch_seed)
            batch_index += 1
            context = torch.from_numpy(np.ascontiguousarray(context_all[part]))
            axis = TimeAxis(start_s_all[part], step_s)
            forecast = predictor(vital, rows[part], context, axis, config.num_samples, batch_seed)
            quantiles = to_quantiles(forecast, levels).numpy()  # [B, L, H]
            batch_rows = rows[part]
            b = len(batch_rows)
            columns["window_id"].append(np.repeat(batch_rows, horizon))
            columns["subject_id"].append(np.repeat(window_subjects[batch_rows], horizon))
            columns["icustay_id"].append(np.repeat(window_stays[batch_rows], horizon))
            columns["vital"].append(np.full(b * horizon, vital, dtype=object))
            columns["step"].append(np.tile(np.arange(1, horizon + 1, dtype=np.int16), b))
            truth = np.where(observed_all[part], truth_all[part], np.nan)
            columns["y_true"].append(truth.reshape(-1).astype(np.float32))
            columns["observed"].append(observed_all[part].reshape(-1))
            columns["median"].append(forecast.median.float().numpy().reshape(-1))
            for j, level in enumerate(levels):
                columns[quantile_column(level)].append(quantiles[:, j, :].reshape(-1))
            n_series += b
            bar.update(b)
    bar.close()
    elapsed = time.perf_counter() - started
    arrays = {}
    for name, parts in columns.items():
        values = np.concatenate(parts) if parts else np.array([])
        if name == "vital":
            arrays[name] = pa.array(values, pa.string()).dictionary_encode()
        elif name in ("median", "y_true") or name.startswith("q"):
            arrays[name] = pa.array(values.astype(np.float32), pa.float32())
        else:
            arrays[name] = pa.array(values)
    table = pa.table(arrays)
    facts = {
        "series": n_series,
        "rows": table.num_rows,
        "seconds": elapsed,
        "series_per_s": n_series / elapsed if elapsed else float("nan"),
        "quantile_levels": list(levels),
    }
    return table, facts
