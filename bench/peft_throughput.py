"""Benchmark: LoRA against full fine-tuning, and batched forecasting, for any model family.

For each model (a stand-in of a family, randomly initialised: throughput does not depend on
the weights' values) this measures, each in a fresh process so that peak memory is its own:

* ``train``: the engine's ``Trainer`` (the code the ``finetune`` rule runs) for ``--steps``
  steps of ``--batch-size`` (context 24, horizon 12: 6 h -> 3 h at 15 min) with LoRA r8 on the
  family's attention layers, and with full fine-tuning; validation and checkpoints are off
  except the Trainer's own first and last evaluation. Reported: ``samples_per_s`` from the
  median period between consecutive steps (batch creation, forward, backward, clipping,
  optimizer step; robust to the first steps' one-off costs and to load spikes), the
  Trainer's own ``train_samples_per_s`` over all steps, trainable parameters, and peak
  memory (CPU: peak RSS of the process, torch itself included; GPU: peak allocated);
* ``forecast``: ``forecast_windows`` (what the ``forecast`` rule runs) over the test windows
  (``results/windows/test.npz`` when the study has built it, else toy windows), zero-shot,
  ``--num-samples`` paths: series per second and wall time.

Usage::

    .venv/bin/python bench/peft_throughput.py                        # MOIRAI, Lag-Llama
    .venv/bin/python bench/peft_throughput.py --models chronos:chronos-2 --steps 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchfacts import ROOT, load, run_json_subprocess, write_report

DEFAULT_MODELS = [
    "moirai:moirai",
    "moirai:moirai-2",
    "lag_llama:lag-llama",
    "lag_llama:released",
]
METHODS = {
    "lora-r8": {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.05},
    "full": {"kind": "full"},
}


def _windows(split: str) -> Any:
    from vitalfm.data.windows import WindowSet
    from vitalfm.testing import toy_windows

    path = ROOT / "results" / "windows" / f"{split}.npz"
    if path.is_file():
        return WindowSet.load(path), str(path.relative_to(ROOT))
    return toy_windows(split, n_stays=40 if split == "train" else 12, seed=1), "toy windows"


def _released_lag_llama() -> Any:
    """Lag-Llama in the released shape (2.45 M parameters), random weights."""
    from vitalfm.models.base import ModelSource
    from vitalfm.models.lag_llama import LagLlamaForecaster, released_model_kwargs
    from vitalfm.models.lag_llama.network import LagLlamaConfig, LagLlamaNetwork

    torch.manual_seed(0)
    network = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(released_model_kwargs())).eval()
    hyper = {"context_length": network.config.context_length, "prediction_length": 12}
    return LagLlamaForecaster(network, ModelSource(path="released-shape"), hyper)


def _forecaster(family: str, standin: str, device: torch.device) -> Any:
    """A stand-in by name; ``lag_llama:released`` is Lag-Llama in the released shape."""
    from vitalfm.models.registry import forecaster_class

    if (family, standin) == ("lag_llama", "released"):
        forecaster = _released_lag_llama()
    else:
        forecaster = forecaster_class(family).standin(standin, horizon=12, seed=0)
    forecaster.module.to(device)
    return forecaster


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_training(family: str, standin: str, method: str, steps: int, batch: int) -> dict:
    from vitalfm.engine.train import Trainer, TrainingConfig
    from vitalfm.engine.training_data import WindowTrainingData
    from vitalfm.methods import MethodSpec
    from vitalfm.methods.adapting import adapt, parameter_counts

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train, source = _windows("train")
    validation, _ = _windows("validation")
    vitals = tuple(train.vital_names)
    data = WindowTrainingData(train, validation, vitals, seed=0, validation_max_series=256)
    forecaster = _forecaster(family, standin, device)
    spec = MethodSpec.from_config(method, METHODS[method])
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    trainable, total = parameter_counts(forecaster.module)
    config = TrainingConfig(
        max_steps=steps,
        batch_size=batch,
        learning_rate=1e-3,
        eval_every=steps + 1,
        checkpoint_every=steps + 1,
        patience=10**6,
    )
    # The period between consecutive batch draws is one whole step; its median skips the
    # first steps' one-off costs (lazy initialisation, optimizer state allocation).
    draws: list[float] = []
    draw_batch = data.train_batch

    def timed_batch(step: int, batch_size: int) -> Any:
        draws.append(time.perf_counter())
        return draw_batch(step, batch_size)

    data.train_batch = timed_batch  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(
            forecaster, data, config, device, Path(checkpoints), {"bench": 1}, progress=False
        )
        started = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - started
    median_step_s = statistics.median(b - a for a, b in itertools.pairwise(draws))
    return {
        "samples_per_s": batch / median_step_s,
        "median_step_s": median_step_s,
        "loop_samples_per_s": result.train_samples_per_s,
        "wall_s": wall,
        "steps": result.steps,
        "trainable": trainable,
        "total": total,
        "peak_memory_mb": _peak_memory_mb(device),
        "device": str(device),
        "windows": source,
    }


def measure_forecast(
    family: str, standin: str, num_samples: int, batch: int, vitals: list[str] | None
) -> dict:
    from vitalfm.engine.forecast import ForecastConfig, forecast_windows

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    test, source = _windows("test")
    forecaster = _forecaster(family, standin, device)
    config = ForecastConfig(num_samples=num_samples, batch_size=batch)
    started = time.perf_counter()
    chosen = tuple(vitals or test.vital_names)
    result = forecast_windows(forecaster, test, chosen, config, progress=False)
    table, facts = result.table, result.facts
    return {
        "series": facts["series"],
        "series_per_s": facts["series_per_s"],
        "wall_s": time.perf_counter() - started,
        "rows": table.num_rows,
        "num_samples": num_samples,
        "vitals": list(chosen),
        "peak_memory_mb": _peak_memory_mb(device),
        "device": str(device),
        "windows": source,
    }


def _in_subprocess(job: dict) -> dict:
    """Run one measurement in a fresh interpreter (own peak memory, no warm caches shared)."""
    return run_json_subprocess([__file__, "--job", json.dumps(job)], f"measurement {job}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="family:standin")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--forecast-batch-size", type=int, default=128)
    parser.add_argument(
        "--forecast-vitals", nargs="+", default=None, help="forecast only these (default all)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/peft_throughput.json")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.job:
        job = json.loads(args.job)
        if args.threads is None and job.get("threads"):
            torch.set_num_threads(job["threads"])
        kind = job.pop("kind")
        job.pop("threads", None)
        measure = measure_training if kind == "train" else measure_forecast
        print(json.dumps(measure(**job)))
        return

    results = []
    for entry in args.models:
        family, standin = entry.split(":")
        row: dict[str, Any] = {"family": family, "standin": standin, "train": {}}
        for method in METHODS:
            before = load()
            row["train"][method] = {
                **_in_subprocess(
                    {
                        "kind": "train",
                        "family": family,
                        "standin": standin,
                        "method": method,
                        "steps": args.steps,
                        "batch": args.batch_size,
                        "threads": args.threads,
                    }
                ),
                "load_before": before,
            }
        lora, full = row["train"]["lora-r8"], row["train"]["full"]
        row["lora_over_full_throughput"] = lora["samples_per_s"] / full["samples_per_s"]
        row["forecast"] = _in_subprocess(
            {
                "kind": "forecast",
                "family": family,
                "standin": standin,
                "num_samples": args.num_samples,
                "batch": args.forecast_batch_size,
                "vitals": args.forecast_vitals,
                "threads": args.threads,
            }
        )
        results.append(row)
        print(
            f"{entry}: LoRA {lora['samples_per_s']:.0f} vs full "
            f"{full['samples_per_s']:.0f} samples/s "
            f"({row['lora_over_full_throughput']:.2f}x), peak {lora['peak_memory_mb']:.0f} vs "
            f"{full['peak_memory_mb']:.0f} MB; forecast {row['forecast']['series_per_s']:.0f} "
            "series/s",
            flush=True,
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("job", "out")}
    write_report(args.out, "peft_throughput", settings, results=results)


if __name__ == "__main__":
    main()
