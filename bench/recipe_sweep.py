"""Benchmark: the default fine-tuning recipe, chosen by a small sweep on validation.

For each model of the study (its stand-in, pretrained by the study's ``pretrain`` rule) and each
headline method (LoRA at the study's rank 2, full fine-tuning), trains one seed at every
(learning rate, steps) of a small grid on the study's training windows and records the
validation forecast metric the Trainer selects on (min-max CRPS and MAE of the kept weights,
as scoring computes them). Nothing here looks at the test split. The README states the recipe
this sweep chose and why.

Run after the data and stand-ins exist (e.g. after the default study, or
``snakemake --cores all results/windows/validation.npz $(ls -d results/models/standins/*)``):

    .venv/bin/python bench/recipe_sweep.py --out bench/results/recipe_sweep.json

``--quick`` runs one learning rate per method and 50 steps (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from benchfacts import ROOT, load, write_report

#: Learning rates tried per method kind (full fine-tuning moves every weight: smaller ones).
GRID = {
    "lora": (1e-3, 3e-3, 1e-2),
    "full": (3e-5, 1e-4, 3e-4),
}
STEPS = (100, 300)
SETTINGS = {"lora": "lora-r2", "full": "full"}


def sweep_config(cfg: dict[str, Any], kind: str, lr: float, steps: int) -> dict[str, Any]:
    """The study's config with one method's learning rate and every run's steps set."""
    out = copy.deepcopy(cfg)
    method = next(name for name, entry in out["methods"].items() if entry["kind"] == kind)
    out["methods"][method] = {**out["methods"][method], "learning_rate": lr}
    out["methods"][method].pop("max_steps", None)
    out["training"] = {**out["training"], "max_steps": steps}
    return out


def kept_metrics(meta: dict[str, Any]) -> dict[str, float]:
    """Validation CRPS and MAE at the step whose weights training kept."""
    training = meta["training"]
    best = training.get("best_step")
    rows = [row for row in training.get("history", []) if row.get("step") == best]
    row = rows[-1] if rows else {}
    return {
        "best_step": best,
        "validation_crps": float(row.get("validation_crps", math.nan)),
        "validation_mae": float(row.get("validation_mae", math.nan)),
        "initial_crps": float(training.get("history", [{}])[0].get("validation_crps", math.nan)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--models", nargs="*", help="default: every stand-in model of the config")
    parser.add_argument("--methods", nargs="*", choices=sorted(GRID), help="default: both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/recipe_sweep.json")
    args = parser.parse_args()

    import torch

    from vitalfm.config import validate_config
    from vitalfm.steps.standalone import finetune

    torch.set_num_threads(args.threads)
    cfg = validate_config(yaml.safe_load(args.config.read_text()))
    models = args.models or [
        name for name, entry in cfg["models"].items() if entry["source"].get("standin")
    ]
    steps = (50,) if args.quick else STEPS
    grid = {kind: rates[1:2] if args.quick else rates for kind, rates in GRID.items()}
    if args.methods:
        grid = {kind: grid[kind] for kind in args.methods}
    windows = args.results / "windows"
    rows = []
    for model, kind in itertools.product(models, grid):
        standin = cfg["models"][model]["source"]["standin"]
        for lr, n_steps in itertools.product(grid[kind], steps):
            run_cfg = sweep_config(cfg, kind, lr, n_steps)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                meta = finetune(
                    run_cfg,
                    model,
                    SETTINGS[kind],
                    windows / "train.npz",
                    windows / "validation.npz",
                    Path(tmp) / "run",
                    Path(tmp) / "checkpoints",
                    standin_dir=str(args.results / "models" / "standins" / standin),
                    seed=args.seed,
                )
                seconds = time.perf_counter() - started
            row = {
                "model": model,
                "method": kind,
                "learning_rate": lr,
                "max_steps": n_steps,
                "seconds": seconds,
                **kept_metrics(meta),
            }
            rows.append(row)
            print(
                f"{model:22s} {kind:5s} lr {lr:<7g} steps {n_steps:4d}: validation CRPS "
                f"{row['validation_crps']:.5f} (start {row['initial_crps']:.5f}), MAE "
                f"{row['validation_mae']:.5f}, kept step {row['best_step']}, {seconds:.0f} s",
                flush=True,
            )
    best = {}
    for (model, kind), group in itertools.groupby(
        sorted(rows, key=lambda r: (r["model"], r["method"])),
        key=lambda r: (r["model"], r["method"]),
    ):
        group = [r for r in group if math.isfinite(r["validation_crps"])]
        if group:
            chosen = min(group, key=lambda r: r["validation_crps"])
            best[f"{model}/{kind}"] = {k: chosen[k] for k in ("learning_rate", "max_steps")}
    print("\n| model | method | lr | steps | validation CRPS | MAE | kept step | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['method']} | {r['learning_rate']:g} | {r['max_steps']} | "
            f"{r['validation_crps']:.5f} | {r['validation_mae']:.5f} | {r['best_step']} | "
            f"{r['seconds']:.0f} |"
        )
    write_report(
        args.out,
        "recipe_sweep",
        {
            "config": str(
                args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
            ),
            "grid": {k: list(v) for k, v in grid.items()},
            "steps": list(steps),
            "seed": args.seed,
            "threads": args.threads,
            "load_at_start": load(),
        },
        runs=rows,
        best_on_validation=best,
    )


if __name__ == "__main__":
    main()
