"""Vital signs of the cohort's ICU stays, streamed from chartevents to a long parquet file.

One query reads the whole cohort (set-based, not per stay): it names the vital itemids as
constants (PostgreSQL prunes ``chartevents`` to the vital partitions at plan time) and the
cohort's ``icustay_id`` values, which the server hashes while it scans each vital partition
once, or looks up in an index on ``icustay_id`` when the cohort is small. Batches of stays
(``stays_per_query``) are still possible, but without such an index each batch rescans every
vital partition, so their cost grows with cohort size x table size.

Rows arrive through ``COPY (SELECT ...) TO STDOUT`` in PostgreSQL's binary format, which a
read-only role may run: fixed-width rows decode with one numpy view, with no text parsing on
either side. A second thread decodes, cleans and writes parquet row groups while the server
is still scanning, so the client's work overlaps the server's and memory stays flat.

The cleaning follows mimic-code's vital-sign concepts (see :mod:`vitalfm.mimic`) and is done
here rather than in SQL so that the summary can count what each rule removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vitalfm import mimic
from vitalfm.db.connection import qualified
from vitalfm.errors import DatabaseError, DataError
from vitalfm.io import atomic_path

VITALS_SCHEMA = pa.schema(
    [
        pa.field("icustay_id", pa.int32(), nullable=False),
        pa.field("charttime", pa.timestamp("us"), nullable=False),
        pa.field("vital", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field("itemid", pa.int32(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ],
    metadata={"description": "one accepted chartevents measurement per row; temperature in °C"},
)

# Binary COPY rows of _copy_sql's select list, made fixed-width (no NULL reaches the wire:
# valuenum travels with an is-NULL flag, error as COALESCE(error, 0), which the cleaning
# reads the same way), so a block of rows decodes with one numpy view instead of a parser.
_ROW_DTYPE = np.dtype(
    [
        ("fields", ">i2"),
        ("icustay_id_len", ">i4"),
        ("icustay_id", ">i4"),
        ("charttime_len", ">i4"),
        ("charttime", ">i8"),  # microseconds since 2000-01-01
        ("itemid_len", ">i4"),
        ("itemid", ">i4"),
        ("valuenum_len", ">i4"),
        ("valuenum", ">f8"),
        ("valuenum_null_len", ">i4"),
        ("valuenum_null", "u1"),
        ("error_len", ">i4"),
        ("error", ">i4"),
    ]
)
_FIELD_LENGTHS = {
    "icustay_id_len": 4,
    "charttime_len": 8,
    "itemid_len": 4,
    "valuenum_len": 8,
    "valuenum_null_len": 1,
    "error_len": 4,
}
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER_BYTES = len(_COPY_SIGNATURE) + 8  # + flags, header-extension length
_COPY_TRAILER = b"\xff\xff"
_POSTGRES_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in microseconds since 1970
_BLOCK_BYTES = 4 << 20
_PIPE_BYTES = 1 << 20
_ROW_GROUP_ROWS = 1 << 20


@dataclass(frozen=True)
class RawRows:
    """One decoded block of chartevents rows, as numpy arrays."""

    icustay_id: np.ndarray
    charttime_us: np.ndarray  # microseconds since 1970-01-01
    itemid: np.ndarray
    valuenum: np.ndarray
    valuenum_null: np.ndarray
    error: np.ndarray


@dataclass
class _ItemTable:
    """Per-itemid lookup arrays for vectorised cleaning."""

    itemids: np.ndarray  # sorted
    vital_index: np.ndarray  # into vital_names
    low: np.ndarray
    high: np.ndarray
    high_inclusive: np.ndarray
    fahrenheit: np.ndarray

    @classmethod
    def build(cls, items: Sequence[mimic.ChartItem], vital_names: Sequence[str]) -> _ItemTable:
        ordered = sorted(items, key=lambda i: i.itemid)
        return cls(
            itemids=np.array([i.itemid for i in ordered], dtype=np.int32),
            vital_index=np.array([vital_names.index(i.vital) for i in ordered], dtype=np.int8),
            low=np.array([i.low for i in ordered]),
            high=np.array([i.high for i in ordered]),
            high_inclusive=np.array([i.high_inclusive for i in ordered]),
            fahrenheit=np.array([i.fahrenheit for i in ordered]),
        )


@dataclass
class ExtractionCounts:
    """Rows per vital at each cleaning step."""

    vital_names: Sequence[str]
    fetched: np.ndarray = field(init=False)
    error_flag: np.ndarray = field(init=False)
    null_value: np.ndarray = field(init=False)
    out_of_range: np.ndarray = field(init=False)
    kept: np.ndarray = field(init=False)
    stays_with_data: dict[str, set[int]] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.vital_names)
        for name in ("fetched", "error_flag", "null_value", "out_of_range", "kept"):
            setattr(self, name, np.zeros(n, dtype=np.int64))
        self.stays_with_data = {v: set() for v in self.vital_names}

    def frame(self, cohort_stays: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "vital": list(self.vital_names),
                "rows_fetched": self.fetched,
                "removed_error_flag": self.error_flag,
                "removed_null_valuenum": self.null_value,
                "removed_out_of_range": self.out_of_range,
                "rows_kept": self.kept,
                "stays_with_data": [len(self.stays_with_data[v]) for v in self.vital_names],
                "cohort_stays": cohort_stays,
            }
        )


class _BinaryCopyDecoder:
    """Cuts a binary COPY byte stream (one query's) into blocks of whole rows, decoded."""

    def __init__(self, on_rows: Callable[[RawRows], None]) -> None:
        self._on_rows = on_rows
        self._chunks: list[bytes] = []
        self._chunk_bytes = 0
        self._header_seen = False

    def feed(self, data: bytes, *, final: bool = False) -> None:
        if data:
            self._chunks.append(data)
            self._chunk_bytes += len(data)
        if not final and self._chunk_bytes < _BLOCK_BYTES:
            return
        buffer = b"".join(self._chunks)
        if not self._header_seen:
            if len(buffer) < _COPY_HEADER_BYTES:
                raise _stream_error("the chartevents COPY stream ended inside its header")
            _check_header(buffer)
            buffer = buffer[_COPY_HEADER_BYTES:]
            self._header_seen = True
        usable = len(buffer) // _ROW_DTYPE.itemsize * _ROW_DTYPE.itemsize
        rest = buffer[usable:]
        if final and rest != _COPY_TRAILER:
            raise _stream_error("the chartevents COPY stream did not end with its trailer")
        if usable:
            self._on_rows(_decode_rows(memoryview(buffer)[:usable]))
        self._chunks = [rest] if rest else []
        self._chunk_bytes = len(rest)


def _check_header(buffer: bytes) -> None:
    if buffer[: len(_COPY_SIGNATURE)] != _COPY_SIGNATURE:
        raise _stream_error("the chartevents COPY stream is not PostgreSQL's binary format")
    if int.from_bytes(buffer[_COPY_HEADER_BYTES - 4 : _COPY_HEADER_BYTES]):
        raise _stream_error("the chartevents COPY stream has an unknown header extension")


def _stream_error(problem: str) -> DatabaseError:
    return DatabaseError(
        problem,
        "the server must be PostgreSQL >= 10 speaking its own binary COPY format; a proxy or "
        "another database behind the PostgreSQL protocol may not",
    )


def _decode_rows(block: memoryview) -> RawRows:
    rows = np.frombuffer(block, dtype=_ROW_DTYPE)
    shape_ok = rows["fields"] == len(_FIELD_LENGTHS)
    for name, length in _FIELD_LENGTHS.items():
        shape_ok &= rows[name] == length
    if not shape_ok.all():
        raise _stream_error("a chartevents COPY row does not have the expected binary layout")
    return RawRows(
        icustay_id=rows["icustay_id"].astype(np.int32),
        charttime_us=rows["charttime"].astype(np.int64) + _POSTGRES_EPOCH_US,
        itemid=rows["itemid"].astype(np.int32),
        valuenum=rows["valuenum"].astype(np.float64),
        valuenum_null=rows["valuenum_null"].astype(bool),
        error=rows["error"].astype(np.int32),
    )


def clean_block(
    raw: RawRows, items: _ItemTable, vital_names: Sequence[str], counts: ExtractionCounts
) -> pa.Table:
    """Apply the error flag, NULL valuenum and range rules; convert °F; count each removal."""
    pos = np.searchsorted(items.itemids, raw.itemid)
    vital = items.vital_index[pos]
    n_vitals = len(vital_names)
    counts.fetched += np.bincount(vital, minlength=n_vitals)

    flagged = raw.error == 1
    counts.error_flag += np.bincount(vital[flagged], minlength=n_vitals)

    is_null = raw.valuenum_null
    null_rows = is_null & ~flagged
    counts.null_value += np.bincount(vital[null_rows], minlength=n_vitals)

    value = raw.valuenum
    high = items.high[pos]
    high_ok = np.where(items.high_inclusive[pos], value <= high, value < high)
    in_range = (value > items.low[pos]) & high_ok
    out_rows = ~in_range & ~flagged & ~is_null
    counts.out_of_range += np.bincount(vital[out_rows], minlength=n_vitals)

    keep = in_range & ~flagged & ~is_null
    counts.kept += np.bincount(vital[keep], minlength=n_vitals)

    stays = raw.icustay_id[keep]
    kept_vital = vital[keep]
    kept_value = value[keep]
    fahrenheit = items.fahrenheit[pos[keep]]
    kept_value[fahrenheit] = (kept_value[fahrenheit] - 32.0) / 1.8
    for index in np.unique(kept_vital):
        counts.stays_with_data[vital_names[index]].update(
            np.unique(stays[kept_vital == index]).tolist()
        )
    dictionary = pa.array(list(vital_names), type=pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(stays, type=pa.int32()),
            pa.array(raw.charttime_us[keep], type=pa.timestamp("us")),
            pa.DictionaryArray.from_arrays(pa.array(kept_vital, type=pa.int8()), dictionary),
            pa.array(raw.itemid[keep], type=pa.int32()),
            pa.array(kept_value, type=pa.float64()),
        ],
        schema=VITALS_SCHEMA,
    )


def vitals_copy_sql(conn: Any, schema: str, itemids: Sequence[int], stay_ids: Sequence[int]) -> str:
    """The ``COPY (SELECT ...) TO STDOUT`` that :func:`extract_vitals` runs (binary format).

    Both lists are constants, not bind parameters, so the planner prunes ``chartevents`` to
    the vital partitions, and it hashes the stay list (PostgreSQL >= 14) for a scan, or uses
    an index on ``icustay_id`` for a small cohort. (A join to ``unnest(stays)`` instead gets
    a default estimate of 200 stays and an index nested loop, 3x slower for a large cohort.)
    Both lists are ints rendered by psycopg2's own quoting: nothing user-typed reaches the SQL.
    """
    table = qualified(schema, "chartevents").as_string(conn)
    with conn.cursor() as cur:
        items_sql = cur.mogrify("%s::int[]", (list(map(int, itemids)),)).decode()
        stays_sql = cur.mogrify("%s::int[]", (list(map(int, stay_ids)),)).decode()
    return (
        "COPY (SELECT c.icustay_id, c.charttime, c.itemid, COALESCE(c.valuenum, 0), "
        "c.valuenum IS NULL, COALESCE(c.error, 0) "
        f"FROM {table} c WHERE c.itemid = ANY({items_sql}) "
        f"AND c.icustay_id = ANY({stays_sql}) "
        "AND c.charttime IS NOT NULL) TO STDOUT WITH (FORMAT binary)"
    )


def _copy_rows(cur: Any, sql: str, on_rows: Callable[[RawRows], None]) -> None:
    """Run one binary COPY; decode and hand on its rows in a second thread.

    psycopg2 calls ``write`` once per row: a C-level buffered pipe writer takes them (the
    server's output is never held whole), and the decoding thread reads the pipe in blocks,
    so the client's cleaning and parquet writing overlap with the server's scan.
    """
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # Linux only; a smaller pipe is merely slower
        fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    failures: list[BaseException] = []

    def consume() -> None:
        decoder = _BinaryCopyDecoder(on_rows)
        try:
            with open(read_fd, "rb", buffering=0) as pipe:
                while chunk := pipe.read(_PIPE_BYTES):
                    decoder.feed(chunk)
                decoder.feed(b"", final=True)
        except BaseException as err:  # handed to the caller's thread
            failures.append(err)

    worker = threading.Thread(target=consume, name="vitals-decoder", daemon=True)
    worker.start()
    try:
        with open(write_fd, "wb", buffering=_PIPE_BYTES) as pipe:
            cur.copy_expert(sql, pipe)
    except BrokenPipeError:  # the decoding thread failed and closed its end
        worker.join()
        if failures:
            raise failures[0] from None
        raise
    finally:
        worker.join()
    if failures:
        raise failures[0]


def turn_off_jit(conn: Any, cur: Any) -> None:
    """For this transaction only: compiling the scan (PostgreSQL >= 11 with LLVM, on by
    default) took 2.4 s at 20M chartevents rows and made its execution no faster."""
    if conn.server_version >= 110000 and not conn.autocommit:
        cur.execute("SET LOCAL jit = off")


@dataclass(frozen=True)
class VitalsResult:
    rows: int
    summary: pd.DataFrame


def extract_vitals(
    conn: Any,
    schema: str,
    icustay_ids: Sequence[int],
    vital_names: Sequence[str],
    output: str | os.PathLike[str],
    *,
    stays_per_query: int | None = None,
    progress: Any = None,
) -> VitalsResult:
    """Stream the cohort's vitals into ``output`` (parquet, written atomically).

    ``stays_per_query=None`` (the default) reads the whole cohort with one query: without an
    index on ``chartevents.icustay_id`` each query scans every vital partition, so batches of
    stays make the cost grow with (cohort size x table size); memory is flat either way.

    Raises :class:`DataError` if a requested vital has no accepted row: the study could not
    forecast it, and a silently empty column would surface much later.
    """
    vital_names = list(vital_names)
    chart_items = mimic.items_for(vital_names)
    items = _ItemTable.build(chart_items, vital_names)
    counts = ExtractionCounts(vital_names)
    stay_ids = sorted(set(map(int, icustay_ids)))
    batch_size = stays_per_query or max(len(stay_ids), 1)
    total_rows = 0
    output = Path(output)
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, VITALS_SCHEMA, compression="zstd") as w:
        pending: list[pa.Table] = []
        pending_rows = 0

        def flush_row_group() -> None:
            nonlocal pending, pending_rows
            if pending:
                w.write_table(pa.concat_tables(pending).combine_chunks())
                pending, pending_rows = [], 0

        def on_rows(raw: RawRows) -> None:
            nonlocal pending_rows, total_rows
            cleaned = clean_block(raw, items, vital_names, counts)
            pending.append(cleaned)
            pending_rows += cleaned.num_rows
            total_rows += cleaned.num_rows
            if pending_rows >= _ROW_GROUP_ROWS:
                flush_row_group()

        with conn.cursor() as cur:
            turn_off_jit(conn, cur)
            for start in range(0, len(stay_ids), batch_size):
                batch = stay_ids[start : start + batch_size]
                _copy_rows(
                    cur, vitals_copy_sql(conn, schema, items.itemids.tolist(), batch), on_rows
                )
                if progress is not None:
                    progress.update(len(batch))
        conn.rollback()
        flush_row_group()
        if total_rows == 0:
            w.write_table(VITALS_SCHEMA.empty_table())
        summary = counts.frame(cohort_stays=len(stay_ids))
        missing = summary.loc[summary["rows_kept"] == 0, "vital"].tolist()
        if missing:
            raise DataError(
                f"no usable chartevents rows for vital(s) {', '.join(missing)} in the cohort's "
                f"{len(stay_ids)} ICU stays",
                "remove them from vitals.names, or check that the database has these itemids "
                f"({_itemids_text(missing)}) in chartevents",
            )
    return VitalsResult(rows=total_rows, summary=summary)


def _itemids_text(vital_names: Sequence[str]) -> str:
    return "; ".join(
        f"{v}: {', '.join(str(i.itemid) for i in mimic.items_for([v]))}" for v in vital_names
    )


def read_vitals(path: str | os.PathLike[str]) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def vital_names_from_config(vitals_cfg: Mapping[str, Any]) -> list[str]:
    """Config order may differ from the canonical order; files always use the canonical one."""
    wanted = set(vitals_cfg["names"])
    return [v for v in mimic.VITAL_NAMES if v in wanted]
