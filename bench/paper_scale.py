"""Benchmark and plan: what ``config/paper.yaml`` costs, from measured per-step costs.

Measured here, on this machine's CPU, for every pretrained model the paper config runs, in the
RELEASED shape with random weights (the family's own stand-in builder with the released
dimensions; speed does not depend on the weights' values, and nothing is downloaded), plus
the from-scratch baselines at their configured size; each model in its own process:

* ``train``: the engine's ``Trainer`` (what the ``finetune`` rule runs), adapted with
  ``vitalfm.methods.adapting.adapt`` (so the trainable sets are the real ones), at the paper's
  context and horizon (24 -> 12 steps): seconds per step from the median period between
  consecutive batch draws after one warm-up step, in CPU time of the process (torch on one
  thread by default, so these are core-seconds, and other work on the machine does not
  inflate them; wall times are recorded beside them). Big shapes are measured at a smaller batch
  and scaled to the paper's batch linearly (stated per row; FLOPs are linear in the batch);
  LoRA (r8, standing for the rank sweep r1-r64: the rank changes only the adapter's small
  matmuls) and full fine-tuning on every shape but Chronos-T5-large (``Shape.full_like``:
  its ~16 GB of training state does not fit a small machine; derived from its LoRA step and
  T5-base's full/LoRA ratios, marked so); every other kind the paper runs (DoRA, VeRA,
  FourierFT, BitFit, LayerNorm) on the smallest released shape of each family that runs them,
  whose ratio to LoRA is applied to its larger shapes;
* ``validation``: the forward pass alone (the validation loss at each evaluation);
* ``forecast``: ``forecaster.predict`` with the paper's ``num_samples`` (100) and the
  validation's (20) on a few vital-like series, seconds per series;
* per training step and per forecast call: model FLOPs (``torch.utils.flop_counter``) and the
  number of dispatched operators that launch work (views excluded; each one GPU kernel or
  more in eager mode), the bytes autograd saves for backward (the weights' own storage
  excluded), and the process's peak RSS (CPU, sampled) per phase.

Planned from those: the paper config's jobs per rule and per model (the package's own
expansion, ``vitalfm.study.study_runs``; checked against ``snakemake -n`` unless
``--no-snakemake``), each job's CPU time (measured costs x the job's steps, evaluations and
windows), and an ESTIMATE of its GPU time and peak GPU memory with the assumptions stated in
the report (``gpu_assumptions``), and the wall time with ``--resources gpu=N`` from a list
schedule that starts a forecast only after its fine-tune. The window counts of the real
cohort are parameters (``--stays``, ``--stay-hours``). Usage::

    .venv/bin/python bench/paper_scale.py                 # measure + plan (~30 min, busy 2 cores)
    .venv/bin/python bench/paper_scale.py --quick         # smoke run, tiny batches, 2 models
    .venv/bin/python bench/paper_scale.py --plan-only --stays 12000   # replan from the JSON
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import heapq
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchfacts import ROOT, adapt_for_timed_training, load, run_json_subprocess, write_report

CONFIG = ROOT / "config" / "paper.yaml"
OUT = ROOT / "bench" / "results" / "paper_scale.json"
#: Measurements so far, rewritten after each model (``--plan-only --measurements`` reads it).
PARTIAL = Path(tempfile.gettempdir()) / f"paper_scale_measured_{os.getpid()}.json"
CONTEXT, HORIZON = 24, 12  # 6 h -> 3 h on the 15-minute grid (config/paper.yaml)
VITALS = ("heart_rate", "mbp", "resp_rate")


# --- the released shapes ------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A model of the paper config in its released shape, and how to measure it on CPU."""

    family: str
    #: The family's stand-in (or baseline) whose builder is reused with ``dims``.
    variant: str
    dims: dict[str, Any] = field(default_factory=dict)
    #: Where the shape comes from.
    released: str = ""
    #: Batch measured on CPU (scaled linearly to the paper's batch when smaller).
    batch: int = 64
    #: Series forecast on CPU per measurement.
    forecast_series: int = 64
    #: Timed training steps (after one warm-up step).
    steps: int = 2
    #: A shape whose full fine-tuning is derived from ``full_like``'s full/LoRA ratios instead
    #: of measured (its training state does not fit in a small machine's memory).
    full_like: str | None = None


def _t5(d_model: int, d_ff: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(
        d_model=d_model,
        d_kv=64,
        d_ff=d_ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
    )


_BOLT = {"chronos_config": {"context_length": 2048, "prediction_length": 64}}
_CHRONOS2 = dict(
    d_model=768,
    d_kv=64,
    d_ff=3072,
    num_layers=12,
    num_heads=12,
    chronos_config={"context_length": 8192, "max_output_patches": 64, "time_encoding_scale": 8192},
)
_BASELINE = "config/paper.yaml options"
SHAPES: dict[str, Shape] = {
    "chronos-t5-tiny": Shape(
        "chronos", "chronos-t5", _t5(256, 1024, 4, 4), "amazon/chronos-t5-tiny", 32, 4
    ),
    "chronos-t5-mini": Shape(
        "chronos", "chronos-t5", _t5(384, 1536, 4, 8), "amazon/chronos-t5-mini", 32, 2
    ),
    "chronos-t5-small": Shape(
        "chronos", "chronos-t5", _t5(512, 2048, 6, 8), "amazon/chronos-t5-small", 16, 2
    ),
    "chronos-t5-base": Shape(
        "chronos", "chronos-t5", _t5(768, 3072, 12, 12), "amazon/chronos-t5-base", 8, 1
    ),
    "chronos-t5-large": Shape(
        "chronos",
        "chronos-t5",
        _t5(1024, 4096, 24, 16),
        "amazon/chronos-t5-large",
        2,
        1,
        full_like="chronos-t5-base",
    ),
    "chronos-bolt-tiny": Shape(
        "chronos", "chronos-bolt", {**_t5(256, 1024, 4, 4), **_BOLT}, "amazon/chronos-bolt-tiny"
    ),
    "chronos-bolt-mini": Shape(
        "chronos", "chronos-bolt", {**_t5(384, 1536, 4, 8), **_BOLT}, "amazon/chronos-bolt-mini"
    ),
    "chronos-bolt-small": Shape(
        "chronos",
        "chronos-bolt",
        {**_t5(512, 2048, 6, 8), **_BOLT},
        "amazon/chronos-bolt-small",
        32,
        32,
    ),
    "chronos-bolt-base": Shape(
        "chronos",
        "chronos-bolt",
        {**_t5(768, 3072, 12, 12), **_BOLT},
        "amazon/chronos-bolt-base",
        16,
        16,
    ),
    "chronos-2": Shape("chronos", "chronos-2", _CHRONOS2, "amazon/chronos-2", 16, 16),
    "moirai-1.1-small": Shape(
        "moirai", "moirai", dict(d_model=384, num_layers=6), "Salesforce/moirai-1.1-R-small", 64, 16
    ),
    "moirai-1.1-base": Shape(
        "moirai", "moirai", dict(d_model=768, num_layers=12), "Salesforce/moirai-1.1-R-base", 16, 4
    ),
    "moirai-1.1-large": Shape(
        "moirai", "moirai", dict(d_model=1024, num_layers=24), "Salesforce/moirai-1.1-R-large", 4, 2
    ),
    "moirai-2-small": Shape(
        "moirai",
        "moirai-2",
        dict(d_model=384, d_ff=1024, num_layers=6),
        "Salesforce/moirai-2.0-R-small",
        64,
        64,
    ),
    "lag-llama": Shape(
        "lag_llama", "released", {}, "time-series-foundation-models/Lag-Llama", 32, 2
    ),
    "nhits": Shape("nhits", "scratch", {}, _BASELINE, 64, 64),
    "nbeats": Shape("nbeats", "scratch", {}, _BASELINE, 64, 64),
    "dlinear": Shape("dlinear", "scratch", {}, _BASELINE, 64, 64),
}
#: Families whose every method kind is measured on their smallest released shape.
KIND_REFERENCE = {
    "chronos-t5": "chronos-t5-tiny",
    "moirai": "moirai-1.1-small",
    "lag_llama": "lag-llama",
}
REFERENCE_METHOD = "lora-r8"
LORA_SETTING = {"kind": "lora", "rank": 8, "alpha": 16, "dropout": 0.05}


def build_forecaster(model: str, options: dict[str, Any], seed: int = 0) -> Any:
    """The model in its released shape with random weights, wrapped by its family's class."""
    import torch

    from vitalfm.models.base import ModelSource
    from vitalfm.models.registry import forecaster_class

    shape = SHAPES[model]
    family = forecaster_class(shape.family)
    torch.manual_seed(seed)
    if shape.variant == "scratch":
        forecaster = family.from_scratch(options, CONTEXT, HORIZON, seed)
    elif shape.family == "lag_llama":
        sys.path.insert(0, str(ROOT / "bench"))
        from lag_llama_sampling import released_shape

        forecaster = released_shape()
    elif shape.family == "chronos":
        forecaster = family.standin(shape.variant, horizon=HORIZON, seed=seed)
        module = forecaster.module
        config = module.config.to_dict()
        dims = dict(shape.dims)
        config["chronos_config"] = {**config["chronos_config"], **dims.pop("chronos_config", {})}
        config.update(dims)
        torch.manual_seed(seed)
        forecaster.set_module(_random_module(type(module), type(module.config).from_dict(config)))
    else:  # MOIRAI 1.x and Moirai-2: the stand-in's settings with the released dimensions
        from vitalfm.models.moirai.moirai1 import STANDIN_MOIRAI
        from vitalfm.models.moirai.moirai2 import STANDIN_MOIRAI2

        standin = family.standin(shape.variant, horizon=HORIZON, seed=seed)
        module_class = type(standin.module)
        torch.manual_seed(seed)
        if shape.variant == "moirai":
            module = module_class(
                distr_output=standin.module.distr_output, **{**STANDIN_MOIRAI, **shape.dims}
            )
        else:
            module = module_class(**{**STANDIN_MOIRAI2, **shape.dims})
        forecaster = family.for_module(module.eval(), ModelSource(path="released shape"))
        forecaster.train_patch_sizes = forecaster.patch_sizes
    if options and shape.variant != "scratch":
        forecaster.configure(options)
    return forecaster


def _random_module(module_class: Any, config: Any) -> Any:
    """A transformers module with random weights. One without buffers is built on the meta
    device and given small random weights (the library's own init of the 700M-parameter
    T5 shape takes a minute on one core); one with buffers (Bolt's quantiles, Chronos-2's
    RoPE) is built normally, so that its buffers hold their real values."""
    import torch

    with torch.device("meta"):
        module = module_class(config)
    if any(True for _ in module.buffers()):
        return module_class(config).eval()
    module = module.to_empty(device="cpu")
    module.tie_weights()  # to_empty gives tied weights separate storage
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim > 1:
                parameter.normal_(0.0, 0.02)
            elif "norm" in name:
                parameter.fill_(1.0)
            else:
                parameter.zero_()
    return module.eval()


# --- measuring on CPU ---------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def peak_rss(into: dict[str, float], interval_s: float = 0.02) -> Iterator[None]:
    """Sample the process's RSS while the block runs: its start and peak, in MB."""
    into["rss_before_mb"] = _rss_mb()
    peak = [into["rss_before_mb"]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval_s):
            peak[0] = max(peak[0], _rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        into["rss_peak_mb"] = max(peak[0], _rss_mb())
        into["rss_growth_mb"] = into["rss_peak_mb"] - into["rss_before_mb"]


def counted(run: Any) -> dict[str, float]:
    """Model FLOPs of ``run()`` (FlopCounterMode counts matmuls, convolutions and attention)
    and its dispatched operators: ``operators`` launch work (on a GPU, one kernel or more
    each in eager mode); ``views`` only change a tensor's metadata."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class OperatorCount(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.kernels = 0
            self.views = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
            if getattr(func, "is_view", False):
                self.views += 1
            else:
                self.kernels += 1
            return func(*args, **(kwargs or {}))

    flops = FlopCounterMode(display=False)
    ops = OperatorCount()
    with flops, ops:
        run()
    return {"flops": float(flops.get_total_flops()), "operators": ops.kernels, "views": ops.views}


def saved_activation_bytes(module: Any, run: Any) -> int:
    """Bytes of the tensors autograd saves for backward while ``run()`` builds the graph,
    less the module's own weights (a linear layer saves its weight for the input's gradient;
    that memory is already counted as weights)."""
    import torch

    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def vital_series(series: int, seed: int) -> tuple[Any, Any]:
    sys.path.insert(0, str(ROOT / "bench"))
    from lag_llama_sampling import vital_like

    return vital_like(series, CONTEXT, seed)


def training_windows(quick: bool) -> tuple[Any, Any]:
    from vitalfm.testing import toy_windows

    train = toy_windows("train", n_stays=8 if quick else 40, vital_names=VITALS, stride_steps=1)
    validation = toy_windows("validation", n_stays=1, vital_names=VITALS, seed=1, stride_steps=12)
    return train, validation


def _predicting(forecaster: Any, context: Any, axis: Any, num_samples: int) -> Any:
    return lambda: forecaster.predict(context, HORIZON, num_samples, time=axis)


def measure_forecast(forecaster: Any, shape: Shape, samples: list[int]) -> dict[str, Any]:
    import torch

    n = shape.forecast_series
    context, axis = vital_series(n, seed=0)
    forecaster.predict(context[:1], HORIZON, 2, time=axis[:1])  # warm-up
    out: dict[str, Any] = {"series": n}
    for num_samples in samples:
        facts: dict[str, Any] = {"load_before": load()}
        torch.manual_seed(0)
        with peak_rss(facts):
            started, cpu = time.perf_counter(), time.process_time()
            forecaster.predict(context, HORIZON, num_samples, time=axis)
            facts["seconds"] = time.perf_counter() - started
            facts["cpu_seconds"] = time.process_time() - cpu
        facts["s_per_series"] = facts["cpu_seconds"] / n
        facts["wall_s_per_series"] = facts["seconds"] / n
        facts.update(counted(_predicting(forecaster, context[:1], axis[:1], num_samples)))
        facts["flops_per_series"] = facts.pop("flops")
        facts["operators_per_call"] = facts.pop("operators")
        facts["views_per_call"] = facts.pop("views")
        facts["load_after"] = load()
        out[str(num_samples)] = facts
    return out


def _train_once(forecaster: Any, data: Any, spec: Any, batch: int, steps: int) -> dict[str, Any]:
    """Adapt ``forecaster`` (its module is consumed) and time ``steps`` + 1 Trainer steps."""
    import torch

    from vitalfm.engine.train import Trainer

    config, trainable, total = adapt_for_timed_training(
        forecaster, spec, steps + 2, batch, validation_batch_size=batch
    )
    draws: list[float] = []
    cpu_draws: list[float] = []
    draw_batch = data.train_batch
    batch_s: list[float] = []

    def timed_batch(step: int, size: int) -> Any:
        cpu_draws.append(time.process_time())
        draws.append(time.perf_counter())
        made = draw_batch(step, size)
        batch_s.append(time.process_time() - cpu_draws[-1])
        return made

    data.train_batch = timed_batch
    facts: dict[str, Any] = {"load_before": load()}
    try:
        with tempfile.TemporaryDirectory() as checkpoints, peak_rss(facts):
            Trainer(
                forecaster, data, config, torch.device("cpu"), Path(checkpoints), {}, False
            ).fit()
    finally:
        data.train_batch = draw_batch
    # the first step warms up; CPU time (one thread) is the step's cost whatever else runs
    periods = [b - a for a, b in itertools.pairwise(cpu_draws)][1:]
    walls = [b - a for a, b in itertools.pairwise(draws)][1:]
    facts.update(
        step_s=statistics.median(periods),
        step_s_all=periods,
        wall_step_s=statistics.median(walls),
        batch_s=statistics.median(batch_s[1:]),
        trainable=trainable,
        total=total,
        load_after=load(),
    )
    return facts


def _step_counts(forecaster: Any, data: Any, batch: int) -> dict[str, Any]:
    """FLOPs, operators and saved activations of one training step (forward, backward,
    clipping, AdamW as on GPU: foreach), and FLOPs of the forward alone (validation)."""
    import torch

    module = forecaster.module
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    sample = data.train_batch(10**6, batch)
    module.train()

    def step() -> None:
        loss = forecaster.loss(sample)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()

    step()  # optimizer state exists before counting, as in every later step
    counts = counted(step)
    activations = saved_activation_bytes(module, lambda: forecaster.loss(sample))
    module.eval()
    with torch.no_grad():
        forward = counted(lambda: forecaster.loss(sample))
        started = time.process_time()
        forecaster.loss(sample)
        forward_s = time.process_time() - started
    return {
        "count_batch": batch,
        "flops_per_sample": counts["flops"] / batch,
        "operators_per_step": counts["operators"],
        "views_per_step": counts["views"],
        "activation_bytes_per_sample": activations / batch,
        "forward_flops_per_sample": forward["flops"] / batch,
        "forward_operators_per_batch": forward["operators"],
        "forward_s_per_sample": forward_s / batch,
    }


def measure_activations(
    model: str, options: dict[str, Any], methods: dict[str, dict[str, Any]], batch: int
) -> dict[str, float]:
    """Saved activation bytes per sample of each method's training forward (``--activations``
    re-measures only these into an earlier run's measurements)."""
    from vitalfm.engine.training_data import WindowTrainingData
    from vitalfm.methods import MethodSpec
    from vitalfm.methods.adapting import adapt

    warnings.filterwarnings("ignore")
    forecaster = build_forecaster(model, options)
    train, validation = training_windows(False)
    data = WindowTrainingData(train, validation, VITALS, seed=0, validation_max_series=8)
    sample = data.train_batch(10**6, batch)
    pristine = forecaster.module
    out = {}
    for name, method in methods.items():
        forecaster.set_module(copy.deepcopy(pristine))
        spec = MethodSpec.from_config(name, method)
        forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
        forecaster.module.train()
        saved = saved_activation_bytes(forecaster.module, lambda: forecaster.loss(sample))
        out[name] = saved / batch
        forecaster.set_module(pristine)
        gc.collect()
    return out


def measure_model(
    model: str,
    options: dict[str, Any],
    methods: dict[str, dict[str, Any]],
    samples: list[int],
    repeats: int,
    quick: bool,
) -> dict[str, Any]:
    """Every measurement of one model, in this (fresh) process; see the module docstring."""
    import torch

    from vitalfm.engine.training_data import WindowTrainingData
    from vitalfm.methods import MethodSpec

    warnings.filterwarnings("ignore")
    shape = SHAPES[model]
    if quick:
        shape = Shape(shape.family, shape.variant, shape.dims, shape.released, 4, 2, 2)
    started = time.process_time()
    forecaster = build_forecaster(model, options)
    build_s = time.process_time() - started
    total = sum(p.numel() for p in forecaster.module.parameters())
    result: dict[str, Any] = {
        "model": model,
        "family": shape.family,
        "released": shape.released,
        "dims": shape.dims,
        "options": options,
        "parameters": total,
        "build_s": build_s,
        "measured_batch": shape.batch,
        "threads": torch.get_num_threads(),
    }
    result["forecast"] = measure_forecast(forecaster, shape, samples)
    train, validation = training_windows(quick)
    data = WindowTrainingData(train, validation, VITALS, seed=0, validation_max_series=8)
    pristine = forecaster.module
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    order = list(methods)
    total_runs = repeats * len(order)
    for repeat in range(repeats):
        rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
        for name in rotated:
            last = sum(map(len, runs.values())) == total_runs - 1
            forecaster.set_module(pristine if last else copy.deepcopy(pristine))
            spec = MethodSpec.from_config(name, methods[name])
            facts = _train_once(forecaster, data, spec, shape.batch, shape.steps)
            if repeat == 0:
                facts.update(_step_counts(forecaster, data, min(shape.batch, 4)))
            runs[name].append(facts)
            forecaster.set_module(pristine)
            gc.collect()
            print(f"    {model} {name}: {facts['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    result["train"] = {}
    for name, facts in runs.items():
        summary = dict(facts[0])
        summary["step_s"] = statistics.median(f["step_s"] for f in facts)
        summary["step_s_runs"] = [f["step_s"] for f in facts]
        summary["rss_peak_mb"] = max(f["rss_peak_mb"] for f in facts)
        result["train"][name] = summary
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


# --- the paper config's jobs --------------------------------------------------------------


@dataclass
class Job:
    rule: str
    model: str
    setting: str
    kind: str
    seed: int
    split: str = ""
    steps: int = 0
    depends: str | None = None  # id of the job it waits for
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    gpu_memory_gb: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.rule}:{self.model}/{self.setting}/seed-{self.seed}:{self.split}"


def paper_jobs(cfg: dict[str, Any]) -> list[Job]:
    """The model jobs of the config, as ``workflow/rules`` builds them from
    :func:`vitalfm.study.study_runs`: one fine-tune per trained replicate, one forecast per
    replicate (it forecasts every scored split with one model load), one score per
    replicate (every scored split)."""
    from vitalfm.job_settings import training
    from vitalfm.study import SPLITS_SCORED, study_runs

    jobs = []
    for run in study_runs(cfg):
        steps = int(training(cfg, run)["max_steps"])
        for seed in run.seeds:
            fine = None
            if run.trains:
                fine = Job("finetune", run.model, run.setting, run.method["kind"], seed, "", steps)
                jobs.append(fine)
            splits = ",".join(SPLITS_SCORED)
            jobs.append(
                Job(
                    "forecast",
                    run.model,
                    run.setting,
                    run.method["kind"],
                    seed,
                    splits,
                    depends=fine.id if fine else None,
                )
            )
            jobs.append(Job("score", run.model, run.setting, run.method["kind"], seed, splits))
    return jobs


def snakemake_counts(configfile: Path) -> dict[str, int]:
    """Jobs per rule as ``snakemake -n`` lists them (nothing is contacted at DAG time)."""
    snakemake = str(Path(sys.executable).parent / "snakemake")
    done = subprocess.run(
        [snakemake, "-n", "--quiet", "rules", "--configfile", str(configfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    counts: dict[str, int] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


# --- costs and the schedule ----------------------------------------------------------------

GPU_ASSUMPTIONS: dict[str, Any] = {
    "device": "NVIDIA H100 SXM 80 GB (an H200 has the same compute and 141 GB)",
    "bf16_dense_peak_tflops": 989.0,
    "fp32_peak_tflops": 67.0,
    "training_mfu": 0.25,
    "forecast_fp32_efficiency": 0.5,
    "seconds_per_operator": 10e-6,
    "job_start_s": 30.0,
    "checkpoint_write_gb_per_s": 1.0,
    "memory_overhead_gb": 1.5,
    "why": (
        "training runs under bf16 autocast (engine.train), forecasting in fp32 with TF32 off "
        "(torch's default; the project sets neither); MFU 25 % is issue 15's goal for the "
        "Chronos-T5-base shape; 10 us per eager operator that launches work (views excluded) "
        "is the usual launch + dispatch cost and bounds small models, whose kernels are too "
        "small to fill the GPU; a step costs FLOPs / (peak x efficiency) + operators x 10 us "
        "+ the measured host time to draw its batch (no overlap assumed: an upper estimate); "
        "peak memory = fp32 weights + fp32 gradients and AdamW state of the trainable "
        "parameters + the activations autograd saves (measured, fp32; bf16 halves most of "
        "them) + 1.5 GB for the CUDA context and allocator slack; a forecast's = fp32 weights "
        "+ its measured working set (RSS growth) scaled to the forecast batch. Job start "
        "(interpreter, imports, loading the released weights, CUDA init) 30 s; checkpoints "
        "(every 100 steps: weights, best weights, AdamW's two moments of the trainable "
        "parameters) written at 1 GB/s."
    ),
}


@dataclass(frozen=True)
class Cohort:
    stays: int
    stay_hours: float
    stride_hours: float = 1.0
    window_hours: float = 9.0  # 6 h context + 3 h horizon
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "validation": 0.15, "test": 0.15}
    )

    @property
    def windows_per_stay(self) -> float:
        return max(0.0, math.floor((self.stay_hours - self.window_hours) / self.stride_hours) + 1)

    def windows(self, split: str) -> float:
        return self.stays * self.windows_per_stay * self.split[split]

    def series(self, split: str) -> float:
        return self.windows(split) * len(VITALS)


def _ratio_of_kind(measured: dict[str, Any], model: str, kind_setting: str) -> tuple[str, float]:
    """The step time of a method setting relative to LoRA r8 for ``model``'s family."""
    shape = SHAPES[model]
    reference = KIND_REFERENCE.get(shape.variant, KIND_REFERENCE.get(shape.family))
    if reference is None or reference not in measured:
        return "lora-r8 (kind not measured for this family)", 1.0
    train = measured[reference]["train"]
    if kind_setting not in train:
        return "lora-r8 (kind not measured)", 1.0
    ratio = train[kind_setting]["step_s"] / train[REFERENCE_METHOD]["step_s"]
    return f"{kind_setting} on {reference}", ratio


def derive_full(measured: dict[str, Any]) -> None:
    """Add full fine-tuning to the models whose shape says ``full_like``: their LoRA figures
    times the full/LoRA ratios measured on that sibling shape (same architecture), marked."""
    for model, m in measured.items():
        like = SHAPES[model].full_like if model in SHAPES else None
        if like is None or "full" in m["train"] or like not in measured:
            continue
        lora, sibling = m["train"][REFERENCE_METHOD], measured[like]["train"]
        ratio = {
            k: sibling["full"][k] / sibling[REFERENCE_METHOD][k]
            for k in ("step_s", "flops_per_sample", "operators_per_step", "forward_s_per_sample")
        }
        m["train"]["full"] = {
            **lora,
            **{k: lora[k] * r for k, r in ratio.items()},
            "trainable": m["parameters"],
            "total": m["parameters"],
            "derived_from": f"{REFERENCE_METHOD} x the full/LoRA ratios of {like}",
        }


def kind_setting(kind: str, model: str) -> str:
    """The measured setting that stands for ``kind`` (the LoRA rank sweep: r8)."""
    if kind == "scratch":
        return "scratch"
    if kind == "full":
        return "full"
    if kind == "lora":
        return REFERENCE_METHOD
    return kind


@functools.cache
def _sections(config_json: str) -> dict[tuple[str, str], dict[str, Any]]:
    from vitalfm.job_settings import training
    from vitalfm.study import study_runs

    cfg = json.loads(config_json)
    return {(run.model, run.setting): training(cfg, run) for run in study_runs(cfg)}


def _training_section(cfg: dict[str, Any], model: str, setting: str) -> dict[str, Any]:
    """The ``training`` section as it applies to a run (its method's overrides applied)."""
    return _sections(json.dumps(cfg, sort_keys=True, default=str))[(model, setting)]


def job_costs(
    job: Job, cfg: dict[str, Any], measured: dict[str, Any], cohort: Cohort
) -> dict[str, Any]:
    """CPU seconds (measured costs x work) and the GPU estimate of one job."""
    from vitalfm.engine.training_config import TrainingConfig

    a = GPU_ASSUMPTIONS
    m = measured[job.model]
    params = m["parameters"]
    bf16 = a["bf16_dense_peak_tflops"] * 1e12 * a["training_mfu"]
    fp32 = a["fp32_peak_tflops"] * 1e12 * a["forecast_fp32_efficiency"]
    op_s = a["seconds_per_operator"]
    forecast_cfg = cfg["forecast"]
    start_cpu = m["start_s"]
    if job.rule == "finetune":
        section = _training_section(cfg, job.model, job.setting)
        tc = TrainingConfig.from_config(section)
        batch = tc.batch_size
        setting = kind_setting(job.kind, job.model)
        if setting in m["train"]:
            t = m["train"][setting]
            via, ratio = setting, 1.0
        else:
            t = m["train"][REFERENCE_METHOD]
            via, ratio = _ratio_of_kind(measured, job.model, setting)
        scale = batch / m["measured_batch"]
        step_cpu = t["step_s"] * scale * ratio
        host = t["batch_s"] * scale  # drawing the batch (numpy, on the host), measured
        step_gpu = (
            t["flops_per_sample"] * batch / bf16 + t["operators_per_step"] * op_s + host
        ) * ratio
        evaluations = job.steps // tc.eval_every + 1 + (1 if job.steps % tc.eval_every else 0)
        val_series = min(cohort.series("validation"), section["validation_max_series"])
        val_batches = math.ceil(val_series / tc.validation_batch_size)
        fc = m["forecast"].get(str(tc.validation_num_samples))
        sampled = fc is not None
        fc = fc or m["forecast"][str(forecast_cfg["num_samples"])]
        eval_cpu = (
            val_series * t["forward_s_per_sample"]
            + tc.validation_forecast_series * fc["s_per_series"]
        )
        eval_gpu = (
            val_series * t["forward_flops_per_sample"] / fp32
            + val_batches * t["forward_operators_per_batch"] * op_s
            + tc.validation_forecast_series * fc["flops_per_series"] / fp32
            + math.ceil(tc.validation_forecast_series / tc.validation_batch_size)
            * fc["operators_per_call"]
            * op_s
        )
        # a kind costed from LoRA's step keeps LoRA r8's trainable count: adapters are a few
        # MB beside the weights, so the memory estimate hardly depends on it
        trainable = params if job.kind in ("full", "scratch") else t["trainable"]
        checkpoint_gb = 16 * trainable / 1e9  # weights, best weights, AdamW's two moments
        checkpoints = math.ceil(job.steps / cfg["training"]["checkpoint_every"])
        ckpt_s = checkpoints * checkpoint_gb / a["checkpoint_write_gb_per_s"]
        cpu_s = start_cpu + job.steps * step_cpu + evaluations * eval_cpu + ckpt_s
        gpu_s = a["job_start_s"] + job.steps * step_gpu + evaluations * eval_gpu + ckpt_s
        weights = max(params, t["total"])  # with the adapter's own weights
        saved = t["activation_bytes_per_sample"] * batch
        memory = (4 * weights + 12 * trainable + saved) / 1e9 + a["memory_overhead_gb"]
        return {
            "cpu_s": cpu_s,
            "gpu_s": gpu_s,
            "gpu_memory_gb": memory,
            "step_cpu_s": step_cpu,
            "step_gpu_s": step_gpu,
            "evaluations": evaluations,
            "kind_cost_from": via if ratio == 1.0 else f"{via} x{ratio:.2f}",
            "validation_samples": sampled,
        }
    if job.rule == "forecast":
        fc = m["forecast"][str(forecast_cfg["num_samples"])]
        series = sum(cohort.series(split) for split in job.split.split(","))
        batches = math.ceil(series / forecast_cfg["batch_size"])
        cpu_s = start_cpu + series * fc["s_per_series"]
        gpu_s = (
            a["job_start_s"]
            + series * fc["flops_per_series"] / fp32
            + batches * fc["operators_per_call"] * op_s
        )
        working = fc["rss_growth_mb"] * 2**20 / m["forecast"]["series"] * forecast_cfg["batch_size"]
        memory = (4 * params + working) / 1e9 + a["memory_overhead_gb"]
        return {"cpu_s": cpu_s, "gpu_s": gpu_s, "gpu_memory_gb": memory}
    return {"cpu_s": 0.0, "gpu_s": 0.0, "gpu_memory_gb": 0.0}


def schedule(jobs: list[Job], gpus: int) -> float:
    """Wall seconds of the GPU jobs on ``gpus`` devices: a list schedule, longest ready job
    first, a forecast ready only when its fine-tune is done (as Snakemake orders them)."""
    by_id = {j.id: j for j in jobs}
    waiting: dict[str, list[Job]] = defaultdict(list)
    ready: list[tuple[float, int, Job]] = []
    counter = itertools.count()
    for job in jobs:
        if job.depends and job.depends in by_id:
            waiting[job.depends].append(job)
        else:
            heapq.heappush(ready, (-job.gpu_s, next(counter), job))
    running: list[tuple[float, int, Job]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < gpus:
            _, _, job = heapq.heappop(ready)
            heapq.heappush(running, (now + job.gpu_s, next(counter), job))
        now, _, done = heapq.heappop(running)
        for follower in waiting.pop(done.id, []):
            heapq.heappush(ready, (-follower.gpu_s, next(counter), follower))
    return now


def plan(
    cfg: dict[str, Any], measured: dict[str, Any], cohort: Cohort, gpus: list[int]
) -> dict[str, Any]:
    derive_full(measured)
    jobs = [j for j in paper_jobs(cfg) if j.rule in ("finetune", "forecast")]
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for job in jobs:
        if job.model not in measured:
            continue
        costs = job_costs(job, cfg, measured, cohort)
        job.cpu_s, job.gpu_s, job.gpu_memory_gb = (
            costs["cpu_s"],
            costs["gpu_s"],
            costs["gpu_memory_gb"],
        )
        row = rows.setdefault(
            (job.rule, job.model),
            {
                "rule": job.rule,
                "model": job.model,
                "jobs": 0,
                "cpu_h": 0.0,
                "gpu_h": 0.0,
                "gpu_memory_gb_max": 0.0,
                "job_gpu_s": [],
            },
        )
        row["jobs"] += 1
        row["cpu_h"] += job.cpu_s / 3600
        row["gpu_h"] += job.gpu_s / 3600
        row["gpu_memory_gb_max"] = max(row["gpu_memory_gb_max"], job.gpu_memory_gb)
        row["job_gpu_s"].append(job.gpu_s)
    gpu_jobs = [j for j in jobs if j.model in measured and j.model != "persistence"]
    for row in rows.values():
        times = row.pop("job_gpu_s")
        row["job_gpu_s_max"] = max(times)
    totals = {
        rule: {
            "jobs": sum(r["jobs"] for r in rows.values() if r["rule"] == rule),
            "cpu_h": sum(r["cpu_h"] for r in rows.values() if r["rule"] == rule),
            "gpu_h": sum(r["gpu_h"] for r in rows.values() if r["rule"] == rule),
        }
        for rule in ("finetune", "forecast")
    }
    gpu_of = {j.id: j.gpu_s for j in gpu_jobs}
    longest = max(
        j.gpu_s + gpu_of.get(j.depends or "", 0.0) for j in gpu_jobs if j.rule == "forecast"
    )
    return {
        "cohort": {
            "stays": cohort.stays,
            "stay_hours": cohort.stay_hours,
            "windows_per_stay": cohort.windows_per_stay,
            "windows": {s: cohort.windows(s) for s in cohort.split},
            "series": {s: cohort.series(s) for s in cohort.split},
        },
        "rows": sorted(rows.values(), key=lambda r: (r["rule"], r["model"])),
        "totals": totals,
        "critical_path_gpu_h": longest / 3600,
        "wall_h": {str(n): schedule(gpu_jobs, n) / 3600 for n in gpus},
    }


# --- the driver ----------------------------------------------------------------------------


def methods_for(model: str, cfg: dict[str, Any], quick: bool) -> dict[str, dict[str, Any]]:
    """The settings measured on ``model``: LoRA r8 and full (scratch for a baseline), and
    every other kind the paper runs on a family's reference shape."""
    from vitalfm.study import method_settings

    entry = cfg["models"][model]
    if entry["source"].get("scratch"):
        return {"scratch": {"kind": "scratch"}}
    chosen: dict[str, dict[str, Any]] = {REFERENCE_METHOD: LORA_SETTING}
    if SHAPES[model].full_like is None:
        chosen["full"] = {"kind": "full"}
    if model in KIND_REFERENCE.values() and not quick:
        listed = set(entry.get("methods") or cfg["methods"])
        for method in method_settings(cfg).values():
            kind = method["kind"]
            if method["method"] in listed and kind not in ("lora", "full", "zero_shot", "scratch"):
                chosen.setdefault(kind, {k: v for k, v in method.items() if k != "method"})
    return chosen


def measure_all(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    if args.add_to:  # measurements of other models, taken before (e.g. in another run)
        measured = {
            k: v
            for k, v in json.loads(args.add_to.read_text())["measured"].items()
            if not k.startswith("_")
        }
    models = args.models or [m for m in cfg["models"] if m in SHAPES]
    print(f"measurements so far are kept in {PARTIAL}", flush=True)
    samples = sorted(
        {cfg["forecast"]["num_samples"], cfg["training"].get("validation_num_samples", 20)}
    )
    for model in models:
        entry = cfg["models"][model]
        job = {
            "model": model,
            "options": dict(entry.get("options") or {}),
            "methods": methods_for(model, cfg, args.quick),
            "samples": samples,
            "repeats": args.repeats,
            "quick": args.quick,
        }
        print(f"{model}: {', '.join(job['methods'])}", flush=True)
        before = time.perf_counter()
        result = run_json_subprocess(
            [__file__, "--threads", str(args.threads), "--job", json.dumps(job)], model
        )
        result["process_s"] = time.perf_counter() - before
        print(f"  {result['process_s']:.0f} s (load {load():.1f})", flush=True)
        measured[model] = result
        PARTIAL.write_text(json.dumps({"measured": measured}, default=float))
    start = start_cost(args.threads)
    for result in measured.values():
        result["start_s"] = start["import_s"] + result["build_s"]
    measured["_start"] = start
    PARTIAL.write_text(json.dumps({"measured": measured}, default=float))
    return measured


def remeasure_activations(
    cfg: dict[str, Any], measured: dict[str, Any], args: argparse.Namespace
) -> None:
    """Re-measure the saved activations of every measured model and method (one process per
    model) into ``measured``."""
    for model, m in measured.items():
        if model.startswith("_") or (args.models and model not in args.models):
            continue
        methods = {k: v for k, v in methods_for(model, cfg, False).items() if k in m["train"]}
        job = {
            "activations_only": True,
            "model": model,
            "options": dict(cfg["models"][model].get("options") or {}),
            "methods": methods,
            "batch": m["train"][next(iter(methods))]["count_batch"],
        }
        found = run_json_subprocess(
            [__file__, "--threads", str(args.threads), "--job", json.dumps(job)], model
        )
        for name, per_sample in found.items():
            m["train"][name]["activation_bytes_per_sample"] = per_sample
            m["train"][name]["activations_remeasured"] = True
        print(f"{model}: {json.dumps(found)}", flush=True)


def start_cost(threads: int) -> dict[str, float]:
    """Seconds a fresh interpreter takes to import torch and every family (a job's start)."""
    code = (
        "import time; t = time.process_time(); import torch; "
        "import vitalfm.models.chronos, vitalfm.models.moirai, vitalfm.models.lag_llama; "
        "import vitalfm.engine.train, vitalfm.engine.forecast; "
        "print(time.process_time() - t)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return {
        "import_s": float(done.stdout.strip().splitlines()[-1]),
        "process_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 models, tiny batches (smoke run)")
    parser.add_argument("--plan-only", action="store_true", help="replan from --measurements")
    parser.add_argument("--measurements", type=Path, default=OUT)
    parser.add_argument("--models", nargs="+", help="only these models (default: all)")
    parser.add_argument("--stays", type=int, default=5000, help="ICU stays in the cohort")
    parser.add_argument("--stay-hours", type=float, default=120.0, help="mean ICU stay, hours")
    parser.add_argument("--scale-stays", type=int, nargs="+", default=[2500, 12000])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: CPU figures are core-hours)"
    )
    parser.add_argument(
        "--add-to", type=Path, help="measure --models and add them to this run's measurements"
    )
    parser.add_argument(
        "--activations",
        action="store_true",
        help="re-measure only the saved activations into --measurements, then replan",
    )
    parser.add_argument("--no-snakemake", action="store_true", help="skip the snakemake -n check")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.job:
        job = json.loads(args.job)
        measure = measure_activations if job.pop("activations_only", False) else measure_model
        print(json.dumps(measure(**job), default=float))
        return

    from vitalfm.config import load_config

    cfg = load_config(CONFIG)
    if args.quick:
        args.models = args.models or ["chronos-t5-tiny", "dlinear"]
    started = time.perf_counter()
    measured_by: dict[str, Any] = {"this run": True}
    if args.plan_only:
        previous = json.loads(args.measurements.read_text())
        measured = previous["measured"]
        if args.activations:
            remeasure_activations(cfg, measured, args)
        measured_by = previous.get("measured_by") or {
            k: previous.get(k) for k in ("date", "git", "settings", "total_seconds")
        }
        if measured_by.get("this run"):  # the file was written by the measuring run itself
            measured_by = {k: previous.get(k) for k in ("date", "git", "settings", "total_seconds")}
        if "_start" not in measured:  # a run stopped before measuring a job's start
            measured["_start"] = start_cost(args.threads)
            for model, result in measured.items():
                if not model.startswith("_"):
                    result["start_s"] = measured["_start"]["import_s"] + result["build_s"]
    else:
        measured = measure_all(cfg, args)
    counts = {}
    if not (args.no_snakemake or args.quick):
        counts = snakemake_counts(CONFIG)
    ours = Counter(j.rule for j in paper_jobs(cfg))
    mismatch = {r: (ours[r], counts[r]) for r in ours if counts and counts.get(r) != ours[r]}
    if mismatch:
        raise SystemExit(f"job counts differ from snakemake -n: {mismatch}")
    by_model = Counter((j.rule, j.model) for j in paper_jobs(cfg))
    cohort = Cohort(args.stays, args.stay_hours)
    result = plan(cfg, measured, cohort, args.gpus)
    scaled = {
        str(n): plan(cfg, measured, Cohort(n, args.stay_hours), args.gpus) for n in args.scale_stays
    }
    out = args.out or (
        Path(tempfile.gettempdir()) / "paper_scale_quick.json" if args.quick else OUT
    )
    report_table(result, measured, scaled)
    write_report(
        out,
        "paper_scale",
        {
            "quick": args.quick,
            "config": str(CONFIG.relative_to(ROOT)),
            "threads": args.threads,
            "repeats": args.repeats,
            "stays": args.stays,
            "stay_hours": args.stay_hours,
            "plan_only": args.plan_only,
        },
        total_seconds=time.perf_counter() - started,
        measured_by=measured_by,
        gpu_assumptions=GPU_ASSUMPTIONS,
        jobs_per_rule=dict(ours),
        snakemake_jobs_per_rule=counts,
        jobs_per_model={f"{rule}/{model}": n for (rule, model), n in sorted(by_model.items())},
        measured=measured,
        plan=result,
        plan_at_other_cohort_sizes=scaled,
    )


def report_table(
    result: dict[str, Any], measured: dict[str, Any], scaled: dict[str, dict[str, Any]]
) -> None:
    """The measurements and the plan as Markdown tables (what BENCHMARKS.md shows)."""
    rows = {(r["rule"], r["model"]): r for r in result["rows"]}
    models = [m for m in measured if not m.startswith("_")]
    print(
        "| model | parameters | CPU core-s/step, LoRA r8 / full (batch 64) | CPU core-s per "
        "series, 100 paths | GFLOP per sample (full step) | operators per step (full) | "
        "peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for model in models:
        m = measured[model]
        scale = 64 / m["measured_batch"]
        kinds = [k for k in (REFERENCE_METHOD, "full", "scratch") if k in m["train"]]
        steps = " / ".join(
            f"{m['train'][k]['step_s'] * scale:.2f}"
            + (" (derived)" if "derived_from" in m["train"][k] else "")
            for k in kinds
        )
        full = m["train"][kinds[-1]]
        print(
            f"| {model} | {m['parameters'] / 1e6:.1f}M | {steps} (at {m['measured_batch']}) | "
            f"{m['forecast']['100']['s_per_series']:.3g} | {full['flops_per_sample'] / 1e9:.2f} | "
            f"{round(full['operators_per_step']):,} | {m['peak_rss_mb'] / 1024:.1f} GB |"
        )
    print()
    print(
        "| model | fine-tunes | forecasts | CPU core-h | GPU h, fine-tune / forecast (est.) "
        "| longest job, GPU h (est.) | peak GPU GB, fine-tune / forecast (est.) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model in models:
        fine, fore = rows.get(("finetune", model)), rows.get(("forecast", model))
        cpu = sum(r["cpu_h"] for r in (fine, fore) if r)
        gpu = " / ".join(f"{r['gpu_h']:,.1f}" if r else "-" for r in (fine, fore))
        longest = max(r["job_gpu_s_max"] for r in (fine, fore) if r) / 3600
        memory = " / ".join(f"{r['gpu_memory_gb_max']:.1f}" if r else "-" for r in (fine, fore))
        print(
            f"| {model} | {fine['jobs'] if fine else 0} | {fore['jobs'] if fore else 0} | "
            f"{cpu:,.0f} | {gpu} | {longest:.2f} | {memory} |"
        )
    totals = result["totals"]
    print(
        f"| **total** | {totals['finetune']['jobs']} | {totals['forecast']['jobs']} | "
        f"{totals['finetune']['cpu_h'] + totals['forecast']['cpu_h']:,.0f} | "
        f"{totals['finetune']['gpu_h']:,.1f} / {totals['forecast']['gpu_h']:,.1f} | | |"
    )
    print()
    print("| cohort | test windows | GPU h (est.) | wall, gpu=1 / 2 / 8 (est.) |")
    print("|---|---|---|---|")
    for plan_ in (result, *scaled.values()):
        c, t = plan_["cohort"], plan_["totals"]
        wall = " / ".join(f"{h:,.1f} h" for h in plan_["wall_h"].values())
        print(
            f"| {c['stays']:,} stays x {c['windows_per_stay']:.0f} windows | "
            f"{c['windows']['test']:,.0f} | {t['finetune']['gpu_h'] + t['forecast']['gpu_h']:,.0f} "
            f"| {wall} |"
        )


if __name__ == "__main__":
    main()
