"""Benchmark: the engine's batched MOIRAI forecasting against uni2ts's own forecast routes.

For MOIRAI 1.x and Moirai-2, two checkpoints each, saved in the released format and loaded by
both sides: the stand-in (the pretrained one in ``results/models/standins/<name>`` when the
workflow has built it, else randomly initialised) and random weights in the shape of the
released small model (``moirai-1.x-R-small``: d_model 384, 6 layers; ``moirai-2.0-R-small``:
d_model 384, d_ff 1024, 6 layers, 4 predicted tokens). Windows: the study's test windows
(``results/windows/test.npz``) if present, else ``toy_windows``; every vital. Routes:

* engine: :func:`vitalfm.engine.forecast.forecast_windows` (calls of exactly
  ``--batch-size`` series, the last one padded; the parquet-ready table with median and the
  study's quantile levels);
* MOIRAI 1.x, library: ``MoiraiForecast.create_predictor(batch_size).predict`` (uni2ts's
  gluonts predictor) on a ``ListDataset`` per vital, each context as a series starting at its
  first value; then the same quantile levels from the sample paths;
* Moirai-2, library: ``Moirai2Forecast.predict`` (numpy arrays, one call per vital), and its
  gluonts input pipeline (the predictor's ``input_transform``) + ``forward`` per batch. Its
  gluonts predictor itself fails on gluonts 0.17 (``QuantileForecastGenerator`` expects
  ``(outputs,), loc, scale``), so the pipeline is called by hand.

MOIRAI 1.x's engine is timed with both its samplers: "fast" (the default: only the horizon's
points drawn, same distribution) and "library" (``MoiraiForecast.forward``'s draws).

Correctness is checked before anything is timed: with the "library" sampler, MOIRAI 1.x's
engine samples equal the predictor's for the engine's per-batch seeds (predictor called batch
by batch with those seeds). Moirai-2's engine quantiles equal the input pipeline + forward on
every series, and ``Moirai2Forecast.predict`` on the series without gaps (it imputes gaps with
0, a uni2ts bug; see ``vitalfm.models.moirai.moirai2_inputs``). After the timed runs, the fast
sampler is compared with the predictor as a distribution: accuracy, 80 % interval, and the
median's difference next to the difference between two predictor runs (sampling noise).

Timed: the forecasting calls with quantile post-processing (model loading excluded); the
routes alternate on each repeat. Usage:

    .venv/bin/python bench/moirai_forecast.py            # default, a few minutes
    .venv/bin/python bench/moirai_forecast.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchfacts import summarise, write_report
from chronos_forecast import (
    STANDINS,
    count_series,
    forecast_rows,
    study_windows,
    subset,
    timed_runs,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL_SHAPES = {
    "moirai": dict(d_model=384, num_layers=6),
    "moirai-2": dict(d_model=384, d_ff=1024, num_layers=6),
}


def checkpoint(
    variant: str, shape: str, seed: int, tmp: Path, study: Path = ROOT
) -> tuple[Path, str]:
    from vitalfm.models.moirai import MoiraiForecaster
    from vitalfm.models.moirai.moirai1 import STANDIN_MOIRAI
    from vitalfm.models.moirai.moirai2 import STANDIN_MOIRAI2

    built = study / STANDINS / variant
    if shape == "standin" and (built / "model.safetensors").is_file():
        return built, f"pretrained stand-in {STANDINS / variant}"
    folder = tmp / f"{variant}-{shape}"
    forecaster = MoiraiForecaster.standin(variant, horizon=12, seed=seed)
    if shape == "small":
        from uni2ts.model.moirai import MoiraiModule
        from uni2ts.model.moirai2 import Moirai2Module

        torch.manual_seed(seed)
        if variant == "moirai":
            config = {**STANDIN_MOIRAI, **SMALL_SHAPES[variant]}
            module = MoiraiModule(distr_output=forecaster.module.distr_output, **config)
        else:
            module = Moirai2Module(**{**STANDIN_MOIRAI2, **SMALL_SHAPES[variant]})
        forecaster = MoiraiForecaster.for_module(module.eval(), forecaster.source)
    forecaster.save_pretrained(folder)
    label = "stand-in" if shape == "standin" else "released small shape"
    return folder, f"randomly initialised {label} (save_pretrained, temporary folder)"


def uni2ts_net(folder: Path, context_length: int, horizon: int, **kwargs: Any) -> Any:
    from uni2ts.model.moirai import MoiraiForecast, MoiraiModule
    from uni2ts.model.moirai2 import Moirai2Forecast, Moirai2Module

    config = json.loads((folder / "config.json").read_text())
    moirai2 = "quantile_levels" in config
    with contextlib.redirect_stdout(io.StringIO()):
        module = (Moirai2Module if moirai2 else MoiraiModule).from_pretrained(folder)
    cls = Moirai2Forecast if moirai2 else MoiraiForecast
    return cls(
        prediction_length=horizon,
        target_dim=1,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0,
        context_length=context_length,
        module=module,
        **kwargs,
    )


def series_from_first_value(contexts: np.ndarray) -> list[np.ndarray]:
    return [row[np.argmax(np.isfinite(row)) :].copy() for row in contexts]


def dataset(contexts: np.ndarray) -> Any:
    from gluonts.dataset.common import ListDataset

    return ListDataset(
        [{"target": s, "start": "2020-01-01"} for s in series_from_first_value(contexts)],
        freq="15min",
    )


def batches(windows: Any, batch_size: int) -> list[tuple[str, np.ndarray]]:
    """(vital, contexts) per engine batch, in the engine's order."""
    out = []
    for vital in windows.vital_names:
        contexts = windows.context(vital, forecast_rows(windows, vital))
        out += [(vital, contexts[i : i + batch_size]) for i in range(0, len(contexts), batch_size)]
    return out


def engine_forecast(
    forecaster: Any, windows: Any, config: Any, sampler: str = "fast"
) -> tuple[np.ndarray, float]:
    """(quantiles [N, L, H] at the study's levels, median included; seconds)."""
    from vitalfm.engine.forecast import forecast_windows, quantile_column

    forecaster.sampler = sampler
    started = time.perf_counter()
    result = forecast_windows(forecaster, windows, windows.vital_names, config, progress=False)
    table, facts = result.table, result.facts
    seconds = time.perf_counter() - started
    h = windows.horizon_steps
    quantiles = np.stack(
        [
            table.column(quantile_column(q)).to_numpy().reshape(-1, h)
            for q in facts["quantile_levels"]
        ],
        axis=1,
    )
    return quantiles, seconds


def study_quantiles(samples: torch.Tensor | None, native: Any, levels: Any) -> np.ndarray:
    from vitalfm.engine.forecast import to_quantiles
    from vitalfm.models.base import Forecast

    if samples is not None:
        forecast = Forecast(median=samples[:, 0], samples=samples)
    else:
        forecast = Forecast(median=native[0][:, 0], quantiles=native[0], quantile_levels=native[1])
    return to_quantiles(forecast, levels).numpy()


def library_moirai(
    net: Any, windows: Any, args: argparse.Namespace, levels: Any, seed: int
) -> np.ndarray:
    """uni2ts's gluonts predictor, one ``predict`` per vital."""
    parts = []
    predictor = net.create_predictor(batch_size=args.batch_size, device="cpu")
    torch.manual_seed(seed)
    for vital in windows.vital_names:
        contexts = windows.context(vital, forecast_rows(windows, vital))
        forecasts = predictor.predict(dataset(contexts))
        samples = torch.from_numpy(np.stack([f.samples for f in forecasts]))
        parts.append(study_quantiles(samples, None, levels))
    return np.concatenate(parts)


def library_moirai2_predict(net: Any, windows: Any, levels: Any) -> np.ndarray:
    """``Moirai2Forecast.predict`` on numpy arrays, one call per vital."""
    native_levels = tuple(net.module.quantile_levels)
    parts = []
    for vital in windows.vital_names:
        contexts = windows.context(vital, forecast_rows(windows, vital))
        quantiles = torch.from_numpy(net.predict(series_from_first_value(contexts)))
        parts.append(study_quantiles(None, (quantiles, native_levels), levels))
    return np.concatenate(parts)


def pipeline_inputs(net: Any, contexts: np.ndarray, predictor: Any) -> dict[str, torch.Tensor]:
    entries = list(predictor.input_transform.apply(dataset(contexts), is_train=False))
    return {k: torch.as_tensor(np.stack([e[k] for e in entries])) for k in predictor.input_names}


def library_moirai2_pipeline(
    net: Any, windows: Any, args: argparse.Namespace, levels: Any
) -> np.ndarray:
    """The gluonts predictor's input pipeline + ``Moirai2Forecast.forward``, per batch."""
    native_levels = tuple(net.module.quantile_levels)
    predictor = net.create_predictor(batch_size=args.batch_size, device="cpu")
    parts = []
    for _, contexts in batches(windows, args.batch_size):
        with torch.no_grad():
            quantiles = net(**pipeline_inputs(net, contexts, predictor))
        parts.append(study_quantiles(None, (quantiles, native_levels), levels))
    return np.concatenate(parts)


def check_moirai(
    net: Any, windows: Any, args: argparse.Namespace, mine: np.ndarray, levels: Any
) -> dict[str, Any]:
    """The predictor, series by series under each series' own seed, draws the engine's paths
    (the engine's "library" sampler runs each series alone under its seed)."""
    from vitalfm.engine.forecast import series_seeds

    predictor = net.create_predictor(batch_size=args.batch_size, device="cpu")
    parts = []
    for vital in windows.vital_names:
        rows = forecast_rows(windows, vital)
        seeds = series_seeds(
            args.seed,
            windows.window_icustay_ids()[rows],
            windows.window_start_seconds()[rows],
            [vital] * len(rows),
        )
        contexts = windows.context(vital, rows)
        for context, seed in zip(contexts, seeds, strict=True):
            torch.manual_seed(int(seed))
            samples = np.stack([f.samples for f in predictor.predict(dataset(context[None]))])
            parts.append(study_quantiles(torch.from_numpy(samples), None, levels))
    reference = np.concatenate(parts)
    if not np.allclose(mine, reference, rtol=1e-6, atol=0):
        raise AssertionError("MOIRAI: engine and predictor paths differ for the same seeds")
    return {"allclose_same_seed": True, "max_abs_diff": float(np.max(np.abs(mine - reference)))}


def check_moirai2(
    net: Any, windows: Any, args: argparse.Namespace, mine: np.ndarray, levels: Any
) -> dict[str, Any]:
    pipeline = library_moirai2_pipeline(net, windows, args, levels)
    if not np.allclose(mine, pipeline, rtol=1e-5, atol=1e-4, equal_nan=True):
        raise AssertionError("Moirai-2: engine and input pipeline + forward differ")
    predicted = library_moirai2_predict(net, windows, levels)
    gap_free = np.concatenate(
        [
            np.isfinite(windows.context(v, forecast_rows(windows, v))).all(axis=1)
            for v in windows.vital_names
        ]
    )
    same = np.isclose(mine, predicted, rtol=1e-5, atol=1e-4, equal_nan=True).all(axis=(1, 2))
    if not same[gap_free].all():
        raise AssertionError(
            "Moirai-2: engine and Moirai2Forecast.predict differ on gap-free series"
        )
    return {
        "allclose_pipeline_forward_all_series": True,
        "max_abs_diff_pipeline": float(np.nanmax(np.abs(mine - pipeline))),
        "allclose_predict_gap_free_series": int(gap_free.sum()),
        "predict_differs_series_with_gaps": int((~same).sum()),
        "series_with_gaps": int((~gap_free).sum()),
    }


def compare_samplers(
    forecaster: Any, net: Any, windows: Any, args: argparse.Namespace, config: Any, levels: Any
) -> dict[str, Any]:
    """The fast sampler against the predictor's draws: accuracy, interval, and the median's
    difference next to the difference between two predictor runs (sampling noise)."""
    y = np.concatenate(
        [
            np.where(
                windows.horizon_observed_mask(v, rows := forecast_rows(windows, v)),
                windows.horizon(v, rows),
                np.nan,
            )
            for v in windows.vital_names
        ]
    )
    mid, low, high = (list(levels).index(q) for q in (0.5, 0.1, 0.9))
    fast = engine_forecast(forecaster, windows, config)[0]
    library = [library_moirai(net, windows, args, levels, seed) for seed in (0, 1)]
    scored = np.isfinite(y)

    def stats(q: np.ndarray) -> dict[str, float]:
        inside = (y >= q[:, low]) & (y <= q[:, high])
        return {
            "mae_vs_truth": float(np.mean(np.abs(q[:, mid] - y)[scored])),
            "mean_80pct_width": float(np.mean(q[:, high] - q[:, low])),
            "coverage_80pct": float(np.mean(inside[scored])),
        }

    return {
        "engine_fast": stats(fast),
        "library_predictor_seed0": stats(library[0]),
        "library_predictor_seed1": stats(library[1]),
        "mean_abs_median_difference": {
            "engine_fast_vs_library_seed0": float(
                np.mean(np.abs(fast[:, mid] - library[0][:, mid]))
            ),
            "library_seed0_vs_seed1 (noise)": float(
                np.mean(np.abs(library[0][:, mid] - library[1][:, mid]))
            ),
        },
    }


def bench(variant: str, shape: str, windows: Any, args: argparse.Namespace, tmp: Path) -> dict:
    from vitalfm.engine.forecast import ForecastConfig
    from vitalfm.models.base import ModelSource
    from vitalfm.models.moirai import MoiraiForecaster

    folder, source = checkpoint(variant, shape, args.seed, tmp, args.study)
    forecaster = MoiraiForecaster.load(ModelSource(path=str(folder)), torch.device("cpu"))
    forecaster.configure({"patch_size": args.patch_size})
    extra = {"patch_size": args.patch_size, "num_samples": args.num_samples}
    net = uni2ts_net(
        folder,
        windows.context_steps,
        windows.horizon_steps,
        **(extra if variant == "moirai" else {}),
    )
    config = ForecastConfig(
        num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed
    )
    levels = config.quantile_levels
    n = count_series(windows)
    if variant == "moirai":
        mine, _ = engine_forecast(forecaster, windows, config, sampler="library")
        check = check_moirai(net, windows, args, mine, levels)
    else:
        mine, _ = engine_forecast(forecaster, windows, config)
        check = check_moirai2(net, windows, args, mine, levels)

    def timed(run: Callable[[], Any]) -> Callable[[int], dict[str, Any]]:
        def method(repeat: int) -> dict[str, Any]:
            started = time.perf_counter()
            run()
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "series_per_s": n / seconds}

        return method

    methods = {"engine": timed(lambda: engine_forecast(forecaster, windows, config))}
    if variant == "moirai":
        methods["engine_library_sampler"] = timed(
            lambda: engine_forecast(forecaster, windows, config, sampler="library")
        )
        methods["library_predictor"] = timed(
            lambda: library_moirai(net, windows, args, levels, args.seed)
        )
    else:
        methods["library_predict"] = timed(lambda: library_moirai2_predict(net, windows, levels))
        methods["library_pipeline_forward"] = timed(
            lambda: library_moirai2_pipeline(net, windows, args, levels)
        )
    runs = timed_runs(f"{variant} {shape}", args.repeats, methods)
    if variant == "moirai":
        check["distribution"] = compare_samplers(forecaster, net, windows, args, config, levels)
    parameters = sum(p.numel() for p in forecaster.module.parameters())
    return {
        "variant": variant,
        "shape": shape,
        "checkpoint": source,
        "parameters": parameters,
        "patch_size": forecaster.patch_size,
        "series": n,
        "check": check,
        "runs": runs,
        "seconds": {k: summarise([r["seconds"] for r in v]) for k, v in runs.items()},
        "series_per_s": {k: summarise([r["series_per_s"] for r in v]) for k, v in runs.items()},
        "speedup": {
            k: summarise(
                [o["seconds"] / e["seconds"] for e, o in zip(runs["engine"], v, strict=True)]
            )
            for k, v in runs.items()
            if k != "engine"
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="the study's forecast batch")
    parser.add_argument("--num-samples", type=int, default=100, help="MOIRAI 1.x sample paths")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--shapes", nargs="+", default=["standin", "small"])
    parser.add_argument("--variants", nargs="+", default=["moirai", "moirai-2"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--study",
        type=Path,
        default=ROOT,
        help="folder whose results/ holds the study's test windows and stand-ins (default: "
        "this checkout)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/moirai_forecast.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    windows, windows_source = study_windows(args.quick, args.study)
    if args.quick:
        args.repeats = 1
        windows = subset(windows, 60)
    print(f"windows: {windows_source}, {len(windows)} windows", flush=True)
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for threads, variant, shape in itertools.product(args.threads, args.variants, args.shapes):
            torch.set_num_threads(threads)
            print(f"{variant} ({shape}), {threads} thread(s)", flush=True)
            result = bench(variant, shape, windows, args, Path(tmp))
            results.append({"threads": threads, **result})
            for name, s in result["speedup"].items():
                print(f"  engine vs {name}: x{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})")
    write_report(
        args.out,
        "moirai_forecast",
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
            "patch_size": args.patch_size,
            "threads": args.threads,
            "timed": "see the module docstring of bench/moirai_forecast.py",
        },
        total_seconds=time.perf_counter() - started,
        results=results,
    )


if __name__ == "__main__":
    main()
