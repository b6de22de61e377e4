"""The write hook that keeps the search index in step with the resources table.

On every create, update and delete the repository calls ``SearchIndexer.on_write`` inside the
writer's transaction: the rid's old index rows are deleted (a create has none: its rid is new)
and the new version's rows inserted, so the index never disagrees with what a committed read
returns. A batch of creates (Repository.deferred, a transaction Bundle) comes to
``on_writes``: the rows of all of them go in with one executemany per index table.

The inserts are plain SQL given to the driver with a tuple per row (service.store.
driver_insert): SQLAlchemy's own executemany was about 40% of the cost of inserting a bundle's
index rows (issue 11; bench/bench_ingest.py). The deletes go through SQLAlchemy as before.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.engine import Dialect

from service.fhir.search.extract import BOUND, UNBOUND, Extractor, IndexRows
from service.store.driver_insert import DriverInsert, Row, driver_insert
from service.store.schema import resources
from service.store.search.tables import TABLES

_DELETES = [delete(table).where(table.c.rid == bindparam("rid")) for table in TABLES.values()]


def index_values(rid: int, res_type: str, rows: IndexRows) -> dict[str, list[Row]]:
    """The rows to insert per index table for one resource: (rid, res_type, then the row's
    own fields), in the table's column order (service.store.search.tables)."""
    out: dict[str, list[Row]] = {}
    for kind, items in rows.kinds():
        if items:
            out[kind] = [(rid, res_type, *item) for item in items]
    return out


@lru_cache(maxsize=8)
def _inserts(dialect: Dialect) -> dict[str, DriverInsert]:
    return {kind: driver_insert(table, dialect) for kind, table in TABLES.items()}


def insert_rows(conn: Connection, kind: str, rows: list[Row]) -> None:
    """Insert index rows (as index_values gives them) into the table of kind."""
    _inserts(conn.dialect)[kind].run(conn, rows)


class SearchIndexer:
    """A store write hook (service.store.WriteHook) maintaining the search index tables."""

    def __init__(self, extractor: Extractor) -> None:
        self.extractor = extractor

    def prepare(self, resource: dict[str, Any]) -> IndexRows:
        """The rows of a create's unbound parameters, from the resource as sent (WriteHook.prepare;
        service.fhir.search.extract: they do not change when it is stored)."""
        return self.extractor.extract(resource, UNBOUND)

    def rows(self, change: Any) -> IndexRows:
        """Every index row of change.resource (not None): the prepared unbound rows and its
        bound ones, or all of them if nothing was prepared."""
        prepared = change.prepared.by_hook.get(self) if change.prepared is not None else None
        if prepared is None:
            return self.extractor.extract(change.resource)
        return self.extractor.extract(change.resource, BOUND).merge(prepared)

    def on_write(self, conn: Connection, change: Any) -> None:
        """Replace the index rows of change.rid with those of change.resource (none on delete).
        A create (no previous version) only inserts: its rid is new, so it has no rows yet."""
        if change.previous is None:
            if change.resource is not None:
                self._insert(conn, change.rid, change.res_type, self.rows(change))
        else:
            self.replace(conn, change.rid, change.res_type, change.resource)

    def on_writes(self, conn: Connection, changes: Iterable[Any]) -> None:
        """on_write for many changes, in order: the old rows of every updated or deleted rid
        deleted, then the new rows of all of them inserted with one executemany per table."""
        changes = list(changes)
        replaced = [{"rid": c.rid} for c in changes if c.previous is not None]
        if replaced:
            for statement in _DELETES:
                conn.execute(statement, replaced)
        batch: dict[str, list[Row]] = {}
        for c in changes:
            if c.resource is not None:
                for kind, values in index_values(c.rid, c.res_type, self.rows(c)).items():
                    batch.setdefault(kind, []).extend(values)
        for kind, values in batch.items():
            insert_rows(conn, kind, values)

    def replace(self, conn: Connection, rid: int, res_type: str, resource: dict[str, Any] | None) -> None:
        """Delete rid's index rows, then insert those of resource (none if it is None)."""
        for statement in _DELETES:
            conn.execute(statement, {"rid": rid})
        self.insert(conn, rid, res_type, resource)

    def insert(self, conn: Connection, rid: int, res_type: str, resource: dict[str, Any] | None) -> None:
        """Insert the index rows of resource (nothing if it is None) for rid."""
        if resource is not None:
            self._insert(conn, rid, res_type, self.extractor.extract(resource))

    @staticmethod
    def _insert(conn: Connection, rid: int, res_type: str, rows: IndexRows) -> None:
        for kind, values in index_values(rid, res_type, rows).items():
            insert_rows(conn, kind, values)

    def reindex(self, conn: Connection, res_types: Iterable[str] | None = None, batch: int = 500) -> int:
        """Rebuild the index rows of every current resource (of res_types); returns the count.
        For when the definitions change or the index tables were created over existing data."""
        import json
        query = select(resources.c.rid, resources.c.res_type, resources.c.content).where(
            resources.c.deleted.is_(False)).order_by(resources.c.rid)
        if res_types is not None:
            query = query.where(resources.c.res_type.in_(list(res_types)))
        n, last = 0, 0
        while True:
            rows = conn.execute(query.where(resources.c.rid > last).limit(batch)).all()
            if not rows:
                return n
            for row in rows:
                self.replace(conn, row.rid, row.res_type, json.loads(row.content))
                n += 1
            last = rows[-1].rid
