"""Benchmark: where Chronos-T5's sampler spends its time, and whether its top-k draw can be cut.

The default study's largest block of compute is Chronos-T5 sampling (autoregressive, 20 paths,
a 4,096-token vocabulary). This script profiles one forecast batch of the stand-in (128 series
x 20 paths x 12 steps, the study's ``forecast.batch_size``, one thread as a study job runs) with
torch's profiler, then times exact ways to draw one token among the top-k (k = 50) logits of
2,560 rows x 4,096 tokens, the shape of every decoding step after the first:

* ``topk``: ``torch.topk`` + softmax + multinomial over the k values (the engine's sampler);
* ``topk_unsorted``: the same with ``sorted=False`` (draws map to other indices: same
  distribution, another stream);
* ``argpartition``: numpy's introselect, then the k values sorted;
* ``blocks``: the top-k of per-block maxima first (blocks of 8), then top-k among those
  blocks' members (exact: a top-k element's block maximum is among the k largest);
* ``rejection``: inverse-CDF draw from the full softmax, kept when fewer than k logits exceed
  it (exact top-k sampling without a top-k), redrawn otherwise.

Every variant's selected values are checked equal to ``torch.topk``'s before timing. Usage:

    .venv/bin/python bench/t5_topk.py [--standin <folder>] [--out <json>]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from benchfacts import load, summarise, write_report

ROOT = Path(__file__).resolve().parents[1]
ROWS, VOCAB, K = 2560, 4096, 50


def timed(fn: Callable[[], Any], repeats: int = 7) -> dict[str, float]:
    fn()
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        fn()
        times.append((time.perf_counter() - begun) * 1000)
    return summarise(times)


def draw_topk(logits: torch.Tensor, sorted_: bool = True) -> torch.Tensor:
    values, indices = logits.topk(K, dim=-1, sorted=sorted_)
    choice = torch.multinomial(torch.softmax(values, dim=-1), 1)
    return indices.gather(1, choice)


def draw_argpartition(logits: torch.Tensor) -> torch.Tensor:
    array = logits.numpy()
    indices = np.argpartition(array, VOCAB - K, axis=-1)[:, VOCAB - K :]
    values = np.take_along_axis(array, indices, -1)
    order = np.argsort(-values, axis=-1, kind="stable")
    values = torch.from_numpy(np.take_along_axis(values, order, -1))
    indices = torch.from_numpy(np.take_along_axis(indices, order, -1))
    choice = torch.multinomial(torch.softmax(values, dim=-1), 1)
    return indices.gather(1, choice)


def blocks_topk(logits: torch.Tensor, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    rows = logits.shape[0]
    maxima = logits.view(rows, VOCAB // block, block).amax(-1)
    _, chosen = maxima.topk(K, dim=-1, sorted=False)
    members = (chosen[:, :, None] * block + torch.arange(block)).reshape(rows, -1)
    values, where = logits.gather(1, members).topk(K, dim=-1)
    return values, members.gather(1, where)


def draw_blocks(logits: torch.Tensor) -> torch.Tensor:
    values, indices = blocks_topk(logits)
    choice = torch.multinomial(torch.softmax(values, dim=-1), 1)
    return indices.gather(1, choice)


def draw_rejection(logits: torch.Tensor) -> torch.Tensor:
    token = torch.empty(logits.shape[0], 1, dtype=torch.long)
    pending = torch.arange(logits.shape[0])
    while len(pending):
        rows = logits[pending]
        weights = torch.exp(rows - rows.amax(-1, keepdim=True)).cumsum(-1)
        uniform = torch.rand(len(pending), 1) * weights[:, -1:]
        drawn = torch.searchsorted(weights, uniform).clamp(max=VOCAB - 1)
        inside = (rows > rows.gather(1, drawn)).sum(-1) < K
        token[pending[inside]] = drawn[inside]
        pending = pending[~inside]
    return token


def profile_batch(standin: Path) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from vitalfm.models.base import ModelSource
    from vitalfm.models.chronos.base import ChronosForecaster

    forecaster = ChronosForecaster.load(ModelSource(path=str(standin)), torch.device("cpu"))
    forecaster.module.eval()
    torch.manual_seed(0)
    context = 80 + 10 * torch.randn(128, 24)
    wall = timed(lambda: forecaster.predict(context, 12, 20), repeats=3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forecaster.predict(context, 12, 20)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    top = {e.key: round(e.self_cpu_time_total / total, 4) for e in events[:8]}
    return {"batch_wall_ms": wall, "self_cpu_share": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--standin", type=Path, help="a Chronos-T5 stand-in folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/t5_topk.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = load()
    if args.standin is None:
        from vitalfm.models.chronos.base import ChronosForecaster

        args.standin = Path("/tmp/vitalfm-bench-t5-standin")
        ChronosForecaster.standin("chronos-t5", horizon=12, seed=0).save_pretrained(args.standin)
    profiled = profile_batch(args.standin)
    torch.manual_seed(0)
    logits = torch.randn(ROWS, VOCAB) * 3
    reference = logits.topk(K, dim=-1).values
    assert torch.equal(blocks_topk(logits)[0], reference)
    array_values = np.sort(np.partition(logits.numpy(), VOCAB - K, axis=-1)[:, VOCAB - K :])
    assert np.array_equal(array_values[:, ::-1], reference.numpy())
    draws = draw_rejection(logits)
    assert bool(((logits > logits.gather(1, draws)).sum(-1) < K).all())
    variants = {
        "topk": lambda: draw_topk(logits),
        "topk_unsorted": lambda: draw_topk(logits, sorted_=False),
        "argpartition": lambda: draw_argpartition(logits),
        "blocks": lambda: draw_blocks(logits),
        "rejection": lambda: draw_rejection(logits),
    }
    timings = {name: timed(fn) for name, fn in variants.items()}
    base = timings["topk"]["median"]
    speedups = {name: round(base / t["median"], 3) for name, t in timings.items()}
    for name, t in timings.items():
        print(f"{name:14s} {t['median']:8.1f} ms  {speedups[name]:.2f}x topk")
    print("batch:", profiled)
    write_report(
        args.out,
        "t5_topk",
        {"rows": ROWS, "vocab": VOCAB, "k": K, "threads": 1},
        load_before=load_before,
        load_after=load(),
        profile=profiled,
        draw_ms=timings,
        speedup_vs_topk=speedups,
    )


if __name__ == "__main__":
    main()
