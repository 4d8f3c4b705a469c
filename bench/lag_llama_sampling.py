"""Benchmark: Lag-Llama sampling with the KV cache against recomputing every token.

A Lag-Llama of the released shape (8 layers, 9 heads x 16, 2.45 M parameters) with random
weights (speed does not depend on the weights; the released file is not needed) forecasts
vital-like series (level + slow wave + noise, 10 % missing, on the study's 15-minute grid
with calendar times) for a 3 h horizon (12 steps), ``--samples`` paths per series:

* ``cached``: ``LagLlamaForecaster.predict`` with ``use_kv_cache: true`` (the default): the
  context is encoded once per series, then one token per path and step;
* ``recomputed``: ``use_kv_cache: false``: every step runs the whole token sequence of every
  path again (upstream's path, with the scaler fixed over the horizon as in ours).

Rows: the default grid (6 h context = 24 points; the model sees its trained 32 tokens, the
first 8 left-padded) and a longer context (24 h = 96 points, option ``context_length: 96``).

Both methods run on the same series with the same torch seed; before any timing is reported
the script compares their samples (same seed: equal up to float rounding) and their 5/50/95 %
quantiles, next to the quantile differences between two seeds of the cached path (the
sampling noise). Recomputing is slow on CPU, so both methods are timed on the first
``--compare-series`` series (the speed-up is measured at equal work), and the cached path is
also timed on all ``--series`` series, the study's forecast batch. Methods alternate on each
repeat; the load average is recorded around each run. Usage:

    .venv/bin/python bench/lag_llama_sampling.py            # default, about 12 minutes
    .venv/bin/python bench/lag_llama_sampling.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchfacts import load, summarise, write_report

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 15 * 60
HORIZON = 12  # 3 h at 15 min
ROWS = (
    {"name": "6 h context (grid default)", "points": 24, "context_length": None},
    {"name": "24 h context", "points": 96, "context_length": 96},
)
LEVELS = (0.05, 0.5, 0.95)


def vital_like(series: int, points: int, seed: int) -> tuple[torch.Tensor, Any]:
    from vitalfm.models.base import TimeAxis

    rng = np.random.default_rng(seed)
    t = np.arange(points)
    level = rng.normal(85, 12, (series, 1))
    wave = 6 * np.sin(
        2 * np.pi * t / rng.uniform(20, 60, (series, 1)) + rng.uniform(0, 6, (series, 1))
    )
    values = (level + wave + rng.normal(0, 1.5, (series, points))).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    start_s = 1_600_000_000 + rng.integers(0, 365 * 96, series) * STEP_S
    return torch.from_numpy(values), TimeAxis(start_s.astype(np.int64), STEP_S)


def released_shape() -> Any:
    from vitalfm.models.base import ModelSource
    from vitalfm.models.lag_llama import LagLlamaForecaster, released_model_kwargs
    from vitalfm.models.lag_llama.network import LagLlamaConfig, LagLlamaNetwork

    torch.manual_seed(0)
    network = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(released_model_kwargs()))
    return LagLlamaForecaster(network.eval(), ModelSource(path="random weights"), {})


def sample(
    forecaster: Any, context: torch.Tensor, axis: Any, samples: int, seed: int
) -> tuple[torch.Tensor, dict[str, float]]:
    before = load()
    torch.manual_seed(seed)
    started = time.perf_counter()
    out = forecaster.predict(context, HORIZON, samples, time=axis).samples
    seconds = time.perf_counter() - started
    return out, {"seconds": seconds, "load_before": before, "load_after": load()}


def quantile_gap(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Mean |quantile difference| over series and steps, per level, relative to the spread."""
    levels = torch.tensor(LEVELS, dtype=torch.float64)
    qa = torch.quantile(a.double(), levels, dim=1)
    qb = torch.quantile(b.double(), levels, dim=1)
    spread = (qa[-1] - qa[0]).abs().mean()
    return {
        f"q{level:g}": float((qa[i] - qb[i]).abs().mean() / spread)
        for i, level in enumerate(LEVELS)
    }


def bench_row(forecaster: Any, row: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    options = {} if row["context_length"] is None else {"context_length": row["context_length"]}
    context, axis = vital_like(args.series, row["points"], seed=args.seed)
    small, small_axis = context[: args.compare_series], axis[: args.compare_series]
    methods = {"cached": True, "recomputed": False}

    def configure(cached: bool) -> None:
        forecaster.configure({**options, "use_kv_cache": cached})

    for cached in methods.values():  # warm-up
        configure(cached)
        forecaster.predict(small[:2], HORIZON, 2, time=small_axis[:2])

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods) if repeat % 2 == 0 else list(methods)[::-1]
        for name in order:
            configure(methods[name])
            samples, facts = sample(forecaster, small, small_axis, args.samples, args.seed + repeat)
            runs[name].append(facts)
            outputs[name].append(samples)
            print(f"    {name}: {facts['seconds']:.2f} s", flush=True)
    cached, recomputed = outputs["cached"][0], outputs["recomputed"][0]
    difference = (cached - recomputed).abs()
    tolerance = 1e-3 * (1 + recomputed.abs())
    agreement = {
        "max_abs_difference": float(difference.max()),
        "median_abs_difference": float(difference.median()),
        "fraction_within_1e-3_relative": float((difference <= tolerance).float().mean()),
        "quantile_gap_same_seed": quantile_gap(cached, recomputed),
    }
    if len(outputs["cached"]) > 1:
        agreement["quantile_gap_cached_seed0_vs_seed1 (noise)"] = quantile_gap(
            outputs["cached"][0], outputs["cached"][1]
        )
    if not agreement["fraction_within_1e-3_relative"] > 0.999:
        raise SystemExit(f"cached and recomputed samples disagree: {agreement}")

    configure(True)
    full = [
        sample(forecaster, context, axis, args.samples, args.seed + r)[1]
        for r in range(args.repeats)
    ]
    seconds = {name: summarise([r["seconds"] for r in v]) for name, v in runs.items()}
    return {
        "row": row["name"],
        "context_points": row["points"],
        "tokens": forecaster.context_length,
        "rope_scaling": forecaster.rope_scaling(HORIZON).to_dict(),
        "horizon": HORIZON,
        "samples": args.samples,
        "compare_series": len(small),
        "compare_paths": len(small) * args.samples,
        "runs": runs,
        "seconds": seconds,
        "speedup": summarise(
            [
                r["seconds"] / c["seconds"]
                for c, r in zip(runs["cached"], runs["recomputed"], strict=True)
            ]
        ),
        "agreement": agreement,
        "cached_full_batch": {
            "series": len(context),
            "paths": len(context) * args.samples,
            "runs": full,
            "seconds": summarise([r["seconds"] for r in full]),
            "paths_per_s": len(context)
            * args.samples
            / summarise([r["seconds"] for r in full])["median"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few series, 1 repeat")
    parser.add_argument("--series", type=int, default=128, help="the study's forecast batch")
    parser.add_argument("--compare-series", type=int, default=8)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/lag_llama_sampling.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.quick:
        args.series, args.compare_series, args.samples, args.repeats = 8, 2, 20, 1
    torch.set_num_threads(args.threads)
    forecaster = released_shape()
    results, started = [], time.perf_counter()
    for row in ROWS:
        print(row["name"], flush=True)
        result = bench_row(forecaster, row, args)
        results.append(result)
        s = result["speedup"]
        print(
            f"  speed-up x{s['median']:.1f} (range {s['min']:.1f}-{s['max']:.1f}); cached, "
            f"{result['cached_full_batch']['paths']} paths: "
            f"{result['cached_full_batch']['seconds']['median']:.2f} s",
            flush=True,
        )
    write_report(
        args.out,
        "lag_llama_sampling",
        {
            "quick": args.quick,
            "model": "released shape (8 L, 9 heads x 16), random weights, seed 0",
            "series": args.series,
            "compare_series": args.compare_series,
            "samples": args.samples,
            "horizon": HORIZON,
            "step_minutes": STEP_S // 60,
            "repeats": args.repeats,
            "threads": args.threads,
            "timed": "see the module docstring of bench/lag_llama_sampling.py",
        },
        total_seconds=time.perf_counter() - started,
        results=results,
    )


if __name__ == "__main__":
    main()
