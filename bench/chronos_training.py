"""Benchmark: LoRA fine-tuning of Chronos-2, the engine's Trainer against ``Chronos2Pipeline.fit``.

Both sides train the SAME released-format Chronos-2 checkpoint (saved with ``save_pretrained``
into a temporary folder and loaded from there by each side), with the same LoRA config (one
``peft.LoraConfig`` for ``fit``; a ``MethodSpec`` with the same rank, alpha, dropout and
target modules for :func:`vitalfm.methods.adapting.adapt`, which builds an identical
``LoraConfig``), the same optimiser settings (AdamW, lr, no weight decay, linear decay without
warm-up, gradient clipping at 1.0), batch size, context length, prediction length, number of
steps and the same series. The engine's data object crops (context, horizon) windows the way
``Chronos2Dataset`` does in training mode: a random series, a random cut in
``[min_past, length - horizon]``, the last ``context`` points before it (left-padded with NaN
when the cut is early) and the ``horizon`` points after it.

Validation and checkpoints are off on both sides where they can be: ``fit`` gets no
``validation_inputs`` (so ``eval_strategy="no"``, ``save_strategy="no"``); the engine's
Trainer gets ``eval_every`` and ``checkpoint_every`` above ``max_steps``. What remains and is
NOT in the step timings: the engine's Trainer still evaluates once at step 0 and once at the
last step and writes one final checkpoint; ``fit`` deep-copies the model, wraps it with peft
and saves the adapter at the end. Progress bars are off on both sides.

What is timed, per run (see ``timings`` in the JSON):

* ``loop_samples_per_s``: engine: the Trainer's own ``train_samples_per_s`` (sum of its step
  times: batch creation, forward, backward, clipping, optimiser and scheduler step);
  library: ``steps * batch / (on_train_end - on_train_begin)`` from a TrainerCallback (the
  HF loop: dataloader, forward, backward, clipping, optimiser, callbacks, logging).
* ``median_step_s``: median period between consecutive steps (engine: calls of
  ``train_batch``; library: ``on_step_end`` events), robust to load spikes on a shared machine.
* ``wall_s``: engine: ``adapt`` + Trainer construction + ``Trainer.fit`` (with the two
  evaluations and the final checkpoint); library: the whole ``fit`` call. Model loading from
  disk is excluded on both sides.

Engine and library runs alternate (order swapped on every repeat) so that load on the shared
machine hits both alike; the load average is recorded around each run. Usage:

    .venv/bin/python bench/chronos_training.py            # default, a few minutes
    .venv/bin/python bench/chronos_training.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchfacts import load, summarise, write_report

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("self_attention.q", "self_attention.k", "self_attention.v", "self_attention.o")
# A larger Chronos-2 shape, built the same way as the stand-in (released amazon/chronos-2 is
# d_model 768, 12 layers).
LARGER_SHAPE = dict(d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_heads=4)


@dataclass(frozen=True)
class Case:
    model: str  # "standin" or "d256-4L"
    context: int
    horizon: int
    batch_size: int
    steps: int


@dataclass(frozen=True)
class Lora:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05


# --- model and data --------------------------------------------------------------------------


def save_model(name: str, horizon: int, seed: int, directory: Path) -> dict[str, Any]:
    """Write a Chronos-2 checkpoint in the released format; returns its shape."""
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    from vitalfm.models.chronos import ChronosForecaster

    standin = ChronosForecaster.standin("chronos-2", horizon, seed)
    module = standin.module
    if name != "standin":
        torch.manual_seed(seed)
        config = Chronos2CoreConfig.from_dict({**module.config.to_dict(), **LARGER_SHAPE})
        module = Chronos2Model(config)
    module.save_pretrained(directory)
    cfg = module.config
    return {
        "name": name,
        "d_model": cfg.d_model,
        "num_layers": cfg.num_layers,
        "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads,
        "parameters": sum(p.numel() for p in module.parameters()),
    }


def make_series(n: int, length: int, seed: int, missing: float = 0.05) -> list[np.ndarray]:
    """Vital-like univariate series: a level, a slow wave, a random walk and some gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    out = []
    for _ in range(n):
        level = rng.normal(85, 12)
        wave = rng.uniform(2, 8) * np.sin(2 * np.pi * t / rng.uniform(30, 120) + rng.uniform(0, 6))
        walk = np.cumsum(rng.normal(0, 0.6, length))
        values = (level + wave + walk + rng.normal(0, 1.0, length)).astype(np.float32)
        values[rng.random(length) < missing] = np.nan
        out.append(values)
    return out


class CropData:
    """The engine's TrainingData over a list of series, cropped like ``Chronos2Dataset``
    (training mode): batch ``step`` is a pure function of (seed, step), as the engine needs."""

    def __init__(
        self, series: list[np.ndarray], context: int, horizon: int, min_past: int, seed: int
    ) -> None:
        lengths = {len(s) for s in series}
        if len(lengths) != 1:
            raise ValueError("CropData expects series of one length")
        self.values = np.stack(series)  # [N, L]
        self.length = lengths.pop()
        self.context_steps, self.horizon_steps = context, horizon
        self.min_past, self.seed = min_past, seed
        self.calls: list[float] = []  # perf_counter at each train_batch: step periods
        self.validation = self._crops(np.random.default_rng([seed, 1]), 64)

    def _crops(self, rng: np.random.Generator, n: int) -> Any:
        from vitalfm.models.base import SeriesBatch

        c, h = self.context_steps, self.horizon_steps
        rows = rng.integers(0, len(self.values), n)
        cuts = rng.integers(self.min_past, self.length - h + 1, n)
        # positions cut-c .. cut+h-1; those before the series start are left padding (NaN)
        positions = cuts[:, None] + np.arange(-c, h)
        crops = self.values[rows[:, None], np.clip(positions, 0, None)]
        crops[positions < 0] = np.nan
        return SeriesBatch(
            torch.from_numpy(np.ascontiguousarray(crops[:, :c])),
            torch.from_numpy(np.ascontiguousarray(crops[:, c:])),
        )

    def train_batch(self, step: int, batch_size: int) -> Any:
        self.calls.append(time.perf_counter())
        return self._crops(np.random.default_rng([self.seed, 0, step]), batch_size)

    def validation_batches(self, batch_size: int) -> Any:
        yield self.validation

    def describe(self) -> dict[str, int | str]:
        return {"source": "bench series", "train_series": len(self.values)}


# --- the two runs ----------------------------------------------------------------------------


def run_engine(
    model_dir: Path, series: list[np.ndarray], case: Case, lora: Lora, lr: float, seed: int
) -> dict[str, Any]:
    from vitalfm.engine.train import Trainer, TrainingConfig
    from vitalfm.methods import MethodSpec
    from vitalfm.methods.adapting import adapt, parameter_counts
    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos import ChronosForecaster

    device = torch.device("cpu")
    forecaster = ChronosForecaster.load(ModelSource(path=str(model_dir)), device)
    data = CropData(series, case.context, case.horizon, min_past=case.horizon, seed=seed)
    spec = MethodSpec(
        name="lora",
        kind="lora",
        rank=lora.rank,
        alpha=lora.alpha,
        dropout=lora.dropout,
        target_modules=TARGETS,
    )
    config = TrainingConfig(
        max_steps=case.steps,
        batch_size=case.batch_size,
        learning_rate=lr,
        weight_decay=0.0,
        warmup_fraction=0.0,
        schedule="linear",
        grad_clip_norm=1.0,
        eval_every=case.steps + 1,
        checkpoint_every=case.steps + 1,
        seed=seed,
        validation_batch_size=64,
    )
    with tempfile.TemporaryDirectory() as tmp:
        load_before = load()
        started = time.perf_counter()
        forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
        trainer = Trainer(
            forecaster, data, config, device, Path(tmp) / "ckpt", fingerprint={}, progress=False
        )
        setup_s = time.perf_counter() - started
        result = trainer.fit()
        wall = time.perf_counter() - started
    trainable, total = parameter_counts(forecaster.module)
    periods = np.diff(data.calls)
    return {
        "loop_samples_per_s": result.train_samples_per_s,
        "loop_s": case.steps * case.batch_size / result.train_samples_per_s,
        "median_step_s": float(np.median(periods)),
        "wall_s": wall,
        "setup_s": setup_s,
        "fit_wall_s": result.wall_time_s,
        "mean_train_loss": result.history[-1]["train_loss"],
        "trainable_parameters": trainable,
        "total_parameters": total,
        "load_before": load_before,
        "load_after": load(),
    }


def run_library(
    model_dir: Path, series: list[np.ndarray], case: Case, lora: Lora, lr: float, seed: int
) -> dict[str, Any]:
    import peft
    from chronos.chronos2 import Chronos2Pipeline
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.begin = self.end = math.nan
            self.steps: list[float] = []
            self.logs: dict[str, float] = {}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.begin = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append(time.perf_counter())

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.end = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            self.logs.update(logs or {})

    pipeline = Chronos2Pipeline.from_pretrained(
        str(model_dir), device_map="cpu", dtype=torch.float32
    )
    lora_config = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(TARGETS),
        bias="none",
    )
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        load_before = load()
        started = time.perf_counter()
        tuned = pipeline.fit(
            series,
            prediction_length=case.horizon,
            finetune_mode="lora",
            lora_config=lora_config,
            context_length=case.context,
            learning_rate=lr,
            num_steps=case.steps,
            batch_size=case.batch_size,
            output_dir=tmp,
            min_past=case.horizon,
            callbacks=[clock],
            remove_printer_callback=True,
            disable_tqdm=True,
            seed=seed,
            weight_decay=0.0,
            max_grad_norm=1.0,
        )
        wall = time.perf_counter() - started
    loop = clock.end - clock.begin
    del tuned
    return {
        "loop_samples_per_s": case.steps * case.batch_size / loop,
        "loop_s": loop,
        "median_step_s": float(np.median(np.diff(clock.steps))),
        "wall_s": wall,
        "hf_train_samples_per_second": clock.logs.get("train_samples_per_second"),
        "mean_train_loss": clock.logs.get("train_loss"),
        "load_before": load_before,
        "load_after": load(),
    }


# --- driver ----------------------------------------------------------------------------------


def measure_case(
    case: Case, model_dir: Path, series: list[np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    lora = Lora()
    engine_runs, library_runs = [], []
    for repeat in range(args.repeats):
        order = ("engine", "library") if repeat % 2 == 0 else ("library", "engine")
        for side in order:
            run = run_engine if side == "engine" else run_library
            result = run(model_dir, series, case, lora, args.lr, args.seed + repeat)
            (engine_runs if side == "engine" else library_runs).append(result)
            print(
                f"    {side:7s} repeat {repeat}: {result['loop_samples_per_s']:7.1f} samples/s "
                f"(median step {1000 * result['median_step_s']:.1f} ms, wall "
                f"{result['wall_s']:.1f} s, load {result['load_before']:.1f})",
                flush=True,
            )

    def ratio(key: str, invert: bool = False) -> dict[str, float]:
        pairs = [
            (lib[key] / eng[key]) if invert else (eng[key] / lib[key])
            for eng, lib in zip(engine_runs, library_runs, strict=True)
        ]
        return summarise(pairs)

    summary = {
        side: {
            key: summarise([r[key] for r in runs])
            for key in ("loop_samples_per_s", "median_step_s", "wall_s")
        }
        for side, runs in (("engine", engine_runs), ("library", library_runs))
    }
    return {
        "case": asdict(case),
        "lora": {**asdict(lora), "target_modules": list(TARGETS)},
        "learning_rate": args.lr,
        "engine_runs": engine_runs,
        "library_runs": library_runs,
        "summary": summary,
        "speedup": {
            # per repeat: engine / library throughput (paired runs), then median and range
            "loop_samples_per_s": ratio("loop_samples_per_s"),
            "median_step": ratio("median_step_s", invert=True),
            "wall_with_setup": ratio("wall_s", invert=True),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, 20 steps, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="override steps of every case")
    parser.add_argument("--series", type=int, default=512)
    parser.add_argument("--length", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2],
        help="torch threads, the same for both sides; several values: one pass each",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/chronos_training.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.quick:
        args.repeats = 1
        cases = [Case("standin", 24, 12, 64, 20)]
    else:
        cases = [
            Case("standin", 24, 12, 64, 100),
            Case("d256-4L", 24, 12, 64, 40),
            Case("d256-4L", 128, 12, 64, 10),
        ]
    if args.steps:
        cases = [Case(c.model, c.context, c.horizon, c.batch_size, args.steps) for c in cases]
    series = make_series(args.series, args.length, args.seed)
    runs, shapes = [], {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for threads, case in itertools.product(args.threads, cases):
            torch.set_num_threads(threads)
            model_dir = Path(tmp) / case.model
            if case.model not in shapes:
                shapes[case.model] = save_model(case.model, case.horizon, args.seed, model_dir)
            # warm-up: imports and first-call allocations, untimed, on both sides
            warm = Case(case.model, case.context, case.horizon, case.batch_size, 2)
            run_engine(model_dir, series, warm, Lora(), args.lr, args.seed)
            run_library(model_dir, series, warm, Lora(), args.lr, args.seed)
            print(
                f"case {case}, {threads} thread(s) ({shapes[case.model]['parameters']:,} "
                "parameters)",
                flush=True,
            )
            result = {"threads": threads, **measure_case(case, model_dir, series, args)}
            result["model"] = shapes[case.model]
            runs.append(result)
            s = result["speedup"]
            print(
                f"  engine/library: loop x{s['loop_samples_per_s']['median']:.2f} "
                f"(range {s['loop_samples_per_s']['min']:.2f}-{s['loop_samples_per_s']['max']:.2f})"
                f", median step x{s['median_step']['median']:.2f}, wall with setup "
                f"x{s['wall_with_setup']['median']:.2f}",
                flush=True,
            )
    write_report(
        args.out,
        "chronos_training",
        {
            "quick": args.quick,
            "repeats": args.repeats,
            "series": args.series,
            "series_length": args.length,
            "missing_fraction": 0.05,
            "threads": args.threads,
            "optimiser": "AdamW, no weight decay, linear decay, no warm-up, clip 1.0",
            "timed": "see the module docstring of bench/chronos_training.py",
        },
        total_seconds=time.perf_counter() - started,
        runs=runs,
    )


if __name__ == "__main__":
    main()
