"""Benchmark: the engine on a GPU, in a few minutes, for models of the released shapes (bf16).

One prepared script for a lent GPU machine (issue 15, "GPU"). Models are built in their
released shapes with random weights by ``bench/paper_scale.py``'s builder (speed does not
depend on the weights; nothing is downloaded). It measures, in this order:

1. ``training``: the engine's ``Trainer`` (bf16 autocast on GPU, what the ``finetune`` rule
   runs) with LoRA r8 and full fine-tuning, at the paper's batch, context and horizon (64,
   24 -> 12): samples/s from the median period between steps, and model FLOP utilisation =
   model FLOPs per step (``torch.utils.flop_counter``: matmuls, attention) / step time /
   the device's bf16 dense peak (``--peak-tflops``, else looked up from the device name).
   Goal (issue 15): >= 25 % on the Chronos-T5-base shape. Methods alternate on each repeat.
2. ``memory``: peak GPU memory (``torch.cuda.max_memory_allocated``) of full fine-tuning of
   the Chronos-T5-base shape against the batch size (an out-of-memory batch is recorded as
   such); ``forecast_memory``: the same for its forecasting (100 sample paths per series,
   whose KV cache grows with series x paths) against the number of series per call (the
   paper's ``forecast.batch_size`` is 256).
3. ``forecast``: the engine's ``forecast_windows`` against the library's own batched call
   (``pipeline.predict`` on all contexts of a vital at once, as ``bench/chronos_forecast.py``
   calls it) for Chronos-Bolt-base and Chronos-2, both loaded from the same checkpoint saved
   in the released format. The medians are asserted equal (``np.allclose``) BEFORE anything
   is timed; the two alternate on each repeat; series/s of each.
4. ``device_claims``: two processes started at once each claim a device with the project's
   ``vitalfm.engine.devices.claim_device`` and hold it for a few seconds. With two or more
   visible GPUs they must get different ones; with one, the second waits until the first
   releases it (and, with a short ``wait_s``, fails with DeviceError as documented).

Every run records the device, the load average around each timed run and the versions.
``--device cpu --quick`` runs every part end to end on CPU with the stand-in shapes (the
device claims on simulated devices), to check the script without a GPU; only a run on a GPU
writes ``bench/results/gpu.json``. Usage::

    .venv/bin/python bench/gpu.py                        # on a GPU machine, a few minutes
    .venv/bin/python bench/gpu.py --device cpu --quick   # smoke run on CPU (~1-2 min)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchfacts import ROOT, adapt_for_timed_training, load, summarise, write_report

OUT = ROOT / "bench" / "results" / "gpu.json"
CONTEXT, HORIZON = 24, 12
VITALS = ("heart_rate", "mbp", "resp_rate")
#: bf16 dense peak TFLOP/s by device name (vendor data sheets, without sparsity).
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}
LORA = {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.05}
METHODS = {"lora-r8": LORA, "full": {"kind": "full"}}


def peak_tflops(device: Any, override: float | None) -> float | None:
    """The device's bf16 dense peak: ``override``, else by its name; None when unknown."""
    if override:
        return override
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return value
    return None


def device_facts(device: Any) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            name=props.name,
            memory_gb=props.total_memory / 1e9,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            visible_devices=torch.cuda.device_count(),
        )
    return facts


def build(model: str, quick: bool, device: Any) -> Any:
    """``model`` in its released shape (``paper_scale.SHAPES``); with ``quick`` the family's
    stand-in instead (tiny, for CPU smoke runs)."""
    import torch
    from paper_scale import SHAPES, build_forecaster

    from vitalfm.models.registry import forecaster_class

    shape = SHAPES[model]
    if quick:
        torch.manual_seed(0)
        forecaster = forecaster_class(shape.family).standin(shape.variant, HORIZON, 0)
    else:
        forecaster = build_forecaster(model, {})
    forecaster.module.to(device)
    return forecaster


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. training throughput and MFU -------------------------------------------------------


def training_data(quick: bool) -> Any:
    from vitalfm.engine.training_data import WindowTrainingData
    from vitalfm.testing import toy_windows

    train = toy_windows("train", n_stays=8 if quick else 64, vital_names=VITALS, stride_steps=1)
    validation = toy_windows("validation", n_stays=1, vital_names=VITALS, seed=1, stride_steps=12)
    return WindowTrainingData(train, validation, VITALS, seed=0, validation_max_series=8)


def train_steps(
    forecaster: Any, data: Any, method: str, batch: int, steps: int, device: Any
) -> dict[str, Any]:
    """Adapt a copy of ``forecaster``'s module and run ``steps`` + 2 Trainer steps; the
    median period between batch draws after the first (warm-up) step is one step."""
    import torch

    from vitalfm.engine.train import Trainer
    from vitalfm.methods import MethodSpec

    spec = MethodSpec.from_config(method, METHODS[method])
    config, trainable, total = adapt_for_timed_training(forecaster, spec, steps + 2, batch)
    draws: list[float] = []
    draw = data.train_batch

    def timed(step: int, size: int) -> Any:
        draws.append(time.perf_counter())  # the previous step ended with a sync (its loss)
        return draw(step, size)

    data.train_batch = timed
    before = load()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        with tempfile.TemporaryDirectory() as folder:
            Trainer(forecaster, data, config, device, Path(folder), {}, progress=False).fit()
    finally:
        data.train_batch = draw
    step_s = statistics.median(b - a for a, b in itertools.pairwise(draws[1:]))
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return {
        "step_s": step_s,
        "samples_per_s": batch / step_s,
        "trainable": trainable,
        "total": total,
        "peak_memory_gb": peak,
        "load_before": before,
        "load_after": load(),
    }


def step_flops(forecaster: Any, data: Any, batch: int, device: Any) -> float:
    """Model FLOPs of one training step (forward + backward) under the Trainer's autocast."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sample = data.train_batch(10**6, batch).to(device)
    counter = FlopCounterMode(display=False)
    forecaster.module.train()
    with counter, torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        loss = forecaster.loss(sample).float()
    with counter:
        loss.backward()
    forecaster.module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_training(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    import copy

    data = training_data(args.quick)
    peak = peak_tflops(device, args.peak_tflops)
    rows = []
    for model in args.train_models:
        base = build(model, args.quick, device)
        pristine = base.module
        result: dict[str, Any] = {
            "model": model,
            "shape": "stand-in" if args.quick else "released",
            "parameters": sum(p.numel() for p in pristine.parameters()),
            "batch": args.batch_size,
            "runs": {m: [] for m in METHODS},
        }
        for repeat in range(args.repeats):
            order = list(METHODS) if repeat % 2 == 0 else list(METHODS)[::-1]
            for method in order:
                base.set_module(copy.deepcopy(pristine))
                facts = train_steps(base, data, method, args.batch_size, args.steps, device)
                if repeat == 0:
                    facts["flops_per_step"] = step_flops(base, data, args.batch_size, device)
                result["runs"][method].append(facts)
                print(
                    f"  {model} {method}: {facts['samples_per_s']:.0f} samples/s "
                    f"(load {facts['load_before']:.1f})",
                    flush=True,
                )
            base.set_module(pristine)
        for method, runs in result["runs"].items():
            step_s = statistics.median(r["step_s"] for r in runs)
            flops = runs[0]["flops_per_step"]
            result[method] = {
                "samples_per_s": args.batch_size / step_s,
                "step_s": summarise([r["step_s"] for r in runs]),
                "flops_per_step": flops,
                "achieved_tflops": flops / step_s / 1e12,
                "mfu": flops / step_s / (peak * 1e12) if peak else None,
                "trainable": runs[0]["trainable"],
                "peak_memory_gb": max((r["peak_memory_gb"] or 0) for r in runs) or None,
            }
        result["peak_bf16_tflops"] = peak
        rows.append(result)
        del base, pristine
    return rows


# --- 2. peak memory against batch size ----------------------------------------------------


def bench_memory(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    import copy

    import torch

    data = training_data(args.quick)
    base = build(args.memory_model, args.quick, device)
    pristine = base.module
    rows = []
    for batch in args.memory_batches:
        base.set_module(copy.deepcopy(pristine))
        try:
            facts = train_steps(base, data, "full", batch, 2, device)
            rows.append(
                {
                    "model": args.memory_model,
                    "method": "full",
                    "batch": batch,
                    "peak_memory_gb": facts["peak_memory_gb"],
                    "samples_per_s": facts["samples_per_s"],
                }
            )
        except Exception as err:  # the Trainer turns an OOM into a TrainingError
            rows.append({"model": args.memory_model, "batch": batch, "error": str(err)[:200]})
        base.set_module(pristine)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  memory at batch {batch}: {rows[-1]}", flush=True)
    return rows


def bench_forecast_memory(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    """Peak memory of Chronos-T5's sampling (100 paths per series: its KV cache grows with
    series x paths) against the forecast batch, the bound on ``forecast.batch_size``."""
    import torch
    from paper_scale import vital_series

    forecaster = build(args.memory_model, args.quick, device)
    rows = []
    for series in args.forecast_memory_series:
        context, axis = vital_series(series, seed=0)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            _sync(device)
            started = time.perf_counter()
            forecaster.predict(context, HORIZON, args.num_samples, time=axis)
            _sync(device)
            seconds = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
            rows.append(
                {
                    "model": args.memory_model,
                    "series": series,
                    "num_samples": args.num_samples,
                    "peak_memory_gb": peak,
                    "series_per_s": series / seconds,
                }
            )
        except torch.OutOfMemoryError as err:
            rows.append({"model": args.memory_model, "series": series, "error": str(err)[:200]})
        print(f"  forecast memory at {series} series: {rows[-1]}", flush=True)
    return rows


# --- 3. forecasting: engine against the library's batched call -------------------------------


def forecast_model(
    model: str, windows: Any, args: argparse.Namespace, device: Any
) -> dict[str, Any]:
    """Engine against the library's batched call for one model: equal medians, then timed."""
    import numpy as np
    import torch
    from chronos import BaseChronosPipeline
    from chronos_forecast import count_series, forecast_rows, timed_runs

    from vitalfm.engine.forecast import ForecastConfig, forecast_windows
    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos import ChronosForecaster

    n = count_series(windows)
    config = ForecastConfig(num_samples=args.num_samples, batch_size=args.forecast_batch_size)
    with tempfile.TemporaryDirectory() as folder:
        build(model, args.quick, torch.device("cpu")).save_pretrained(Path(folder))
        forecaster = ChronosForecaster.load(ModelSource(path=folder), device)
        pipeline = BaseChronosPipeline.from_pretrained(
            folder, device_map=str(device), dtype=torch.float32
        )
    mid = [float(q) for q in pipeline.quantiles].index(0.5)

    def engine(repeat: int) -> dict[str, Any]:
        _sync(device)
        started = time.perf_counter()
        table = forecast_windows(forecaster, windows, VITALS, config, progress=False).table
        _sync(device)
        seconds = time.perf_counter() - started
        median = table.column("median").to_numpy().reshape(-1, HORIZON)
        return {"seconds": seconds, "series_per_s": n / seconds, "median": median}

    def library(repeat: int) -> dict[str, Any]:
        parts = []
        _sync(device)
        started = time.perf_counter()
        for vital in VITALS:
            contexts = torch.from_numpy(windows.context(vital, forecast_rows(windows, vital)))
            if forecaster.variant == "chronos-bolt":
                q = pipeline.predict(contexts, prediction_length=HORIZON)
            else:
                q = torch.cat(
                    pipeline.predict(contexts[:, None, :], prediction_length=HORIZON), dim=0
                )
            parts.append(q[:, mid].float().cpu().numpy())
        _sync(device)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "series_per_s": n / seconds, "median": np.concatenate(parts)}

    ours, theirs = engine(-1)["median"], library(-1)["median"]  # warm-up and the check
    check = {
        "allclose": bool(np.allclose(ours, theirs, rtol=args.rtol, atol=args.atol)),
        "rtol": args.rtol,
        "atol": args.atol,
        "max_abs_diff_median": float(np.max(np.abs(ours - theirs))),
    }
    if not check["allclose"]:
        raise AssertionError(f"{model}: engine and library medians differ: {check}")
    runs = timed_runs(model, args.repeats, {"engine": engine, "library_batched": library})
    for method_runs in runs.values():
        for run in method_runs:
            run.pop("median")
    return {
        "model": model,
        "shape": "stand-in" if args.quick else "released",
        "variant": forecaster.variant,
        "series": n,
        "batch_size": args.forecast_batch_size,
        "identical_forecasts": check,
        "runs": runs,
        "series_per_s": {
            k: statistics.median(r["series_per_s"] for r in v) for k, v in runs.items()
        },
        "engine_over_library": summarise(
            [
                lib["seconds"] / eng["seconds"]
                for eng, lib in zip(runs["engine"], runs["library_batched"], strict=True)
            ]
        ),
    }


def bench_forecast(args: argparse.Namespace, device: Any) -> list[dict[str, Any]]:
    from vitalfm.testing import toy_windows

    stays = 6 if args.quick else 2000
    windows = toy_windows("test", n_stays=stays, vital_names=VITALS, stride_steps=4)
    rows = []
    for model in args.forecast_models:
        rows.append(forecast_model(model, windows, args, device))
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
    return rows


# --- 4. two concurrent jobs claim devices -------------------------------------------------

CLAIM_CODE = """
import json, sys, time
from vitalfm.engine.devices import DeviceError, claim_device
lock_dir, hold_s, wait_s, count = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
started = time.perf_counter()
try:
    claim = claim_device(
        "auto", lock_dir=lock_dir, wait_s=wait_s, poll_s=0.1,
        device_count=None if count == "real" else int(count),
    )
except DeviceError as err:
    print(json.dumps({"error": str(err).splitlines()[0][:160],
                      "waited_s": time.perf_counter() - started}))
    raise SystemExit(0)
waited = time.perf_counter() - started
time.sleep(hold_s)
claim.release()
print(json.dumps({"device": str(claim.device), "reason": claim.reason, "waited_s": waited}))
"""


def claim_pair(count: str, hold_s: float, wait_s: float) -> list[dict[str, Any]]:
    """Start two claiming processes at once (the second 0.3 s later) on a fresh lock folder.
    ``count`` is ``real`` (the devices torch sees, environment as it is) or a number of
    simulated devices (``claim_device``'s ``device_count``, as the tests use; then without
    ``CUDA_VISIBLE_DEVICES``, which would pin a single device without a lock)."""
    env = dict(os.environ)
    if count != "real":
        env.pop("CUDA_VISIBLE_DEVICES", None)
    with tempfile.TemporaryDirectory() as locks:
        argv = [sys.executable, "-c", CLAIM_CODE, locks, str(hold_s), str(wait_s), count]
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        time.sleep(0.3)
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        outs = [p.communicate(timeout=120)[0] for p in (first, second)]
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def bench_claims(args: argparse.Namespace, device: Any) -> dict[str, Any]:
    """Two jobs at once: different devices when two or more are visible; with one, the
    second waits for the first (or, with a short wait, fails with DeviceError)."""
    import torch

    visible = torch.cuda.device_count() if device.type == "cuda" else 0
    hold = 2.0 if args.quick else 4.0
    result: dict[str, Any] = {
        "visible_gpus": visible,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    many = "real" if visible >= 2 else "2"
    pair = claim_pair(many, hold, 30.0)
    result["two_devices"] = {
        "simulated": many != "real",
        "claims": pair,
        "different_devices": pair[0].get("device") != pair[1].get("device"),
    }
    # one device, by lock (simulated, so that a pinned CUDA_VISIBLE_DEVICES cannot bypass it)
    waits = claim_pair("1", hold, 30.0)
    fails = claim_pair("1", hold, 0.5)
    result["one_device"] = {
        "simulated": True,
        "second_waits": waits,
        "second_waited_until_release": waits[1].get("device") == waits[0].get("device")
        and waits[1]["waited_s"] >= hold * 0.5,
        "short_wait": fails,
        "second_fails_with_device_error": "error" in fails[1],
    }
    if visible == 1:
        # what the real single GPU does: by lock, or, where CUDA_VISIBLE_DEVICES pins it (a
        # scheduler's grant), both jobs use it without a lock, as devices.py documents
        result["one_real_device"] = claim_pair("real", hold, 30.0)
    result["ok"] = bool(
        result["two_devices"]["different_devices"]
        and result["one_device"]["second_waited_until_release"]
        and result["one_device"]["second_fails_with_device_error"]
    )
    print(f"  device claims: {json.dumps(result)}", flush=True)
    return result


# --- the driver ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="stand-in shapes, few steps")
    parser.add_argument(
        "--train-models", nargs="+", default=["chronos-t5-base", "chronos-t5-small"]
    )
    parser.add_argument("--forecast-models", nargs="+", default=["chronos-bolt-base", "chronos-2"])
    parser.add_argument("--memory-model", default="chronos-t5-base")
    parser.add_argument("--memory-batches", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--forecast-memory-series", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batch-size", type=int, default=64, help="training (the paper's)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--forecast-batch-size", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak")
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--skip", nargs="*", default=[], help="parts to skip")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --device cpu --quick for a smoke run")
    if args.quick:
        args.steps, args.repeats, args.batch_size = 3, 1, 8
        args.train_models, args.forecast_models = ["chronos-t5-base"], ["chronos-bolt-base"]
        args.memory_batches = [4, 8]
        args.forecast_memory_series = [2, 4]
    if device.type == "cpu":
        torch.set_num_threads(2)
    started = time.perf_counter()
    report: dict[str, Any] = {"device_facts": device_facts(device)}
    parts = {
        "training": bench_training,
        "memory": bench_memory,
        "forecast_memory": bench_forecast_memory,
        "forecast": bench_forecast,
        "device_claims": bench_claims,
    }
    for name, part in parts.items():
        if name in args.skip:
            continue
        print(f"{name}:", flush=True)
        report[name] = part(args, device)
    goal = None
    for row in report.get("training", []):
        if row["model"] == "chronos-t5-base" and not args.quick:
            goal = {"mfu_at_least": 0.25, "full": row["full"]["mfu"], "lora": row["lora-r8"]["mfu"]}
    report["goal_mfu_chronos_t5_base"] = goal
    on_gpu = device.type == "cuda"
    out = args.out or (
        OUT if on_gpu and not args.quick else Path(tempfile.gettempdir()) / "gpu_smoke.json"
    )
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    write_report(out, "gpu", settings, total_seconds=time.perf_counter() - started, **report)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
