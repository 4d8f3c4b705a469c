"""Vital signs of the cohort's ICU stays, streamed from chartevents to a long parquet file.

Cost grows with the cohort, not with chartevents: each query names the vital itemids as
constants (PostgreSQL prunes ``chartevents`` to the vital partitions at plan time) and a batch
of the cohort's ``icustay_id`` values (served by an index on ``icustay_id`` where one exists).
Rows arrive through ``COPY (SELECT ...) TO STDOUT``, which a read-only role may run and which
is several times faster than a cursor; the byte stream is cut at line ends into blocks of a
few MB, parsed by pyarrow and written as parquet row groups, so memory stays flat.

The cleaning follows mimic-code's vital-sign concepts (see :mod:`vitalfm.mimic`) and is done
here rather than in SQL so that the summary can count what each rule removed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vitalfm import mimic
from vitalfm.db.connection import qualified
from vitalfm.errors import DataError
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

_RAW_COLUMNS = ["icustay_id", "charttime", "itemid", "valuenum", "error"]
_RAW_TYPES = {
    "icustay_id": pa.int32(),
    "charttime": pa.timestamp("s"),
    "itemid": pa.int32(),
    "valuenum": pa.float64(),
    "error": pa.int32(),
}
_BLOCK_BYTES = 8 << 20
_ROW_GROUP_ROWS = 1 << 20


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


class _BlockParser:
    """File-like sink for ``copy_expert``: cuts the CSV stream at line ends into blocks."""

    def __init__(self, on_block: Any) -> None:
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._on_block = on_block

    def write(self, data: bytes | str) -> int:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= _BLOCK_BYTES:
            self._flush(final=False)
        return len(chunk)

    def close_stream(self) -> None:
        self._flush(final=True)

    def _flush(self, *, final: bool) -> None:
        buffer = b"".join(self._pending)
        cut = len(buffer) if final else buffer.rfind(b"\n") + 1
        block, rest = buffer[:cut], buffer[cut:]
        self._pending = [rest] if rest else []
        self._pending_bytes = len(rest)
        if block:
            self._on_block(block)


def _parse_block(block: bytes) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(block),
        read_options=pacsv.ReadOptions(column_names=_RAW_COLUMNS, block_size=len(block) + 1),
        convert_options=pacsv.ConvertOptions(column_types=_RAW_TYPES, strings_can_be_null=True),
    )


def clean_block(
    raw: pa.Table, items: _ItemTable, vital_names: Sequence[str], counts: ExtractionCounts
) -> pa.Table:
    """Apply the error flag, NULL valuenum and range rules; convert °F; count each removal."""
    itemid = raw.column("itemid").to_numpy()
    pos = np.searchsorted(items.itemids, itemid)
    vital = items.vital_index[pos]
    n_vitals = len(vital_names)
    counts.fetched += np.bincount(vital, minlength=n_vitals)

    error = raw.column("error").fill_null(0).to_numpy()
    flagged = error == 1
    counts.error_flag += np.bincount(vital[flagged], minlength=n_vitals)

    value_col = raw.column("valuenum")
    is_null = value_col.is_null().to_numpy(zero_copy_only=False)
    null_rows = is_null & ~flagged
    counts.null_value += np.bincount(vital[null_rows], minlength=n_vitals)

    value = value_col.fill_null(np.nan).to_numpy()
    high_ok = np.where(items.high_inclusive[pos], value <= items.high[pos], value < items.high[pos])
    in_range = (value > items.low[pos]) & high_ok
    out_rows = ~in_range & ~flagged & ~is_null
    counts.out_of_range += np.bincount(vital[out_rows], minlength=n_vitals)

    keep = in_range & ~flagged & ~is_null
    counts.kept += np.bincount(vital[keep], minlength=n_vitals)
    value = np.where(items.fahrenheit[pos], (value - 32.0) / 1.8, value)

    stays = raw.column("icustay_id").to_numpy()[keep]
    kept_vital = vital[keep]
    for index in np.unique(kept_vital):
        counts.stays_with_data[vital_names[index]].update(
            np.unique(stays[kept_vital == index]).tolist()
        )
    dictionary = pa.array(list(vital_names), type=pa.string())
    return pa.Table.from_arrays(
        [
            pa.array(stays, type=pa.int32()),
            pc.cast(raw.column("charttime").filter(pa.array(keep)), pa.timestamp("us")),
            pa.DictionaryArray.from_arrays(pa.array(kept_vital, type=pa.int8()), dictionary),
            pa.array(itemid[keep], type=pa.int32()),
            pa.array(value[keep], type=pa.float64()),
        ],
        schema=VITALS_SCHEMA,
    )


def _copy_sql(conn: Any, schema: str, itemids: Sequence[int], stay_ids: Sequence[int]) -> str:
    # Constants (not bind parameters) so the planner prunes partitions; both lists are ints
    # rendered by psycopg2's own quoting, so nothing user-typed reaches the SQL text.
    table = qualified(schema, "chartevents").as_string(conn)
    with conn.cursor() as cur:
        items_sql = cur.mogrify("%s::int[]", (list(map(int, itemids)),)).decode()
        stays_sql = cur.mogrify("%s::int[]", (list(map(int, stay_ids)),)).decode()
    return (
        "COPY (SELECT icustay_id, charttime, itemid, valuenum, error "
        f"FROM {table} WHERE itemid = ANY({items_sql}) AND icustay_id = ANY({stays_sql}) "
        "AND charttime IS NOT NULL) TO STDOUT WITH (FORMAT csv)"
    )


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
    stays_per_query: int = 2000,
    progress: Any = None,
) -> VitalsResult:
    """Stream the cohort's vitals into ``output`` (parquet, written atomically).

    Raises :class:`DataError` if a requested vital has no accepted row: the study could not
    forecast it, and a silently empty column would surface much later.
    """
    vital_names = list(vital_names)
    chart_items = mimic.items_for(vital_names)
    items = _ItemTable.build(chart_items, vital_names)
    counts = ExtractionCounts(vital_names)
    stay_ids = sorted(set(map(int, icustay_ids)))
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

        def on_block(block: bytes) -> None:
            nonlocal pending_rows, total_rows
            cleaned = clean_block(_parse_block(block), items, vital_names, counts)
            pending.append(cleaned)
            pending_rows += cleaned.num_rows
            total_rows += cleaned.num_rows
            if pending_rows >= _ROW_GROUP_ROWS:
                flush_row_group()

        with conn.cursor() as cur:
            for start in range(0, len(stay_ids), stays_per_query):
                batch = stay_ids[start : start + stays_per_query]
                sink = _BlockParser(on_block)
                cur.copy_expert(_copy_sql(conn, schema, items.itemids.tolist(), batch), sink)
                sink.close_stream()
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
