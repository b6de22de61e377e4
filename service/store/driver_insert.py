"""INSERTs handed to the database driver as plain SQL with one tuple per row.

SQLAlchemy's own executemany builds a dict per row and runs every column of every row through
its parameter processing: about 40% of the cost of inserting a bundle's search index rows
(issue 11; bench/bench_ingest.py), and most of the cost of a read's one AuditEvent row beside
the bare driver (bench/RESULTS.md, "Where a read's time goes"). A ``DriverInsert`` is built once
per table and dialect: its SQL with the driver's placeholders, and the bind processors of its
columns (the UTC datetimes) applied to each row as SQLAlchemy would.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}

Row = tuple[Any, ...]


class DriverInsert:
    """One table's INSERT (of `columns`, default all) as the driver's SQL, with the bind
    processors of its columns."""

    def __init__(self, table: Table, dialect: Dialect, columns: Sequence[str] | None = None) -> None:
        mark = _PLACEHOLDER[dialect.paramstyle]
        chosen = [table.c[name] for name in columns] if columns is not None else list(table.columns)
        self.columns: tuple[str, ...] = tuple(c.name for c in chosen)
        self.sql = (f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
                    f"VALUES ({', '.join([mark] * len(self.columns))})")
        processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in chosen]
        self.processed: list[tuple[int, Callable[[Any], Any]]] = [
            (i, fn) for i, fn in enumerate(processors) if fn is not None]

    def parameters(self, rows: Sequence[Row]) -> list[Row]:
        """rows (tuples in the order of `columns`) as the driver takes them: the columns' bind
        processors applied."""
        if not self.processed:
            return rows if isinstance(rows, list) else list(rows)
        processed = []
        for row in rows:
            values = list(row)
            for i, fn in self.processed:
                values[i] = fn(values[i])
            processed.append(tuple(values))
        return processed

    def run(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Insert rows (tuples in the order of `columns`) in the connection's transaction: one
        executemany."""
        conn.exec_driver_sql(self.sql, self.parameters(rows))   # type: ignore[arg-type]   # executemany: one list of tuples


@lru_cache(maxsize=64)
def driver_insert(table: Table, dialect: Dialect, columns: tuple[str, ...] | None = None) -> DriverInsert:
    """The DriverInsert of table (columns: default all) for a dialect, built once."""
    return DriverInsert(table, dialect, columns)
