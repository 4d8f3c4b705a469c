"""Benchmark: cohort + vitals extraction as chartevents grows, against the raw COPY floor.

For each database size it builds a synthetic MIMIC-III in an embedded PostgreSQL (COPY, with
the mimic-code-style indexes plus the chartevents (icustay_id, itemid, charttime) index),
reads the vital partitions once (the first read sets hint bits; every side then reads the same
warm table), and measures side by side, alternating and rotating the order per repeat, first
with that index and then after dropping it:

* project: ``vitalfm`` cohort query + ``extract_vitals`` (one binary COPY for the cohort,
           decoded, cleaned and written to parquet in a second thread);
* raw:     the floor: psycopg2 ``copy_expert`` of the identical statements the project runs
           (``SET LOCAL jit = off`` + the same ``COPY (SELECT ...) TO STDOUT``) into a sink
           that discards the bytes; cohort query not timed, no decoding, no file;
* batched: (sizes up to ``--small-max-patients``) the project with the configured
           ``vitals.stays_per_query`` batches, as the workflow runs it today;
* naive:   (same sizes, with the index only) the same cohort, then ``pandas.read_sql`` of
           one ICU stay's vital rows at a time, cleaned with the same rules: hours at 100M rows.

Each run is its own process, so peak RSS is that side's alone. Sides that fetch must agree on
the rows. Usage (figures go to BENCHMARKS.md by hand):

    .venv/bin/python bench/extraction.py --patients 9000 163000
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchfacts import ROOT, load, run_json_subprocess, summarise, write_report

SCHEMA = "mimiciii"
ICUSTAY_INDEX = "chartevents_idx02"  # vitalfm.db.ddl: chartevents (icustay_id, itemid, charttime)
SERVER_SETTINGS = ("shared_buffers=512MB", "max_wal_size=4GB")


def _peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``getrusage``'s ru_maxrss: Linux carries that over
    ``exec`` from the parent, so every worker would report at least the builder's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open_cohort(dsn: str, schema: str) -> tuple[Any, dict[str, Any], list[int]]:
    """Read-only connection, validated default config and the default cohort's stay ids:
    the same start for every side."""
    import psycopg2

    from vitalfm.config import validate_config
    from vitalfm.data.cohort import build_cohort, fetch_icu_stays

    cfg = validate_config({})
    conn = psycopg2.connect(dsn)
    conn.set_session(readonly=True)
    stays = fetch_icu_stays(conn, schema, cfg["cohort"]["icd9_codes"])
    cohort = build_cohort(stays, cfg["cohort"], 9.0).table
    return conn, cfg, cohort.column("icustay_id").to_pylist()


def _project(dsn: str, schema: str, out: str, stays_per_query: int | None) -> dict[str, Any]:
    from vitalfm.data.vitals import extract_vitals, vital_names_from_config

    started = time.perf_counter()
    conn, cfg, stay_ids = _open_cohort(dsn, schema)
    cohort_s = time.perf_counter() - started
    if stays_per_query == -1:  # the workflow's setting
        stays_per_query = cfg["vitals"]["stays_per_query"]
    names = vital_names_from_config(cfg["vitals"])
    result = extract_vitals(conn, schema, stay_ids, names, out, stays_per_query=stays_per_query)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "extract_seconds": seconds - cohort_s,
        "cohort_seconds": cohort_s,
        "stays_per_query": stays_per_query,
        "rows_fetched": int(result.summary["rows_fetched"].sum()),
        "rows_kept": result.rows,
        "stays": len(stay_ids),
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_project(dsn: str, schema: str, out: str) -> dict[str, Any]:
    return _project(dsn, schema, out, None)


def run_batched(dsn: str, schema: str, out: str) -> dict[str, Any]:
    return _project(dsn, schema, out, -1)


class _Discard:
    """The least a psycopg2 COPY sink can do: take each row and drop it."""

    def write(self, data: bytes) -> int:
        return len(data)


def run_raw(dsn: str, schema: str, out: str) -> dict[str, Any]:
    """The floor: the project's own statements, the bytes discarded."""
    from vitalfm import mimic
    from vitalfm.data.vitals import turn_off_jit, vital_names_from_config, vitals_copy_sql

    conn, cfg, stay_ids = _open_cohort(dsn, schema)
    itemids = sorted(i.itemid for i in mimic.items_for(vital_names_from_config(cfg["vitals"])))
    started = time.perf_counter()
    sql = vitals_copy_sql(conn, schema, itemids, sorted(set(stay_ids)))
    with conn.cursor() as cur:
        turn_off_jit(conn, cur)
        cur.copy_expert(sql, _Discard())
        rows = cur.rowcount
    conn.rollback()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_fetched": rows,
        "stays": len(stay_ids),
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_naive(dsn: str, schema: str, out: str) -> dict[str, Any]:
    """What one writes first: a read_sql per ICU stay, cleaning in pandas."""
    import warnings

    import numpy as np
    import pandas as pd

    from vitalfm import mimic

    warnings.filterwarnings("ignore", message=".*SQLAlchemy.*")
    started = time.perf_counter()
    conn, _, stay_ids = _open_cohort(dsn, schema)
    items = {i.itemid: i for i in mimic.CHART_ITEMS}
    itemids = ",".join(map(str, items))
    parts, fetched = [], 0
    for stay in stay_ids:
        frame = pd.read_sql(
            f"SELECT icustay_id, charttime, itemid, valuenum, error FROM {schema}.chartevents "
            f"WHERE icustay_id = %(stay)s AND itemid IN ({itemids})",
            conn,
            params={"stay": stay},
        )
        fetched += len(frame)
        frame = frame[(frame["error"].fillna(0) != 1) & frame["valuenum"].notna()]
        low = frame["itemid"].map(lambda i: items[i].low)
        high = frame["itemid"].map(lambda i: items[i].high)
        inclusive = frame["itemid"].map(lambda i: items[i].high_inclusive)
        value = frame["valuenum"]
        ok = (value > low) & np.where(inclusive, value <= high, value < high)
        frame = frame[ok].copy()
        fahrenheit = frame["itemid"].map(lambda i: items[i].fahrenheit).astype(bool)
        frame.loc[fahrenheit, "valuenum"] = (frame.loc[fahrenheit, "valuenum"] - 32) / 1.8
        frame["vital"] = frame["itemid"].map(lambda i: items[i].vital)
        parts.append(frame)
    result = pd.concat(parts, ignore_index=True)
    result.drop(columns=["error"]).to_parquet(out)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows_fetched": fetched,
        "rows_kept": len(result),
        "stays": len(stay_ids),
        "peak_rss_mb": _peak_rss_mb(),
    }


WORKERS = {"project": run_project, "raw": run_raw, "batched": run_batched, "naive": run_naive}


def _in_subprocess(side: str, dsn: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        worker = ["--worker", side, "--dsn", dsn, "--schema", SCHEMA]
        out = ["--worker-out", str(Path(tmp) / "out.parquet")]
        before = load()
        result = run_json_subprocess([__file__, *worker, *out], side)
        result["load_before"], result["load_after"] = before, load()
        return result


def _plan_scans(conn: Any) -> dict[str, int]:
    """Scan nodes of the plan of the project's query (EXPLAIN without ANALYZE: no extra scan)."""
    from vitalfm import mimic
    from vitalfm.config import validate_config
    from vitalfm.data.cohort import build_cohort, fetch_icu_stays
    from vitalfm.data.vitals import turn_off_jit, vital_names_from_config, vitals_copy_sql

    cfg = validate_config({})
    stays = fetch_icu_stays(conn, SCHEMA, cfg["cohort"]["icd9_codes"])
    stay_ids = sorted(
        build_cohort(stays, cfg["cohort"], 9.0).table.column("icustay_id").to_pylist()
    )
    itemids = sorted(i.itemid for i in mimic.items_for(vital_names_from_config(cfg["vitals"])))
    copy = vitals_copy_sql(conn, SCHEMA, itemids, stay_ids)
    select = copy[len("COPY (") : copy.rindex(") TO STDOUT")]
    with conn.cursor() as cur:
        turn_off_jit(conn, cur)
        cur.execute("EXPLAIN " + select)
        lines = [row[0] for row in cur.fetchall()]
    conn.rollback()
    nodes: dict[str, int] = {}
    for line in lines:
        text = line.strip().removeprefix("->").strip().split("  (cost")[0]
        node = re.split(r" on | using ", text)[0]
        if "Scan" in node or "Gather" in node:
            nodes[node] = nodes.get(node, 0) + 1
    return nodes


def _first_read(dsn: str) -> float:
    """One raw pass, not recorded as a side: the first read of freshly loaded pages sets their
    hint bits (writes); after it, every side reads the same warm table."""
    return float(_in_subprocess("raw", dsn)["seconds"])


def _measure_state(dsn: str, sides: list[str], repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    for repeat in range(repeats):
        shift = repeat % len(sides)
        for side in sides[shift:] + sides[:shift]:
            result = _in_subprocess(side, dsn)
            runs[side].append(result)
            print(
                f"    {side:8s} {result['seconds']:7.1f} s  {result['rows_fetched']:,} rows  "
                f"peak {result['peak_rss_mb']:.0f} MB  load {result['load_before']:.1f}",
                flush=True,
            )
    # The naive side's own SQL fetches the same rows; its kept rows must match too.
    fetched = {r["rows_fetched"] for side in sides for r in runs[side]}
    kept = {r["rows_kept"] for side in sides for r in runs[side] if "rows_kept" in r}
    rows = max(fetched)
    agree = len(fetched) == 1 and len(kept) <= 1
    state: dict[str, Any] = {"rows_fetched": rows, "sides_agree": agree, "runs": runs}
    for side in sides:
        seconds = [r["seconds"] for r in runs[side]]
        state[side] = {
            "seconds": summarise(seconds),
            "rows_per_s": rows / summarise(seconds)["median"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[side]),
        }
        if side in ("project", "batched"):
            extract = summarise([r["extract_seconds"] for r in runs[side]])
            state[side]["extract_seconds"] = extract
            state[side]["extract_rows_per_s"] = rows / extract["median"]
    # Paired per repeat: the project's extraction over the floor measured next to it.
    ratios = [
        p["extract_seconds"] / r["seconds"]
        for p, r in zip(runs["project"], runs["raw"], strict=True)
    ]
    state["project_over_raw"] = summarise(ratios)
    return state


def measure_size(n_patients: int, seed: int, repeats: int, small: bool) -> dict[str, Any]:
    from vitalfm.config import validate_config
    from vitalfm.db.embedded import EmbeddedPostgres
    from vitalfm.synthetic import load_direct, table_row_counts

    cfg = validate_config({"synthetic": {"n_patients": n_patients, "seed": seed}})
    result: dict[str, Any] = {"n_patients": n_patients}
    with EmbeddedPostgres(extra_settings=SERVER_SETTINGS) as pg:
        conn = pg.connect()
        started = time.perf_counter()
        load_direct(conn, cfg["synthetic"], schema=SCHEMA)
        conn.commit()
        result["build_seconds"] = time.perf_counter() - started
        counts = table_row_counts(conn, SCHEMA, ["chartevents", "icustays"])
        result["chartevents_rows"], result["icustays"] = counts["chartevents"], counts["icustays"]
        with conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            result["database_bytes"] = int(cur.fetchone()[0])
        conn.commit()
        print(
            f"  built {counts['chartevents']:,} chartevents rows in "
            f"{result['build_seconds']:.0f} s ({result['database_bytes'] / 2**30:.1f} GiB)",
            flush=True,
        )
        result["first_read_seconds"] = _first_read(pg.dsn())
        print(f"  first read {result['first_read_seconds']:.1f} s", flush=True)
        sides = ["project", "raw"] + (["batched", "naive"] if small else [])
        print("  with the icustay_id index", flush=True)
        result["plan_with_index"] = _plan_scans(conn)
        result["with_index"] = _measure_state(pg.dsn(), sides, repeats)
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(f"DROP INDEX {SCHEMA}.{ICUSTAY_INDEX}")
        conn.commit()
        result["drop_index_seconds"] = time.perf_counter() - started
        print("  without it", flush=True)
        result["plan_without_index"] = _plan_scans(conn)
        no_naive = [s for s in sides if s != "naive"]  # per-stay scans without an index: hours
        result["without_index"] = _measure_state(pg.dsn(), no_naive, repeats)
        conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--seed", type=int, default=2405)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--small-max-patients",
        type=int,
        default=10000,
        help="run the batched and naive sides only up to this many patients",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/extraction.json")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.dsn, args.schema, args.worker_out)))
        return
    runs = []
    for n in args.patients:
        print(f"size: {n} patients (load {load():.1f})", flush=True)
        runs.append(measure_size(n, args.seed, args.repeats, n <= args.small_max_patients))
        for state in ("with_index", "without_index"):
            s = runs[-1][state]
            print(
                f"  {state}: project {s['project']['rows_per_s']:,.0f} rows/s, "
                f"{s['project_over_raw']['median']:.2f}x the raw COPY",
                flush=True,
            )
        settings = {
            "patients": args.patients,
            "seed": args.seed,
            "repeats": args.repeats,
            "small_max_patients": args.small_max_patients,
            "server_settings": list(SERVER_SETTINGS),
        }
        write_report(args.out, "extraction", settings, runs=runs)  # after each size
    disagreeing = [
        (r["n_patients"], state)
        for r in runs
        for state in ("with_index", "without_index")
        if not r[state]["sides_agree"]
    ]
    if disagreeing:
        raise SystemExit(f"sides fetched or kept different rows at {disagreeing}")


if __name__ == "__main__":
    main()
