"""The index write hook, over a connection that records statements (no database)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Delete, Insert

from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.extract import Extractor
from service.store.repository import Change, StoredResource
from service.store.search.indexer import SearchIndexer
from service.store.search.tables import TABLES

AT = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-03-04"}


class RecordingConnection:
    """Just enough of a Connection for the indexer: keeps what it is asked to execute."""

    def __init__(self) -> None:
        self.statements: list[Any] = []

    def execute(self, statement: Any, parameters: Any = None) -> None:
        self.statements.append(statement)


@pytest.fixture(scope="module")
def indexer() -> SearchIndexer:
    return SearchIndexer(Extractor(SearchParameterRegistry.load()))


def write(indexer: SearchIndexer, resource: dict[str, Any] | None, *, version: int) -> list[Any]:
    previous = None if version == 1 else StoredResource("Patient", "p1", version - 1, AT, False, "{}")
    change = Change(7, "Patient", "p1", version, AT, "PUT" if resource else "DELETE", resource, previous)
    conn = RecordingConnection()
    indexer.on_write(cast(Connection, conn), change)
    return conn.statements


def test_a_create_only_inserts(indexer: SearchIndexer) -> None:
    statements = write(indexer, PATIENT, version=1)
    assert statements and all(isinstance(s, Insert) for s in statements)


def test_an_update_deletes_the_old_rows_of_every_index_table_first(indexer: SearchIndexer) -> None:
    statements = write(indexer, PATIENT, version=2)
    deletes = [s for s in statements if isinstance(s, Delete)]
    assert {d.table.name for d in deletes} == {t.name for t in TABLES.values()}
    assert statements[:len(deletes)] == deletes
    assert any(isinstance(s, Insert) for s in statements)


def test_a_delete_only_deletes(indexer: SearchIndexer) -> None:
    statements = write(indexer, None, version=2)
    assert len(statements) == len(TABLES) and all(isinstance(s, Delete) for s in statements)
