"""Batched forecasting over every window of a split, one parquet table per run.

The same function serves zero-shot and adapted models: only the forecaster's module differs.
Each row is one (window, vital, horizon step) with the truth, whether it is scorable
(observed, not filled), the median and the study's quantile levels, all in original units; a
second table holds the sample paths at the observed points (:class:`WindowForecasts`). No
series' forecast depends on the others forecast with it (:func:`forecast_windows`).
A :data:`Predictor` stands in for a forecaster where the forecasts come from elsewhere (the
synthetic study's oracle, :func:`oracle_predictor`).
"""

from __future__ import annotations

import bisect
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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


#: A series' sampling seed keys its own random stream (see :func:`series_seeds`); the tags
#: keep these streams apart from the other uses of the same replicate seed.
_SERIES_TAG, _PADDING_TAG = 17, 18
_U64, _U63 = (1 << 64) - 1, (1 << 63) - 1


#: Every model call holds a whole number of this many rows (the batch size rounded up). A fixed
#: row count is not enough on its own: CPU kernels can round a row by its position in the call,
#: e.g. an ``nn.Linear`` with one or two outputs (Lag-Llama's and DLinear's heads) when the rows
#: are not a multiple of 4 or 8, and elementwise softplus, log1p and sigmoid on the elements past
#: a tensor's last full vector block. Measured on this machine's CPU (bench-free probes, issue
#: 17): no position dependence at 64, 128, 192, 256, 1,280 or 2,560 rows.
CALL_ROW_MULTIPLE = 64


def call_rows(batch_size: int) -> int:
    """The rows of every model call for a batch size: rounded up to :data:`CALL_ROW_MULTIPLE`."""
    return -(-max(1, int(batch_size)) // CALL_ROW_MULTIPLE) * CALL_ROW_MULTIPLE


def series_seeds(
    seed: int, stay_ids: np.ndarray, start_s: np.ndarray, vitals: Sequence[str]
) -> np.ndarray:
    """int64 [N] in ``[0, 2**63)``: series ``i``'s sampling seed, from the replicate's forecast
    seed, its window's ``icustay_id`` and the epoch second its context starts, and its vital
    (``zlib.crc32`` of the name), through :class:`numpy.random.SeedSequence`: never from its
    place among other series, so adding, removing or reordering others leaves it alone."""
    codes = {vital: zlib.crc32(str(vital).encode()) for vital in set(vitals)}
    out = np.empty(len(stay_ids), np.int64)
    base = int(seed) & _U64
    for i, (stay, start, vital) in enumerate(
        zip(np.asarray(stay_ids).tolist(), np.asarray(start_s).tolist(), vitals, strict=True)
    ):
        entropy = [base, _SERIES_TAG, int(stay) & _U64, int(start) & _U64, codes[vital]]
        out[i] = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]) & _U63
    return out


@dataclass(frozen=True)
class ModelCall:
    """One model call over series ``start:stop``: ``index`` the series each row holds (those
    series, then the copies that pad the call to its fixed size) and ``seeds`` one per row."""

    start: int
    stop: int
    index: np.ndarray
    seeds: np.ndarray

    @property
    def real(self) -> int:
        """The rows that are series of the call (the rest is padding, discarded)."""
        return self.stop - self.start


def fixed_shape_calls(
    seeds: np.ndarray, size: int, padding_seed: int | None
) -> Iterator[ModelCall]:
    """The series (``seeds``: one each, in order) cut into calls of ``size`` rows; the last
    call is padded with copies of its first series, seeded from :func:`padding_seeds` of
    ``padding_seed``, or left short when that is None (a predictor, which is no model)."""
    pad_seeds = padding_seeds(padding_seed, size) if padding_seed is not None else None
    for start in range(0, len(seeds), size):
        stop = min(start + size, len(seeds))
        index = np.arange(start, stop)
        call_seeds = seeds[index]
        missing = size - (stop - start)
        if pad_seeds is not None and missing:
            index = np.concatenate([index, np.full(missing, start)])
            call_seeds = np.concatenate([call_seeds, pad_seeds[:missing]])
        yield ModelCall(start, stop, index, call_seeds)


def padding_seeds(seed: int, count: int) -> np.ndarray:
    """int64 [count]: seeds of the padding rows of a call (distinct streams; discarded)."""
    state = np.random.SeedSequence([int(seed) & _U64, _PADDING_TAG]).generate_state(
        max(count, 0), np.uint64
    )
    return (state & np.uint64(_U63)).astype(np.int64)


#: ``predict(rows, vitals, context, time, num_samples, seeds) -> Forecast``: what
#: :func:`forecast_windows` calls instead of a forecaster (the oracle) for window rows
#: ``rows`` [B], their vitals (str [B]) and their series' seeds (int64 [B],
#: :func:`series_seeds`); row ``i`` must depend on row ``i``'s inputs only.
Predictor = Callable[[np.ndarray, np.ndarray, torch.Tensor, TimeAxis, int, np.ndarray], Forecast]


def oracle_predictor(synthetic: Mapping[str, Any], windows: WindowSet) -> Predictor:
    """The synthetic study's reference: samples of each horizon bin from the generator's own
    state at the window's origin (:func:`vitalfm.synthetic.oracle.oracle_samples`), each
    series drawn from its own stream (its seed); ``synthetic`` is the generator's settings
    (the config's ``synthetic`` section)."""
    from vitalfm.synthetic.oracle import oracle_samples

    stays, origins = windows.window_icustay_ids(), windows.origin_seconds()

    def predict(
        rows: np.ndarray,
        vitals: np.ndarray,
        context: torch.Tensor,
        time: Any,
        samples: int,
        seeds: np.ndarray,
    ) -> Forecast:
        drawn = np.empty((len(rows), samples, windows.horizon_steps), np.float32)
        for vital in dict.fromkeys(vitals.tolist()):
            mine = np.flatnonzero(vitals == vital)
            drawn[mine] = oracle_samples(
                synthetic,
                stays[rows[mine]],
                origins[rows[mine]],
                vital,
                windows.horizon_steps,
                windows.frequency_minutes,
                samples,
                seeds[mine],
            )
        paths = torch.from_numpy(drawn)
        return Forecast(median=paths.quantile(0.5, dim=1), samples=paths)

    return predict


def paths_schema(num_samples: int) -> pa.Schema:
    """The sample-path table's schema (:class:`WindowForecasts`)."""
    return pa.schema(
        [
            ("window_id", pa.int64()),
            ("vital", pa.string()),
            ("step", pa.int16()),
            ("samples", pa.list_(pa.float32(), int(num_samples))),
        ]
    )


@dataclass(frozen=True)
class WindowForecasts:
    """What :func:`forecast_windows` returns.

    ``table``: one row per (window, vital, horizon step) with the truth, the median and the
    quantile levels. ``paths``: the forecast's sample paths at the observed horizon points,
    one row per (window, vital, step) whose ``observed`` is true in ``table``, in the same
    order (:func:`paths_schema`: ``samples`` is a fixed-size list of ``num_samples`` float32);
    no rows when the model forecasts quantiles, not samples. ``facts``: timing and counts.
    """

    table: pa.Table
    paths: pa.Table
    facts: dict[str, Any]


def forecast_windows(
    forecaster: Forecaster | None,
    windows: WindowSet,
    vitals: Sequence[str],
    config: ForecastConfig,
    progress: bool = True,
    predictor: Predictor | None = None,
) -> WindowForecasts:
    """Forecast every scorable window of every vital (see :func:`usable_rows`): the
    forecast table, the sample paths at its observed points and timing facts
    (:class:`WindowForecasts`). ``predictor`` replaces ``forecaster.predict`` (see
    :data:`Predictor`).

    Patient isolation: a series' forecast (quantiles and paths, bit for bit on CPU) does not
    depend on which other series are forecast with it, their number or order
    (tests/test_patient_isolation.py). The series (vital by vital, windows
    ascending) are cut into calls of exactly :func:`call_rows` rows (``config.batch_size``
    rounded up to a multiple of 64), the last one padded with copies of its first series
    (given their own seeds, their outputs discarded): CPU kernels may round differently for
    another number of rows (measured: 1 ulp for Chronos-Bolt, Chronos-2 and Moirai-2) or by a
    row's position in a call of an odd size, so every call has the same, whole-block shape.
    Each series draws from its own random stream (``seeds``, :func:`series_seeds`), never
    from its position in a call. A predictor is called per call without padding.

    Fixed-shape calls replace the earlier merging of a deterministic model's batches into
    calls of up to 2**15 context values, whose size followed the number of series (the default
    study's wall time did not change with it: BENCHMARKS.md, "The whole default study").
    """
    if (forecaster is None) == (predictor is None):
        raise ModelError("forecast_windows needs a forecaster or a predictor", "pass one")
    if config.batch_size < 1:
        raise ModelError(f"forecast batch size {config.batch_size}", "set forecast.batch_size >= 1")
    horizon = windows.horizon_steps
    pad = predictor is None
    if predictor is None:
        model = forecaster

        def predictor(
            rows: np.ndarray,
            vitals: np.ndarray,
            context: torch.Tensor,
            time: TimeAxis,
            n: int,
            seeds: np.ndarray,
        ) -> Forecast:
            return model.predict(context, horizon, n, time=time, seeds=seeds)

    levels = tuple(config.quantile_levels)
    if 0.5 not in levels:
        levels = tuple(sorted({*levels, 0.5}))

    # every series (window, vital) in the engine's order: vital by vital, windows ascending
    rows_of = {vital: usable_rows(windows, vital) for vital in vitals}
    present = [vital for vital in vitals if len(rows_of[vital])]
    rows = np.concatenate([rows_of[v] for v in vitals]) if vitals else np.zeros(0, np.int64)
    series_vital = np.concatenate(
        [np.full(len(rows_of[v]), v, dtype=object) for v in vitals] or [np.zeros(0, object)]
    )
    contexts = [windows.context(v, rows_of[v]) for v in vitals]
    context_all = np.ascontiguousarray(
        np.concatenate(contexts) if contexts else np.zeros((0, windows.context_steps))
    )
    truth = np.concatenate(
        [windows.horizon(v, rows_of[v]) for v in vitals] or [np.zeros((0, horizon))]
    )
    observed = np.concatenate(
        [windows.horizon_observed_mask(v, rows_of[v]) for v in vitals]
        or [np.zeros((0, horizon), bool)]
    )
    n_series = len(rows)
    window_start_s, step_s = windows.window_start_seconds()[rows], windows.frequency_minutes * 60
    seeds = series_seeds(
        config.seed, windows.window_icustay_ids()[rows], window_start_s, series_vital.tolist()
    )
    size = call_rows(config.batch_size)
    median = np.empty((n_series, horizon), np.float32)
    # level-major, so that each quantile column is one contiguous block
    quantiles = np.empty((len(levels), n_series, horizon), np.float32)
    call_quantiles = np.empty((len(levels), size, horizon), np.float32)
    paths: list[np.ndarray] = []  # [observed points of the call, S] each
    with_samples: set[bool] = set()

    started = time.perf_counter()
    bar = tqdm(total=n_series, desc="forecast", disable=not progress, mininterval=15.0)
    calls = padded = 0
    for call in fixed_shape_calls(seeds, size, config.seed if pad else None):
        first, stop, real, index = call.start, call.stop, call.real, call.index
        padded += len(index) - real
        context = torch.from_numpy(context_all[index])
        axis = TimeAxis(window_start_s[index], step_s)
        # every call starts from the same global state: a draw a family still takes from it
        # (none should, with seeds) depends on neither the call's place nor earlier calls
        torch.manual_seed(config.seed)
        forecast = predictor(
            rows[index], series_vital[index], context, axis, config.num_samples, call.seeds
        )
        calls += 1
        median[first:stop] = forecast.median[:real].float().cpu().numpy()
        out = call_quantiles[:, : len(index)]
        write_quantiles(forecast, levels, out)
        quantiles[:, first:stop] = out[:, :real]
        with_samples.add(forecast.samples is not None)
        if forecast.samples is not None:
            drawn = forecast.samples[:real].float().cpu().numpy()  # [real, S, H]
            if drawn.shape[1] != config.num_samples:
                raise ModelError(
                    f"a forecast of {drawn.shape[1]} sample paths where {config.num_samples} "
                    "were asked for",
                    "fix the family module: predict must return num_samples paths",
                )
            paths.append(drawn.transpose(0, 2, 1)[observed[first:stop]])
        bar.update(real)
    bar.close()
    elapsed = time.perf_counter() - started
    if len(with_samples) > 1:
        raise ModelError(
            "a forecaster returned samples for some calls and quantiles for others",
            "fix the family module: one kind of output for every call",
        )

    vital_codes = np.repeat(
        np.arange(len(present), dtype=np.int32), [len(rows_of[v]) for v in present]
    )
    steps = np.tile(np.arange(1, horizon + 1, dtype=np.int16), n_series)
    arrays = {
        "window_id": pa.array(np.repeat(rows, horizon)),
        "subject_id": pa.array(np.repeat(windows.window_subject_ids()[rows], horizon)),
        "icustay_id": pa.array(np.repeat(windows.window_icustay_ids()[rows], horizon)),
        "vital": pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(vital_codes, horizon), pa.int32()), pa.array(present, pa.string())
        ),
        "step": pa.array(steps),
        "y_true": pa.array(
            np.where(observed, truth, np.nan).reshape(-1).astype(np.float32), pa.float32()
        ),
        "observed": pa.array(observed.reshape(-1)),
        "median": pa.array(median.reshape(-1), pa.float32()),
    }
    for j, level in enumerate(levels):
        arrays[quantile_column(level)] = pa.array(quantiles[j].reshape(-1), pa.float32())
    table = pa.table(arrays)
    schema = paths_schema(config.num_samples)
    if paths:
        flat = observed.reshape(-1)
        drawn = np.concatenate(paths).astype(np.float32, copy=False)
        path_table = pa.table(
            [
                pa.array(np.repeat(rows, horizon)[flat], pa.int64()),
                pa.array(np.repeat(series_vital, horizon)[flat].tolist(), pa.string()),
                pa.array(steps[flat], pa.int16()),
                pa.FixedSizeListArray.from_arrays(
                    pa.array(drawn.reshape(-1), pa.float32()), config.num_samples
                ),
            ],
            schema=schema,
        )
    else:
        path_table = schema.empty_table()
    facts = {
        "series": n_series,
        "rows": table.num_rows,
        "path_rows": path_table.num_rows,
        "calls": calls,
        "padded_series": padded,
        "seconds": elapsed,
        "series_per_s": n_series / elapsed if elapsed else float("nan"),
        "quantile_levels": list(levels),
    }
    return WindowForecasts(table, path_table, facts)
