"""Benchmark: wall time of the whole default study, with 1 core and with every core.

Each measurement runs ``snakemake --cores N`` in its own fresh copy of the repository (tracked
files plus files git does not ignore, with this checkout's ``.venv`` linked in), so nothing is
reused between the two. Afterwards it reads every job's Snakemake benchmark file and sums the
seconds per rule, which shows the rules that dominate, and every job's own record of where its
time went (the ``job timing`` line that ends each job log, :mod:`vitalfm.job_timing`):
interpreter and imports, data loading, model loading, compute, writing. Goals (issue 15): the
default study within 20 minutes on the 2-core machine, a speed-up of at least 1.8x from 1 core
to 2, and job overhead (all but compute) at most 15 % of the summed job time.

    .venv/bin/python bench/study_walltime.py --cores 1 2 --out bench/results/study_walltime.json

``--configfile`` times another config instead (e.g. a reduced one for a quick check);
``--add-to`` keeps the runs of an earlier report of this script (same study code) and adds these,
so the two measurements can be taken at different times of a session.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchfacts import ROOT, load, write_report


def fresh_copy(dest: Path) -> Path:
    """Copy what a clone would hold and link this checkout's virtual environment."""
    from vitalfm.testing import copy_checkout

    copy_checkout(ROOT, dest)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


# What the study's run time depends on; commits that touch only docs, tests or bench/ do not count.
STUDY_CODE = ("Snakefile", "workflow", "scripts", "src", "config.yaml", "envs")


def same_study_code(commit: str) -> bool:
    """Whether the study's code at ``commit`` is the code in this checkout."""
    done = subprocess.run(
        ["git", "diff", "--quiet", commit, "--", *STUDY_CODE], cwd=ROOT, check=False
    )
    return done.returncode == 0


def rule_seconds(results: Path) -> dict[str, dict[str, float]]:
    """Per rule: jobs, summed wall seconds and CPU seconds from Snakemake's benchmark files."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "s": 0.0, "cpu_s": 0.0})
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        totals[rule]["jobs"] += 1
        totals[rule]["s"] += float(row["s"])
        totals[rule]["cpu_s"] += float(row.get("cpu_time") or "nan")
    return dict(sorted(totals.items(), key=lambda item: -item[1]["s"]))


def job_phases(results: Path) -> dict[str, Any]:
    """Per rule and in total: jobs, summed seconds per phase and the overhead share, from the
    ``job timing`` line each job's log ends with."""
    from vitalfm.job_timing import read_log_timing

    per_rule: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    missing = []
    for path in sorted((results / "logs").rglob("*.log")):
        timing = read_log_timing(path.read_text(errors="replace"))
        rule = path.relative_to(results / "logs").parts[0].removesuffix(".log")
        if timing is None:
            missing.append(str(path.relative_to(results)))
            continue
        per_rule[rule]["jobs"] += 1
        for key, value in timing.items():
            per_rule[rule][key] += value
    total: dict[str, float] = defaultdict(float)
    for phases in per_rule.values():
        for key, value in phases.items():
            total[key] += value
    share = total["overhead_s"] / total["total_s"] if total["total_s"] else float("nan")
    return {
        "rules": {rule: dict(phases) for rule, phases in per_rule.items()},
        "total": dict(total),
        "overhead_share": share,
        "logs_without_timing": missing,
    }


def run_study(cores: int, configfile: str | None, keep: Path | None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"study-cores{cores}-"))
    try:
        fresh_copy(workdir)
        command = [str(workdir / ".venv/bin/snakemake"), "--cores", str(cores), "--quiet", "all"]
        if configfile:
            command += ["--configfile", str(Path(configfile).resolve())]
        # The copy's own sources, not the editable install's, are the ones timed.
        env = {**os.environ, "PYTHONPATH": str(workdir / "src")}
        load_before = load()
        started = time.perf_counter()
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"the study failed with --cores {cores}:\n{done.stderr[-4000:]}")
        rules = rule_seconds(workdir / "results")
        phases = job_phases(workdir / "results")
        jobs = sum(int(r["jobs"]) for r in rules.values())
        print(
            f"--cores {cores}: {wall:.0f} s wall, {jobs} benchmarked jobs, "
            f"overhead {phases['overhead_share']:.1%} of summed job time",
            flush=True,
        )
        return {
            "cores": cores,
            "wall_s": wall,
            "load_before": load_before,
            "benchmarked_jobs": jobs,
            "rules": rules,
            "phases": phases,
        }
    finally:
        if keep is not None:
            shutil.copytree(workdir / "results", keep / f"cores{cores}", dirs_exist_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--configfile", help="time this config instead of config.yaml")
    parser.add_argument("--keep", type=Path, help="copy each run's results/ here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/study_walltime.json")
    parser.add_argument("--add-to", type=Path, help="an earlier report whose runs to keep")
    args = parser.parse_args()
    measured = []
    if args.add_to:
        earlier = json.loads(args.add_to.read_text())
        if not same_study_code(earlier["git"]["commit"]):
            raise SystemExit(f"{args.add_to} measured other study code; measure both again")
        measured = [m for m in earlier["runs"] if m["cores"] not in args.cores]
    measured += [run_study(cores, args.configfile, args.keep) for cores in args.cores]
    by_cores = {m["cores"]: m["wall_s"] for m in measured}
    fewest, most = min(by_cores), max(by_cores)
    speedup = by_cores[fewest] / by_cores[most] if most != fewest else None
    if speedup is not None:
        print(f"speed-up {fewest} -> {most} cores: {speedup:.2f}x", file=sys.stderr)
    write_report(
        args.out,
        "study_walltime",
        {"cores": sorted(by_cores), "configfile": args.configfile or "config.yaml"},
        runs=measured,
        speedup=speedup,
        goals={"wall_s_at_most": 1200, "speedup_at_least": 1.8, "overhead_share_at_most": 0.15},
    )


if __name__ == "__main__":
    main()
