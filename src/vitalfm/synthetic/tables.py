"""One serialisation for both sinks: pyarrow tables typed from the DDL, written as MIMIC-III CSV.

The CSV dialect is PhysioNet's MIMIC-III v1.4 one, which PostgreSQL's ``COPY ... (FORMAT csv)``
reads as is: an unquoted upper-case header, strings double-quoted, NULL as an empty unquoted
field, timestamps ``YYYY-MM-DD HH:MM:SS``, numbers in their shortest round-trip form.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from vitalfm.db.ddl import TABLES


def arrow_type(sql_type: str) -> pa.DataType:
    t = sql_type.upper()
    if t == "INT":
        return pa.int32()
    if t == "SMALLINT":
        return pa.int16()
    if t == "DOUBLE PRECISION":
        return pa.float64()
    if t.startswith("TIMESTAMP"):
        return pa.timestamp("s")
    return pa.string()  # VARCHAR(n), CHAR(n), TEXT


ARROW_SCHEMAS: dict[str, pa.Schema] = {
    name: pa.schema([pa.field(c.name, arrow_type(c.sql_type)) for c in table.columns])
    for name, table in TABLES.items()
}


def _as_array(values: Any, typ: pa.DataType, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, typ)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    if isinstance(values, np.ndarray):
        if pa.types.is_timestamp(typ) and values.dtype.kind == "i":
            return pa.array(values.astype("datetime64[s]"), type=typ)
        if values.dtype.kind == "f" and not pa.types.is_floating(typ):
            return pa.array(values, mask=np.isnan(values)).cast(typ)
        if values.dtype.kind == "f":
            return pa.array(values, type=typ, mask=np.isnan(values))
        return pa.array(values, type=typ)
    return pa.array(list(values), type=typ)


def make_table(name: str, columns: Mapping[str, Any]) -> pa.Table:
    """A table in the DDL's column order and types; absent columns are all NULL.

    Integer timestamps are seconds since the epoch; NaN floats become NULL.
    """
    schema = ARROW_SCHEMAS[name]
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise KeyError(f"{name} has no column(s) {sorted(unknown)}")
    lengths = {len(v) for v in columns.values() if v is not None}
    if len(lengths) > 1:
        raise ValueError(f"{name}: columns of different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    arrays = [_as_array(columns.get(f.name), f.type, n) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def empty_table(name: str) -> pa.Table:
    return ARROW_SCHEMAS[name].empty_table()


def csv_header(name: str) -> bytes:
    """The PhysioNet header line: unquoted upper-case column names."""
    return (",".join(f.name.upper() for f in ARROW_SCHEMAS[name]) + "\n").encode()


_WRITE_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


def csv_rows(table: pa.Table) -> bytes:
    """The table's rows as CSV (no header)."""
    if table.num_rows == 0:
        return b""
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, _WRITE_OPTIONS)
    return sink.getvalue()
