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
* ``median_step_cpu_s``: the same periods in the main thread's CPU time
  (``time.thread_time``). At 1 thread all of a step's work runs on that thread (``fit``'s
  dataloader has no workers), so this is the figure least moved by other processes on a
  shared machine; at 2 threads it misses the second OpenMP thread's work.
* ``wall_s``: engine: ``adapt`` + Trainer construction + ``Trainer.fit`` (with the two
  evaluations and the final checkpoint); library: the whole ``fit`` call. Model loading from
  disk is excluded on both sides.

A third side, the **floor** (:func:`run_floor`), runs only the work every step must do
(forward, backward, clipping, fused AdamW, the schedule) on batches built before its clock
starts: the ceiling of any loop around the same model, so ``floor / library`` says how far a
faster loop could go and ``engine / floor`` how close the engine is.

Loss curves: ``fit`` logs its mean training loss every ``LOSS_WINDOW`` steps
(``logging_steps``; its default is 100, so this adds a few log events per run); the engine's
and the floor's per-step losses are averaged over the same windows. The sides crop different
windows (``fit`` draws with its own sampler), so the curves agree within batch noise, not bit
for bit; the engine and floor draw the same crops.

``--compile`` also measures ``torch.compile`` of the engine's loss (:func:`measure_compile`):
the first compiled step (cold, then with the on-disk cache filled), the steady step time
against eager, and the number of steps after which compiling pays.

The sides run in turn, the order rotated every repeat so that each runs first, second and
third and load on the shared machine hits all alike; the load average is recorded around each
run. Usage:

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
# Steps per point of the loss curves: ``fit`` logs its mean loss every LOSS_WINDOW steps
# (``logging_steps``), the engine's per-step losses are averaged over the same windows.
LOSS_WINDOW = 10
SIDES = ("engine", "library", "floor")


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
        self.cpu_calls: list[float] = []  # this thread's CPU time at each train_batch
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
        self.cpu_calls.append(time.thread_time())
        return self._crops(np.random.default_rng([self.seed, 0, step]), batch_size)

    def validation_batches(self, batch_size: int) -> Any:
        yield self.validation

    def describe(self) -> dict[str, int | str]:
        return {"source": "bench series", "train_series": len(self.values)}


def window_means(values: list[float], window: int) -> list[float]:
    return [float(np.mean(values[i : i + window])) for i in range(0, len(values), window)]


# --- the three runs --------------------------------------------------------------------------


def adapted_forecaster(model_dir: Path, lora: Lora) -> Any:
    """The checkpoint, loaded on CPU and wrapped with LoRA as the study's ``adapt`` does."""
    from vitalfm.methods import MethodSpec
    from vitalfm.methods.adapting import adapt
    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos import ChronosForecaster

    forecaster = ChronosForecaster.load(ModelSource(path=str(model_dir)), torch.device("cpu"))
    spec = MethodSpec(
        name="lora",
        kind="lora",
        rank=lora.rank,
        alpha=lora.alpha,
        dropout=lora.dropout,
        target_modules=TARGETS,
    )
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    return forecaster


def run_floor(
    model_dir: Path, series: list[np.ndarray], case: Case, lora: Lora, lr: float, seed: int
) -> dict[str, Any]:
    """The work every training step must do and nothing else: forward, backward, clipping,
    fused AdamW and the schedule, on batches built before the clock starts. A ceiling for
    what any loop around the same model can reach; not a usable trainer."""
    forecaster = adapted_forecaster(model_dir, lora)
    data = CropData(series, case.context, case.horizon, min_past=case.horizon, seed=seed)
    batches = [data.train_batch(step, case.batch_size) for step in range(case.steps)]
    params = [p for p in forecaster.module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / case.steps)
    forecaster.module.train()
    losses = []
    load_before = load()
    started = time.perf_counter()
    clocks, cpu_clocks = [started], [time.thread_time()]
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = forecaster.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        clocks.append(time.perf_counter())
        cpu_clocks.append(time.thread_time())
    loop = time.perf_counter() - started
    curve = [float(v) for v in losses]
    return {
        "loop_samples_per_s": case.steps * case.batch_size / loop,
        "loop_s": loop,
        "median_step_s": float(np.median(np.diff(clocks))),
        "median_step_cpu_s": float(np.median(np.diff(cpu_clocks))),
        "wall_s": loop,
        "mean_train_loss": float(np.mean(curve)),
        "loss_curve": window_means(curve, LOSS_WINDOW),
        "load_before": load_before,
        "load_after": load(),
    }


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
    cpu_periods = np.diff(data.cpu_calls)
    return {
        "loop_samples_per_s": result.train_samples_per_s,
        "loop_s": case.steps * case.batch_size / result.train_samples_per_s,
        "median_step_s": float(np.median(periods)),
        "median_step_cpu_s": float(np.median(cpu_periods)),
        "wall_s": wall,
        "setup_s": setup_s,
        "fit_wall_s": result.wall_time_s,
        "mean_train_loss": result.history[-1]["train_loss"],
        "loss_curve": window_means(trainer.train_losses, LOSS_WINDOW),
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
            self.cpu_steps: list[float] = []
            self.logs: dict[str, float] = {}
            self.curve: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.begin = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append(time.perf_counter())
            self.cpu_steps.append(time.thread_time())

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.end = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            self.logs.update(logs or {})
            if logs and "loss" in logs:  # the mean training loss since the last log
                self.curve.append(float(logs["loss"]))

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
            logging_steps=LOSS_WINDOW,
        )
        wall = time.perf_counter() - started
    loop = clock.end - clock.begin
    del tuned
    return {
        "loop_samples_per_s": case.steps * case.batch_size / loop,
        "loop_s": loop,
        "median_step_s": float(np.median(np.diff(clock.steps))),
        "median_step_cpu_s": float(np.median(np.diff(clock.cpu_steps))),
        "wall_s": wall,
        "hf_train_samples_per_second": clock.logs.get("train_samples_per_second"),
        "mean_train_loss": clock.logs.get("train_loss"),
        "loss_curve": clock.curve,
        "load_before": load_before,
        "load_after": load(),
    }


def measure_compile(
    case: Case, model_dir: Path, series: list[np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    """Does ``torch.compile`` of the training loss pay for a short fine-tune?

    Two engine Trainers on the same model and batches, one with ``forecaster.loss`` compiled
    (inductor, ``fallback_random`` so that dropout draws the same numbers as eager). The first
    compiled step is timed on its own (tracing and code generation); then both train blocks of
    ``LOSS_WINDOW`` steps, alternately, and the per-step losses must agree before timing.
    """
    import torch._inductor.config as inductor_config

    from vitalfm.engine.train import Trainer, TrainingConfig

    inductor_config.fallback_random = True
    steps = 2 + 2 * args.repeats * LOSS_WINDOW
    cache = tempfile.TemporaryDirectory()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name  # a cold compile: nothing cached yet
    torch._dynamo.reset()
    config = TrainingConfig(
        max_steps=steps,
        batch_size=case.batch_size,
        learning_rate=args.lr,
        weight_decay=0.0,
        warmup_fraction=0.0,
        grad_clip_norm=1.0,
        eval_every=steps + 1,
        checkpoint_every=steps + 1,
        seed=args.seed,
    )
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp, cache:
        for name in ("eager", "compiled", "warm"):
            forecaster = adapted_forecaster(model_dir, Lora())
            data = CropData(series, case.context, case.horizon, case.horizon, args.seed)
            trainers[name] = Trainer(
                forecaster, data, config, torch.device("cpu"), Path(tmp) / name, {}, False
            )
        compiled = trainers["compiled"]
        compiled.forecaster.loss = torch.compile(compiled.forecaster.loss)
        trainers["eager"]._train_step()
        started = time.perf_counter()
        compiled._train_step()
        first_step_s = time.perf_counter() - started
        trainers["eager"]._train_step()
        compiled._train_step()  # the first step after compiling runs new code paths once more
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        loads = [load()]
        for block in range(2 * args.repeats):
            order = ("eager", "compiled") if block % 2 == 0 else ("compiled", "eager")
            for name in order:
                started = time.perf_counter()
                for _ in range(LOSS_WINDOW):
                    trainers[name]._train_step()
                times[name].append((time.perf_counter() - started) / LOSS_WINDOW)
        loads.append(load())
        # a later job on the same machine: the on-disk inductor cache is filled
        torch._dynamo.reset()
        warm = trainers["warm"]
        warm.forecaster.loss = torch.compile(warm.forecaster.loss)
        started = time.perf_counter()
        warm._train_step()
        warm_first_step_s = time.perf_counter() - started
    eager_losses = np.array(trainers["eager"].train_losses)
    compiled_losses = np.array(compiled.train_losses)
    largest = float(np.max(np.abs(eager_losses - compiled_losses) / np.abs(eager_losses)))
    if largest > 1e-3:
        raise RuntimeError(f"compiled losses differ from eager by up to {largest:.2g} (relative)")
    eager_s, compiled_s = (float(np.median(times[n])) for n in ("eager", "compiled"))
    overhead = first_step_s - eager_s
    gain = eager_s - compiled_s
    return {
        "first_compiled_step_s": first_step_s,
        "first_compiled_step_warm_cache_s": warm_first_step_s,
        "eager_step_s": summarise(times["eager"]),
        "compiled_step_s": summarise(times["compiled"]),
        "speedup": eager_s / compiled_s,
        "largest_relative_loss_difference": largest,
        # steps after which compiling has paid for itself (inf: never)
        "break_even_steps": overhead / gain if gain > 0 else math.inf,
        "break_even_steps_warm_cache": (
            (warm_first_step_s - eager_s) / gain if gain > 0 else math.inf
        ),
        "load": loads,
    }


# --- driver ----------------------------------------------------------------------------------


def measure_case(
    case: Case, model_dir: Path, series: list[np.ndarray], args: argparse.Namespace
) -> dict[str, Any]:
    lora = Lora()
    runners = {"engine": run_engine, "library": run_library, "floor": run_floor}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        # rotate the order every repeat, so that each side runs first, second and third
        order = SIDES[repeat % len(SIDES) :] + SIDES[: repeat % len(SIDES)]
        for side in order:
            result = runners[side](model_dir, series, case, lora, args.lr, args.seed + repeat)
            runs[side].append(result)
            print(
                f"    {side:7s} repeat {repeat}: {result['loop_samples_per_s']:7.1f} samples/s "
                f"(median step {1000 * result['median_step_s']:.1f} ms, "
                f"{1000 * result['median_step_cpu_s']:.1f} ms CPU, wall "
                f"{result['wall_s']:.1f} s, load {result['load_before']:.1f})",
                flush=True,
            )

    def ratio(side: str, key: str, invert: bool = False) -> dict[str, float]:
        """Per repeat ``side`` / library (paired runs of the same repeat), then median and
        range; ``invert`` for times (library / side)."""
        pairs = [
            (lib[key] / other[key]) if invert else (other[key] / lib[key])
            for other, lib in zip(runs[side], runs["library"], strict=True)
        ]
        return summarise(pairs)

    summary = {
        side: {
            key: summarise([r[key] for r in side_runs])
            for key in ("loop_samples_per_s", "median_step_s", "median_step_cpu_s", "wall_s")
        }
        for side, side_runs in runs.items()
    }
    curves = {
        side: [
            float(np.median(point))
            for point in zip(*(r["loss_curve"] for r in side_runs), strict=False)
        ]
        for side, side_runs in runs.items()
    }
    return {
        "case": asdict(case),
        "lora": {**asdict(lora), "target_modules": list(TARGETS)},
        "learning_rate": args.lr,
        "engine_runs": runs["engine"],
        "library_runs": runs["library"],
        "floor_runs": runs["floor"],
        "summary": summary,
        # median over repeats of the mean training loss in each LOSS_WINDOW-step window
        "loss_curves": {"window_steps": LOSS_WINDOW, **curves},
        "speedup": {
            # per repeat: engine / library throughput (paired runs), then median and range
            "loop_samples_per_s": ratio("engine", "loop_samples_per_s"),
            "median_step": ratio("engine", "median_step_s", invert=True),
            "median_step_cpu": ratio("engine", "median_step_cpu_s", invert=True),
            "floor_median_step_cpu": ratio("floor", "median_step_cpu_s", invert=True),
            "wall_with_setup": ratio("engine", "wall_s", invert=True),
            # the ceiling: a loop with no work beyond the step's own (see run_floor)
            "floor_loop_samples_per_s": ratio("floor", "loop_samples_per_s"),
            "engine_share_of_floor": summarise(
                [
                    e["loop_samples_per_s"] / f["loop_samples_per_s"]
                    for e, f in zip(runs["engine"], runs["floor"], strict=True)
                ]
            ),
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
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of the engine's loss (first --threads value only)",
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

    def report(complete: bool) -> None:
        """Written after every case, so that a run stopped early keeps what it measured."""
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
                "compile": args.compile,
                "optimiser": "AdamW, no weight decay, linear decay, no warm-up, clip 1.0",
                "timed": "see the module docstring of bench/chronos_training.py",
            },
            complete=complete,
            total_seconds=time.perf_counter() - started,
            runs=runs,
        )

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
            if args.compile and threads == args.threads[0]:
                result["compile"] = measure_compile(case, model_dir, series, args)
                c = result["compile"]
                print(
                    f"  torch.compile: first step {c['first_compiled_step_s']:.1f} s, then "
                    f"x{c['speedup']:.2f} per step; pays after {c['break_even_steps']:.0f} steps "
                    f"({c['first_compiled_step_warm_cache_s']:.1f} s and "
                    f"{c['break_even_steps_warm_cache']:.0f} steps with a warm cache)",
                    flush=True,
                )
            runs.append(result)
            s = result["speedup"]
            print(
                f"  engine/library: loop x{s['loop_samples_per_s']['median']:.2f} "
                f"(range {s['loop_samples_per_s']['min']:.2f}-{s['loop_samples_per_s']['max']:.2f})"
                f", median step x{s['median_step']['median']:.2f}, wall with setup "
                f"x{s['wall_with_setup']['median']:.2f}; floor/library loop "
                f"x{s['floor_loop_samples_per_s']['median']:.2f}; median step CPU time: engine "
                f"x{s['median_step_cpu']['median']:.2f}, floor "
                f"x{s['floor_median_step_cpu']['median']:.2f}",
                flush=True,
            )
            for side in SIDES:
                curve = " ".join(f"{v:.2f}" for v in result["loss_curves"][side])
                print(f"  loss every {LOSS_WINDOW} steps, {side:7s}: {curve}", flush=True)
            report(complete=False)
    report(complete=True)


if __name__ == "__main__":
    main()
