"""Where the synthetic MIMIC-III goes: PhysioNet-style CSV files, or straight into PostgreSQL.

Both sinks consume the same batches (:func:`vitalfm.synthetic.generator.iter_batches`) and the
same CSV serialisation (:mod:`vitalfm.synthetic.tables`), so a database loaded from the files
and one loaded directly hold identical rows. :func:`load_csv_dir` also loads the real MIMIC-III
v1.4 files from PhysioNet (same names, same headers), compressed or not.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from vitalfm.db.ddl import (
    TABLE_COLUMNS,
    TABLES,
    check_schema_name,
    create_indexes_sql,
    create_schema_sql,
)
from vitalfm.errors import DatabaseError, DataError
from vitalfm.io import json_text
from vitalfm.synthetic.generator import GENERATOR_VERSION, iter_batches, synthetic_settings
from vitalfm.synthetic.tables import csv_header, csv_rows

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
GZIP_LEVEL = 2
_COPY_BUFFER_BYTES = 32 << 20
_READ_SIZE = 1 << 20


def _serialised(settings: Mapping[str, Any]) -> Iterator[dict[str, tuple[bytes, int]]]:
    """Per batch: table -> (CSV rows, row count)."""
    for batch in iter_batches(settings):
        yield {t: (csv_rows(data), data.num_rows) for t, data in batch.tables.items()}


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``items`` in a background thread, ``depth`` items ahead: generation (numpy, arrow)
    overlaps with the consumer's gzip or COPY, which release the GIL. Memory stays bounded."""
    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # handed to the consumer
            q.put(err)

    worker = threading.Thread(target=produce, name="synthetic-generator", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.1)
        worker.join()


def csv_file_name(table: str) -> str:
    return f"{table.upper()}.csv.gz"


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through (the compressed bytes)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha256.update(view)
        self.raw.write(view)
        return view.nbytes


class _TableFile:
    """One gzip CSV being written: header first, then rows; reproducible bytes (mtime 0)."""

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._hash = _HashingWriter(self._raw)
        self._gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._hash, compresslevel=GZIP_LEVEL, mtime=0
        )
        self._gz.write(csv_header(table))
        self.rows = 0

    def write(self, data: bytes, rows: int) -> None:
        self._gz.write(data)
        self.rows += rows

    def close(self) -> str:
        self._gz.close()
        self._raw.close()
        return self._hash.sha256.hexdigest()


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move the finished ``tmp`` onto ``out_dir``. An existing ``out_dir`` is replaced only if it
    is empty or holds an earlier synthetic database (a MANIFEST.json or a partial one)."""
    if out_dir.exists():
        entries = list(out_dir.iterdir())
        ours = not entries or all(p.name == MANIFEST or p.name.endswith(".csv.gz") for p in entries)
        if not ours:
            raise DataError(
                f"{out_dir} exists and holds files that are not a synthetic MIMIC-III",
                "choose an empty or new output directory",
            )
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, trash)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _remove_stale_parts(out_dir: Path) -> None:
    """Delete partial outputs of earlier runs that were killed (their process is gone)."""
    for part in out_dir.parent.glob(f".{out_dir.name}.*.part"):
        pid = part.name[len(out_dir.name) + 2 :].split(".")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(part, ignore_errors=True)


def write_csv_dir(
    cfg_synthetic: Mapping[str, Any] | None, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Generate the synthetic database as PhysioNet's MIMIC-III v1.4 files; return the manifest.

    ``out_dir`` gets one ``<TABLE>.csv.gz`` per MIMIC-III table (26; tables the generator does
    not fill have a header only) and ``MANIFEST.json`` (row counts, sha256, seed, config,
    generator version). Everything is written in a hidden sibling directory that is renamed to
    ``out_dir`` when complete, so an interrupted run leaves nothing that looks finished.
    """
    settings = synthetic_settings(cfg_synthetic)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    tmp.mkdir()  # mode from the umask (tempfile.mkdtemp would make it private)
    try:
        files = {t: _TableFile(tmp / csv_file_name(t), t) for t in TABLE_COLUMNS}
        for batch in _prefetched(_serialised(settings)):
            for table, (data, rows) in batch.items():
                files[table].write(data, rows)
        manifest: dict[str, Any] = {
            "format": "MIMIC-III v1.4 CSV (PhysioNet layout)",
            "generator": "vitalfm.synthetic",
            "generator_version": GENERATOR_VERSION,
            "seed": settings["seed"],
            "config": settings,
            "tables": {},
        }
        for table, f in files.items():
            digest = f.close()
            manifest["tables"][table] = {
                "file": f.path.name,
                "rows": f.rows,
                "sha256": digest,
            }
        (tmp / MANIFEST).write_text(json_text(manifest))
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(csv_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(csv_dir) / MANIFEST).read_text())


# --- loading into PostgreSQL ------------------------------------------------------------------


def _create_schema(cur: Any, schema: str, drop_existing: bool) -> None:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if cur.fetchone() is not None and not drop_existing:
        raise DatabaseError(
            f"schema '{schema}' already exists in this database",
            "load into a new schema name, or pass drop_existing=True to replace it",
        )
    cur.execute(create_schema_sql(schema, drop_existing=drop_existing))


def _finish(cur: Any, schema: str, tables: Sequence[str], with_indexes: bool) -> None:
    sql = create_indexes_sql(schema, tuple(tables)) if with_indexes else ""
    if sql:
        cur.execute(sql)
    for table in tables:
        cur.execute(f"ANALYZE {schema}.{table}")


def _find_csv(csv_dir: Path, table: str) -> Path | None:
    for name in (
        f"{table.upper()}.csv.gz",
        f"{table.upper()}.csv",
        f"{table}.csv.gz",
        f"{table}.csv",
    ):
        if (csv_dir / name).is_file():
            return csv_dir / name
    return None


@contextlib.contextmanager
def _open_csv(path: Path) -> Iterator[IO[bytes]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        yield f


def _header_columns(path: Path, table: str) -> list[str]:
    with _open_csv(path) as f:
        line = f.readline().decode("utf-8-sig").strip()
    columns = [c.strip().strip('"').lower() for c in line.split(",")]
    unknown = [c for c in columns if c not in TABLE_COLUMNS[table]]
    if unknown or not columns:
        raise DataError(
            f"{path} has a header that does not match MIMIC-III's {table} table "
            f"(unknown column(s): {', '.join(unknown) or '(empty header)'})",
            "use the MIMIC-III v1.4 CSV files as distributed by PhysioNet, or regenerate them",
        )
    return columns


def load_csv_dir(
    conn: Any,
    csv_dir: str | os.PathLike[str],
    schema: str = "mimiciii",
    with_indexes: bool = True,
    *,
    tables: Iterable[str] | None = None,
    drop_existing: bool = False,
) -> dict[str, int]:
    """Create the MIMIC-III schema and COPY the CSV files of ``csv_dir`` into it.

    Works for this generator's output and for PhysioNet's MIMIC-III v1.4 files
    (``ADMISSIONS.csv.gz`` or ``ADMISSIONS.csv``, ...). Every table is created; ``tables``
    limits which files are loaded (default: every file present). Then indexes and ANALYZE.
    Runs in the connection's transaction and commits at the end; on error it rolls back, so
    the schema is either complete or absent. Returns rows loaded per table.
    """
    check_schema_name(schema)
    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise DataError(f"{csv_dir} is not a directory", "pass the folder holding the CSV files")
    wanted = list(TABLE_COLUMNS) if tables is None else list(tables)
    unknown = [t for t in wanted if t not in TABLES]
    if unknown:
        raise DataError(f"unknown MIMIC-III table(s): {', '.join(unknown)}", "check the names")
    found = {t: _find_csv(csv_dir, t) for t in wanted}
    if tables is not None:
        missing = [t for t, p in found.items() if p is None]
        if missing:
            raise DataError(
                f"{csv_dir} lacks the CSV file(s) of {', '.join(missing)}",
                "regenerate the synthetic database, or download the missing MIMIC-III files",
            )
    loaded: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            _create_schema(cur, schema, drop_existing)
            for table, path in found.items():
                if path is None:
                    continue
                columns = _header_columns(path, table)
                sql = (
                    f"COPY {schema}.{table} ({', '.join(columns)}) FROM STDIN "
                    "WITH (FORMAT csv, HEADER true)"
                )
                with _open_csv(path) as f:
                    cur.copy_expert(sql, f, size=_READ_SIZE)
                loaded[table] = cur.rowcount
                log.debug("loaded %s: %d rows", table, cur.rowcount)
            _finish(cur, schema, list(loaded), with_indexes)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return loaded


def load_direct(
    conn: Any,
    cfg_synthetic: Mapping[str, Any] | None,
    schema: str = "mimiciii",
    with_indexes: bool = True,
    *,
    drop_existing: bool = False,
) -> dict[str, int]:
    """Generate the synthetic database and COPY it straight into the server, without files.

    Same batches and CSV rows as :func:`write_csv_dir`; each table's rows are buffered in
    memory up to 32 MB and sent with one COPY. Commits at the end; returns rows per table.
    """
    check_schema_name(schema)
    settings = synthetic_settings(cfg_synthetic)
    buffers: dict[str, bytearray] = {t: bytearray() for t in TABLE_COLUMNS}
    counts: dict[str, int] = dict.fromkeys(TABLE_COLUMNS, 0)

    def flush(cur: Any, table: str) -> None:
        if buffers[table]:
            cur.copy_expert(
                f"COPY {schema}.{table} FROM STDIN WITH (FORMAT csv)",
                io.BytesIO(buffers[table]),
                size=_READ_SIZE,
            )
            buffers[table] = bytearray()

    try:
        with conn.cursor() as cur:
            _create_schema(cur, schema, drop_existing)
            for batch in _prefetched(_serialised(settings)):
                for table, (data, rows) in batch.items():
                    buffers[table] += data
                    counts[table] += rows
                    if len(buffers[table]) >= _COPY_BUFFER_BYTES:
                        flush(cur, table)
            for table in TABLE_COLUMNS:
                flush(cur, table)
            _finish(cur, schema, [t for t, n in counts.items() if n], with_indexes)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return counts


def table_row_counts(
    conn: Any, schema: str = "mimiciii", tables: Iterable[str] | None = None
) -> dict[str, int]:
    """Exact ``count(*)`` of each MIMIC-III table present in ``schema`` (absent ones skipped)."""
    check_schema_name(schema)
    out: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in TABLE_COLUMNS if tables is None else tables:
            cur.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            )
            if cur.fetchone() is None:
                continue
            cur.execute(f"SELECT count(*) FROM {schema}.{table}")
            out[table] = int(cur.fetchone()[0])
    return out
