"""INSERTs (and a SELECT by key) handed to the database driver as plain SQL with one tuple per row.

SQLAlchemy's own executemany builds a dict per row and runs every column of every row through
its parameter processing: about 40% of the cost of inserting a bundle's search index rows
(issue 11; bench/bench_ingest.py), and most of the cost of a read's one AuditEvent row beside
the bare driver (bench/RESULTS.md, "Where a read's time goes"). A ``DriverInsert`` is built once
per table and dialect: its SQL with the driver's placeholders, and the bind processors of its
columns (the UTC datetimes) applied to each row as SQLAlchemy would. A ``DriverSelect`` is the
same for a SELECT of one row by key: its SQL, and the result processors of its columns (the UTC
datetimes, SQLite's booleans) applied to the row (a read by id: bench/RESULTS.md, "Where a
read's time goes").
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


class DriverSelect:
    """SELECT `columns` FROM table WHERE each of `keys` equals a parameter, as the driver's SQL,
    with the result processors of the selected columns."""

    def __init__(self, table: Table, dialect: Dialect, columns: Sequence[str], keys: Sequence[str]) -> None:
        mark = _PLACEHOLDER[dialect.paramstyle]
        chosen = [table.c[name] for name in columns]
        self.columns: tuple[str, ...] = tuple(columns)
        self.sql = (f"SELECT {', '.join(self.columns)} FROM {table.name} "
                    f"WHERE {' AND '.join(f'{table.c[k].name} = {mark}' for k in keys)}")
        processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in chosen]
        self.processed: list[tuple[int, Callable[[Any], Any]]] = [
            (i, fn) for i, fn in enumerate(processors) if fn is not None]

    def row(self, cursor: Any, key: Row) -> Row | None:
        """The one row (in the order of `columns`, result processors applied) whose keys are key
        (values in the order of `keys`) through a DB-API cursor, or None. Raises what the
        driver raises."""
        cursor.execute(self.sql, key)
        found = cursor.fetchone()
        if found is None:
            return None
        values = list(found)
        for i, fn in self.processed:
            values[i] = fn(values[i])
        return tuple(values)


@lru_cache(maxsize=16)
def driver_select(table: Table, dialect: Dialect, columns: tuple[str, ...], keys: tuple[str, ...]) -> DriverSelect:
    """The DriverSelect of columns from table by keys for a dialect, built once."""
    return DriverSelect(table, dialect, columns, keys)


@lru_cache(maxsize=64)
def driver_insert(table: Table, dialect: Dialect, columns: tuple[str, ...] | None = None) -> DriverInsert:
    """The DriverInsert of table (columns: default all) for a dialect, built once."""
    return DriverInsert(table, dialect, columns)
