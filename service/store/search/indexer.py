"""The write hook that keeps the search index in step with the resources table.

On every create, update and delete the repository calls ``SearchIndexer.on_write`` inside the
writer's transaction: the rid's old index rows are deleted (a create has none: its rid is new)
and the new version's rows inserted, so the index never disagrees with what a committed read
returns.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from service.fhir.search.extract import Extractor, IndexRows
from service.store.schema import resources
from service.store.search.tables import TABLES


def index_values(rid: int, res_type: str, rows: IndexRows) -> dict[str, list[dict[str, Any]]]:
    """The rows to insert per index table for one resource."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, items in rows.kinds():
        if items:
            out[kind] = [{"rid": rid, "res_type": res_type, **item._asdict()} for item in items]
    return out


class SearchIndexer:
    """A store write hook (service.store.WriteHook) maintaining the search index tables."""

    def __init__(self, extractor: Extractor) -> None:
        self.extractor = extractor

    def on_write(self, conn: Connection, change: Any) -> None:
        """Replace the index rows of change.rid with those of change.resource (none on delete).
        A create (no previous version) only inserts: its rid is new, so it has no rows yet."""
        if change.previous is None:
            self.insert(conn, change.rid, change.res_type, change.resource)
        else:
            self.replace(conn, change.rid, change.res_type, change.resource)

    def replace(self, conn: Connection, rid: int, res_type: str, resource: dict[str, Any] | None) -> None:
        """Delete rid's index rows, then insert those of resource (none if it is None)."""
        for table in TABLES.values():
            conn.execute(delete(table).where(table.c.rid == rid))
        self.insert(conn, rid, res_type, resource)

    def insert(self, conn: Connection, rid: int, res_type: str, resource: dict[str, Any] | None) -> None:
        """Insert the index rows of resource (nothing if it is None) for rid."""
        if resource is None:
            return
        for kind, values in index_values(rid, res_type, self.extractor.extract(resource)).items():
            conn.execute(insert(TABLES[kind]), values)

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
