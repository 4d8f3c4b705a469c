"""Benchmark: cohort + vitals extraction against a naive per-stay pandas.read_sql baseline.

For each database size it builds a synthetic MIMIC-III in an embedded PostgreSQL (COPY, with
the mimic-code-style indexes plus the chartevents (icustay_id, itemid, charttime) index), then
measures, each in its own process so that peak RSS is that method's alone:

* project: ``vitalfm`` cohort query + streaming COPY extraction into parquet;
* naive:   the same cohort, then ``pandas.read_sql`` of the vital rows of one ICU stay at a
           time, cleaned with the same rules, concatenated and written to parquet.

Both must produce the same number of rows. Usage (figures go to BENCHMARKS.md by hand):

    .venv/bin/python bench/extraction.py --patients 2500 10000 --out bench/results/extraction.json
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from benchfacts import ROOT, run_json_subprocess, write_report


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open_cohort(dsn: str, schema: str) -> tuple[Any, dict[str, Any], list[int]]:
    """Read-only connection, validated default config and the default cohort's stay ids:
    the same start for both methods, timed as part of each."""
    import psycopg2

    from vitalfm.config import validate_config
    from vitalfm.data.cohort import build_cohort, fetch_icu_stays

    cfg = validate_config({})
    conn = psycopg2.connect(dsn)
    conn.set_session(readonly=True)
    stays = fetch_icu_stays(conn, schema, cfg["cohort"]["icd9_codes"])
    cohort = build_cohort(stays, cfg["cohort"], 9.0).table
    return conn, cfg, cohort.column("icustay_id").to_pylist()


def run_project(dsn: str, schema: str, out: str) -> dict[str, Any]:
    from vitalfm.data.vitals import extract_vitals, vital_names_from_config

    started = time.perf_counter()
    conn, cfg, stay_ids = _open_cohort(dsn, schema)
    result = extract_vitals(conn, schema, stay_ids, vital_names_from_config(cfg["vitals"]), out)
    seconds = time.perf_counter() - started
    fetched = int(result.summary["rows_fetched"].sum())
    return {
        "seconds": seconds,
        "rows_fetched": fetched,
        "rows_kept": result.rows,
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


def _in_subprocess(method: str, dsn: str, schema: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        worker = ["--worker", method, "--dsn", dsn, "--schema", schema]
        out = ["--worker-out", str(Path(tmp) / "out.parquet")]
        return run_json_subprocess([__file__, *worker, *out], method)


def measure_size(n_patients: int, seed: int) -> dict[str, Any]:
    from vitalfm.config import validate_config
    from vitalfm.db.embedded import EmbeddedPostgres
    from vitalfm.synthetic import load_direct, table_row_counts

    schema = "mimiciii"
    cfg = validate_config({"synthetic": {"n_patients": n_patients, "seed": seed}})
    with EmbeddedPostgres(extra_settings=("shared_buffers=512MB", "max_wal_size=4GB")) as pg:
        conn = pg.connect()
        started = time.perf_counter()
        load_direct(conn, cfg["synthetic"], schema=schema)
        conn.commit()
        build_s = time.perf_counter() - started
        counts = table_row_counts(conn, schema)
        conn.close()
        print(f"  built {counts['chartevents']:,} chartevents rows in {build_s:.0f} s", flush=True)
        project = _in_subprocess("project", pg.dsn(), schema)
        naive = _in_subprocess("naive", pg.dsn(), schema)
    if project["rows_kept"] != naive["rows_kept"]:
        raise RuntimeError(f"methods disagree: {project['rows_kept']} vs {naive['rows_kept']}")
    for m in (project, naive):
        m["rows_per_s"] = m["rows_fetched"] / m["seconds"]
    return {
        "n_patients": n_patients,
        "chartevents_rows": counts["chartevents"],
        "icustays": counts["icustays"],
        "build_seconds": build_s,
        "project": project,
        "naive": naive,
        "speedup": project["rows_per_s"] / naive["rows_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[2500, 10000])
    parser.add_argument("--seed", type=int, default=2405)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/extraction.json")
    parser.add_argument("--worker", choices=["project", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_project if args.worker == "project" else run_naive
        print(json.dumps(run(args.dsn, args.schema, args.worker_out)))
        return
    runs = []
    for n in args.patients:
        print(f"size: {n} patients", flush=True)
        result = measure_size(n, args.seed)
        runs.append(result)
        p, b = result["project"], result["naive"]
        print(
            f"  project {p['rows_per_s']:,.0f} rows/s ({p['seconds']:.1f} s, peak "
            f"{p['peak_rss_mb']:.0f} MB) | naive {b['rows_per_s']:,.0f} rows/s "
            f"({b['seconds']:.1f} s, peak {b['peak_rss_mb']:.0f} MB) | x{result['speedup']:.1f}",
            flush=True,
        )
    write_report(args.out, "extraction", {"patients": args.patients, "seed": args.seed}, runs=runs)


if __name__ == "__main__":
    main()
