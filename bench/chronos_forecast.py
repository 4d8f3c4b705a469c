"""Benchmark: the engine's batched zero-shot forecasting against the library pipeline per window.

For each Chronos variant, one released-format checkpoint (the pretrained stand-in in
``results/models/standins/<name>`` when the workflow has built it, else a randomly
initialised stand-in saved with ``save_pretrained`` into a temporary folder) is loaded twice:
by the engine (``ChronosForecaster.load``) and by the library
(``BaseChronosPipeline.from_pretrained``). Then, on the same windows (the study's test
windows ``results/windows/test.npz`` if present, else ``toy_windows``), all vitals:

* engine: :func:`vitalfm.engine.forecast.forecast_windows` (calls of exactly
  ``--batch-size`` series, the last one padded; returns the parquet-ready table with median
  and the study's quantile levels);
* library, per window: ``pipeline.predict`` on one context at a time, then the median and the
  same quantile levels (Bolt / Chronos-2: linear interpolation between the model's own
  levels, NaN outside them, as the engine does; Chronos-T5: ``torch.quantile`` of the
  samples), written into preallocated arrays;
* library, batched: ``pipeline.predict`` on all contexts of a vital in one call (Bolt,
  Chronos-2), or the engine with ``t5_sampler = "library"`` (Chronos-T5: the pipeline's own
  ``generate`` sampler, batched like the engine).

Bolt and Chronos-2 are deterministic: the script asserts that the engine's medians and
quantiles equal the per-window library's (``np.allclose``, NaN equal) before it reports
anything. Chronos-T5 samples, and the engine's fast sampler draws differently from
``generate`` by design (same distribution), so for T5 the script compares distributions:
median of the medians, MAE of the median against the observed truth, mean 80 % interval
width and coverage, and the mean absolute difference of medians between methods next to the
same difference between two library runs with different seeds (the sampling noise). T5 runs
on a subset of the windows (``--t5-windows``; 100 sample paths each is slow on CPU).

Timed: the forecasting calls only (model loading excluded); engine and library alternate on
each repeat, and the load average is recorded around each run. Usage:

    .venv/bin/python bench/chronos_forecast.py            # default, several minutes
    .venv/bin/python bench/chronos_forecast.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchfacts import load, summarise, write_report

ROOT = Path(__file__).resolve().parents[1]
#: Where a study's outputs lie, under the folder given by --study (default: this checkout).
TEST_WINDOWS = Path("results/windows/test.npz")
STANDINS = Path("results/models/standins")


# --- windows and models ----------------------------------------------------------------------


def study_windows(quick: bool, study: Path = ROOT) -> tuple[Any, str]:
    """The test windows of the study in ``study`` (its results/ folder), else toy windows."""
    from vitalfm.data.windows import WindowSet
    from vitalfm.testing import toy_windows

    if (study / TEST_WINDOWS).is_file():
        return WindowSet.load(study / TEST_WINDOWS), str(TEST_WINDOWS)
    names = ("heart_rate", "sbp", "dbp", "mbp", "resp_rate", "spo2", "temperature")
    n_stays = 20 if quick else 300
    return toy_windows("test", n_stays=n_stays, vital_names=names), f"toy_windows({n_stays} stays)"


def subset(windows: Any, count: int) -> Any:
    """``count`` windows spread evenly over the set (the same ones for every method)."""
    if count >= len(windows):
        return windows
    keep = np.unique(np.linspace(0, len(windows) - 1, count).round().astype(np.int64))
    return dataclasses.replace(
        windows,
        window_start_rows=windows.window_start_rows[keep],
        window_stay_index=windows.window_stay_index[keep],
        horizon_observed=windows.horizon_observed[keep],
    )


def checkpoint(
    name: str, horizon: int, seed: int, tmp: Path, study: Path = ROOT
) -> tuple[Path, str]:
    """The pretrained stand-in if the study's workflow built it (and it can forecast
    ``horizon``), else a randomly initialised stand-in saved in the released format."""
    from vitalfm.models.chronos import ChronosForecaster

    built = study / STANDINS / name
    if (built / "config.json").is_file() and (built / "model.safetensors").is_file():
        config = json.loads((built / "config.json").read_text())
        if config.get("chronos_config", {}).get("prediction_length", horizon) >= horizon:
            return built, f"pretrained stand-in {STANDINS / name}"
    folder = tmp / name
    ChronosForecaster.standin(name, horizon, seed).save_pretrained(folder)
    return folder, "randomly initialised stand-in (save_pretrained, temporary folder)"


# --- the methods -----------------------------------------------------------------------------


def forecast_rows(windows: Any, vital: str) -> np.ndarray:
    """The windows the engine forecasts for ``vital``: an observed horizon point and at least
    one context value (the engine skips windows with an empty context)."""
    rows = windows.windows_for(vital)
    return rows[np.isfinite(windows.context(vital, rows)).any(axis=1)]


def count_series(windows: Any) -> int:
    return sum(len(forecast_rows(windows, v)) for v in windows.vital_names)


def interpolation(native: Sequence[float], levels: Sequence[float]) -> list[tuple[int, int, float]]:
    """(lower, upper, weight) per wanted level; lower = -1 marks a level outside the model's."""
    out = []
    for level in levels:
        exact = [i for i, q in enumerate(native) if abs(q - level) < 1e-9]
        if exact:
            out.append((exact[0], exact[0], 0.0))
        elif level < native[0] or level > native[-1]:
            out.append((-1, -1, 0.0))
        else:
            upper = next(i for i, q in enumerate(native) if q > level)
            lower = upper - 1
            out.append((lower, upper, (level - native[lower]) / (native[upper] - native[lower])))
    return out


def engine_forecast(
    forecaster: Any, windows: Any, config: Any, sampler: str = "fast"
) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    """(median [N, H], quantiles [N, L, H], seconds, levels) from ``forecast_windows``."""
    from vitalfm.engine.forecast import forecast_windows, quantile_column

    forecaster.t5_sampler = sampler
    started = time.perf_counter()
    result = forecast_windows(forecaster, windows, windows.vital_names, config, progress=False)
    table, facts = result.table, result.facts
    seconds = time.perf_counter() - started
    levels = facts["quantile_levels"]
    h = windows.horizon_steps
    expected = np.concatenate([forecast_rows(windows, v) for v in windows.vital_names])
    if not np.array_equal(table.column("window_id").to_numpy()[::h], expected):
        raise AssertionError("the engine forecast other windows than the baseline's rows")
    median = table.column("median").to_numpy().reshape(-1, h)
    quantiles = np.stack(
        [table.column(quantile_column(q)).to_numpy().reshape(-1, h) for q in levels], axis=1
    )
    return median, quantiles, seconds, levels


def library_per_window(
    pipeline: Any, variant: str, windows: Any, levels: Sequence[float], samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """One ``predict`` call per (window, vital), in the engine's row order."""
    h = windows.horizon_steps
    n = count_series(windows)
    median = np.empty((n, h), np.float32)
    quantiles = np.empty((n, len(levels), h), np.float32)
    wanted = torch.tensor(levels, dtype=torch.float64)
    if variant != "chronos-t5":
        native = [float(q) for q in pipeline.quantiles]
        mid = native.index(0.5)
        plan = interpolation(native, levels)
    torch.manual_seed(seed)
    started = time.perf_counter()
    i = 0
    for vital in windows.vital_names:
        contexts = windows.context(vital, forecast_rows(windows, vital))
        for row in range(len(contexts)):
            context = torch.from_numpy(contexts[row])
            if variant == "chronos-t5":
                paths = pipeline.predict(context[None], prediction_length=h, num_samples=samples)
                paths = paths[0].double()  # [S, H]
                median[i] = paths.quantile(0.5, dim=0).numpy()
                quantiles[i] = torch.quantile(paths, wanted, dim=0).numpy()
            else:
                if variant == "chronos-bolt":
                    q = pipeline.predict(context[None], prediction_length=h)[0]
                else:
                    q = pipeline.predict(context[None, None], prediction_length=h)[0][0]
                q = q.double().numpy()  # [Q, H]
                median[i] = q[mid]
                for j, (lower, upper, weight) in enumerate(plan):
                    quantiles[i, j] = (
                        np.nan if lower < 0 else q[lower] + weight * (q[upper] - q[lower])
                    )
            i += 1
    return median, quantiles, time.perf_counter() - started


def library_batched(pipeline: Any, variant: str, windows: Any) -> tuple[np.ndarray, float]:
    """Bolt / Chronos-2: one ``predict`` call per vital over all its windows (medians only)."""
    h = windows.horizon_steps
    parts = []
    started = time.perf_counter()
    for vital in windows.vital_names:
        contexts = torch.from_numpy(windows.context(vital, forecast_rows(windows, vital)))
        mid = [float(q) for q in pipeline.quantiles].index(0.5)
        if variant == "chronos-bolt":
            q = pipeline.predict(contexts, prediction_length=h)
        else:
            q = torch.cat(pipeline.predict(contexts[:, None, :], prediction_length=h), dim=0)
        parts.append(q[:, mid].numpy())
    return np.concatenate(parts), time.perf_counter() - started


def truth(windows: Any) -> np.ndarray:
    parts = []
    for vital in windows.vital_names:
        rows = forecast_rows(windows, vital)
        values = windows.horizon(vital, rows)
        parts.append(np.where(windows.horizon_observed_mask(vital, rows), values, np.nan))
    return np.concatenate(parts)


def distribution(
    median: np.ndarray, quantiles: np.ndarray, levels: Sequence[float], y: np.ndarray
) -> dict[str, float]:
    low, high = quantiles[:, levels.index(0.1)], quantiles[:, levels.index(0.9)]
    scored = ~np.isnan(y)
    return {
        "median_of_medians": float(np.nanmedian(median)),
        "mae_vs_truth": float(np.nanmean(np.abs(median - y)[scored])),
        "mean_80pct_width": float(np.nanmean(high - low)),
        "coverage_80pct": float(np.mean((y[scored] >= low[scored]) & (y[scored] <= high[scored]))),
    }


# --- driver ----------------------------------------------------------------------------------


def timed_runs(
    label: str, repeats: int, methods: dict[str, Callable[[int], dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Each method once per repeat, the order rotated on every repeat."""
    names = list(methods)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            before = load()
            result = methods[name](repeat)
            result.update(load_before=before, load_after=load())
            runs[name].append(result)
            print(
                f"  {label} {name:22s} repeat {repeat}: {result['seconds']:7.2f} s "
                f"({result['series_per_s']:8.1f} series/s, load {before:.1f})",
                flush=True,
            )
    return runs


def bench_deterministic(
    variant: str, windows: Any, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    from chronos import BaseChronosPipeline

    from vitalfm.engine.forecast import ForecastConfig
    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos import ChronosForecaster

    folder, source = checkpoint(variant, windows.horizon_steps, args.seed, tmp, args.study)
    forecaster = ChronosForecaster.load(ModelSource(path=str(folder)), torch.device("cpu"))
    pipeline = BaseChronosPipeline.from_pretrained(
        str(folder), device_map="cpu", dtype=torch.float32
    )
    config = ForecastConfig(num_samples=args.num_samples, batch_size=args.batch_size)
    n = count_series(windows)

    # correctness first: identical forecasts, else no timing is reported
    median, quantiles, _, levels = engine_forecast(forecaster, windows, config)
    ref_median, ref_quantiles, _ = library_per_window(pipeline, variant, windows, levels, 0, 0)
    batched_median, _ = library_batched(pipeline, variant, windows)
    if not (
        np.allclose(median, ref_median, rtol=args.rtol, atol=args.atol)
        and np.allclose(quantiles, ref_quantiles, rtol=args.rtol, atol=args.atol, equal_nan=True)
        and np.array_equal(np.isnan(quantiles), np.isnan(ref_quantiles))
        and np.allclose(batched_median, ref_median, rtol=args.rtol, atol=args.atol)
    ):
        raise AssertionError(f"{variant}: engine and per-window library forecasts differ")
    check = {
        "allclose": True,
        "rtol": args.rtol,
        "atol": args.atol,
        "max_abs_diff_median": float(np.max(np.abs(median - ref_median))),
        "max_abs_diff_quantiles": float(np.nanmax(np.abs(quantiles - ref_quantiles))),
        "levels_compared": levels,
        "levels_nan_outside_model_range": [
            q for j, q in enumerate(levels) if np.isnan(quantiles[:, j]).all()
        ],
    }

    def engine(repeat: int) -> dict[str, Any]:
        seconds = engine_forecast(forecaster, windows, config)[2]
        return {"seconds": seconds, "series_per_s": n / seconds}

    def per_window(repeat: int) -> dict[str, Any]:
        seconds = library_per_window(pipeline, variant, windows, levels, 0, repeat)[2]
        return {"seconds": seconds, "series_per_s": n / seconds}

    def batched(repeat: int) -> dict[str, Any]:
        seconds = library_batched(pipeline, variant, windows)[1]
        return {"seconds": seconds, "series_per_s": n / seconds}

    runs = timed_runs(
        variant,
        args.repeats,
        {"engine": engine, "library_per_window": per_window, "library_batched": batched},
    )
    return {
        "variant": variant,
        "checkpoint": source,
        "series": n,
        "identical_forecasts": check,
        "runs": runs,
        "seconds": {k: summarise([r["seconds"] for r in v]) for k, v in runs.items()},
        "speedup_vs_per_window": summarise(
            [
                p["seconds"] / e["seconds"]
                for e, p in zip(runs["engine"], runs["library_per_window"], strict=True)
            ]
        ),
        "speedup_vs_library_batched": summarise(
            [
                b["seconds"] / e["seconds"]
                for e, b in zip(runs["engine"], runs["library_batched"], strict=True)
            ]
        ),
    }


def bench_t5(windows: Any, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from chronos import BaseChronosPipeline

    from vitalfm.engine.forecast import ForecastConfig
    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos import ChronosForecaster

    windows = subset(windows, args.t5_windows)
    folder, source = checkpoint("chronos-t5", windows.horizon_steps, args.seed, tmp, args.study)
    forecaster = ChronosForecaster.load(ModelSource(path=str(folder)), torch.device("cpu"))
    pipeline = BaseChronosPipeline.from_pretrained(
        str(folder), device_map="cpu", dtype=torch.float32
    )
    n = count_series(windows)
    y = truth(windows)
    outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    levels: list[float] = []

    def engine_with(sampler: str) -> Callable[[int], dict[str, Any]]:
        def run(repeat: int) -> dict[str, Any]:
            nonlocal levels
            config = ForecastConfig(
                num_samples=args.num_samples, batch_size=args.batch_size, seed=repeat
            )
            median, quantiles, seconds, levels = engine_forecast(
                forecaster, windows, config, sampler
            )
            outputs.setdefault(f"engine_{sampler}", []).append((median, quantiles))
            return {"seconds": seconds, "series_per_s": n / seconds}

        return run

    def per_window(repeat: int) -> dict[str, Any]:
        wanted = levels or list(ForecastConfig().quantile_levels)
        median, quantiles, seconds = library_per_window(
            pipeline, "chronos-t5", windows, wanted, args.num_samples, repeat
        )
        outputs.setdefault("library_per_window", []).append((median, quantiles))
        return {"seconds": seconds, "series_per_s": n / seconds}

    engine_with("fast")(0)  # warm-up, untimed; fixes `levels`
    outputs.clear()
    runs = timed_runs(
        "chronos-t5",
        args.repeats,
        {
            "engine": engine_with("fast"),
            "library_batched": engine_with("library"),
            "library_per_window": per_window,
        },
    )
    forecaster.t5_sampler = "fast"
    stats = {
        name: [distribution(m, q, levels, y) for m, q in results]
        for name, results in outputs.items()
    }

    def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.nanmean(np.abs(a - b)))

    fast, lib = outputs["engine_fast"], outputs["engine_library"]
    single = outputs["library_per_window"]
    differences = {
        "engine_fast_vs_library_batched": mean_abs(fast[0][0], lib[0][0]),
        "library_per_window_vs_library_batched": mean_abs(single[0][0], lib[0][0]),
    }
    if len(lib) > 1:
        differences["library_batched_seed0_vs_seed1 (noise)"] = mean_abs(lib[0][0], lib[1][0])
    if len(fast) > 1:
        differences["engine_fast_seed0_vs_seed1 (noise)"] = mean_abs(fast[0][0], fast[1][0])
    return {
        "variant": "chronos-t5",
        "checkpoint": source,
        "windows": len(windows),
        "series": n,
        "num_samples": args.num_samples,
        "runs": runs,
        "seconds": {k: summarise([r["seconds"] for r in v]) for k, v in runs.items()},
        "speedup_vs_per_window": summarise(
            [
                p["seconds"] / e["seconds"]
                for e, p in zip(runs["engine"], runs["library_per_window"], strict=True)
            ]
        ),
        "speedup_vs_library_batched": summarise(
            [
                b["seconds"] / e["seconds"]
                for e, b in zip(runs["engine"], runs["library_batched"], strict=True)
            ]
        ),
        "distribution_per_repeat": stats,
        "distribution": {
            name: {key: statistics.mean(s[key] for s in per_repeat) for key in per_repeat[0]}
            for name, per_repeat in stats.items()
        },
        "mean_abs_median_difference": differences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="the study's forecast batch")
    parser.add_argument("--num-samples", type=int, default=100, help="Chronos-T5 sample paths")
    parser.add_argument("--t5-windows", type=int, default=16)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="torch threads, the same for all methods; several values: one pass each",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument(
        "--variants", nargs="+", default=["chronos-bolt", "chronos-2", "chronos-t5"]
    )
    parser.add_argument(
        "--study",
        type=Path,
        default=ROOT,
        help="folder whose results/ holds the study's test windows and stand-ins (default: "
        "this checkout; e.g. a clone where `snakemake results/windows/test.npz "
        "results/models/standins/<name>` has run)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/chronos_forecast.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    windows, windows_source = study_windows(args.quick, args.study)
    if args.quick:
        args.repeats = 1
        args.t5_windows = min(args.t5_windows, 4)
        windows = subset(windows, 60)
    print(f"windows: {windows_source}, {len(windows)} windows", flush=True)
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for threads, variant in itertools.product(args.threads, args.variants):
            torch.set_num_threads(threads)
            print(f"{variant}, {threads} thread(s)", flush=True)
            if variant == "chronos-t5":
                result = bench_t5(windows, args, Path(tmp))
            else:
                result = bench_deterministic(variant, windows, args, Path(tmp))
            results.append({"threads": threads, **result})
            s = result["speedup_vs_per_window"]
            print(
                f"  {variant}: engine vs per-window library x{s['median']:.1f} "
                f"(range {s['min']:.1f}-{s['max']:.1f}); vs library batched "
                f"x{result['speedup_vs_library_batched']['median']:.2f}",
                flush=True,
            )
    write_report(
        args.out,
        "chronos_forecast",
        {
            "quick": args.quick,
            "repeats": args.repeats,
            "windows": windows_source,
            "n_windows": len(windows),
            "vitals": list(windows.vital_names),
            "context_steps": windows.context_steps,
            "horizon_steps": windows.horizon_steps,
            "batch_size": args.batch_size,
            "num_samples": args.num_samples,
            "t5_windows": args.t5_windows,
            "threads": args.threads,
            "timed": "see the module docstring of bench/chronos_forecast.py",
        },
        total_seconds=time.perf_counter() - started,
        results=results,
    )


if __name__ == "__main__":
    main()
