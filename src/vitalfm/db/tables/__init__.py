"""The MIMIC-III v1.4 tables (26), as MIT-LCP's mimic-code builds them for PostgreSQL >= 10.

Written for this project from the published table definitions (column names, order and types
of the MIMIC-III data dictionary). Names are lower case (mimic-code's unquoted upper-case
identifiers fold to lower case), every table but ``chartevents`` has a ``row_id`` primary key,
natural keys are UNIQUE, timestamps are ``TIMESTAMP(0)`` and floats ``DOUBLE PRECISION``.

The definitions are data: :mod:`.spec` (how a table is described), :mod:`.hospital` and
:mod:`.icu` (the tables); :mod:`vitalfm.db.ddl` writes the SQL that creates them.
"""

from __future__ import annotations

from types import MappingProxyType

from vitalfm.db.tables.hospital import HOSPITAL_TABLES
from vitalfm.db.tables.icu import ICU_TABLES
from vitalfm.db.tables.spec import Column, Table

#: Every table, in name order (the order they are created in).
TABLE_LIST: tuple[Table, ...] = tuple(
    sorted((*HOSPITAL_TABLES, *ICU_TABLES), key=lambda table: table.name)
)
#: Every MIMIC-III v1.4 table (26), by lower-case name.
TABLES: MappingProxyType[str, Table] = MappingProxyType({t.name: t for t in TABLE_LIST})
#: table -> ordered column names (the CSV header order, lower case).
TABLE_COLUMNS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {t.name: t.column_names for t in TABLE_LIST}
)

__all__ = ["TABLES", "TABLE_COLUMNS", "TABLE_LIST", "Column", "Table"]
