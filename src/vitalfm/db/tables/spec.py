"""How a MIMIC-III table is described: its columns (name, SQL type, NOT NULL), its ``row_id``
primary key and its natural keys. The tables themselves are in :mod:`.hospital` and
:mod:`.icu`; :mod:`vitalfm.db.ddl` turns them into SQL."""

from __future__ import annotations

from dataclasses import dataclass

INT = "INT"
SMALLINT = "SMALLINT"
DOUBLE = "DOUBLE PRECISION"
TS = "TIMESTAMP(0)"
TEXT = "TEXT"


def VARCHAR(n: int) -> str:
    return f"VARCHAR({n})"


def CHAR(n: int) -> str:
    return f"CHAR({n})"


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    not_null: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: bool = True  # row_id PRIMARY KEY
    unique: tuple[str, ...] = ()  # natural keys

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def columns(*spec: tuple[str, str] | tuple[str, str, bool]) -> tuple[Column, ...]:
    """Columns from ``(name, sql_type)`` or ``(name, sql_type, NN)`` tuples."""
    return tuple(Column(*s) for s in spec)


NN = True  # NOT NULL marker in the column specs of the tables
