"""The index write hook, over a connection that records statements (no database), and its
driver-level inserts against SQLAlchemy's own on a real SQLite database."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Delete, create_engine, insert, select
from sqlalchemy.dialects import sqlite

from service.fhir.search.composite import CompositeRow
from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.extract import (DateRow, Extractor, NumberRow, QuantityRow, ReferenceRow, StringRow,
                                         TokenRow, UriRow)
from service.store.repository import Change, StoredResource
from service.store.search.indexer import SearchIndexer, index_values, insert_rows
from service.store.search.tables import TABLES, metadata

AT = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1980-03-04"}


class RecordingConnection:
    """Just enough of a Connection for the indexer: keeps what it is asked to execute
    (SQLAlchemy statements, and the driver SQL of the inserts as text)."""

    dialect = sqlite.dialect()

    def __init__(self) -> None:
        self.statements: list[Any] = []

    def execute(self, statement: Any, parameters: Any = None) -> None:
        self.statements.append(statement)

    def exec_driver_sql(self, sql: str, parameters: Any = None) -> None:
        self.statements.append(sql)


def is_insert(statement: Any) -> bool:
    return isinstance(statement, str) and statement.startswith("INSERT INTO ")


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
    assert statements and all(is_insert(s) for s in statements)


def test_an_update_deletes_the_old_rows_of_every_index_table_first(indexer: SearchIndexer) -> None:
    statements = write(indexer, PATIENT, version=2)
    deletes = [s for s in statements if isinstance(s, Delete)]
    assert {d.table.name for d in deletes} == {t.name for t in TABLES.values()}
    assert statements[:len(deletes)] == deletes
    assert any(is_insert(s) for s in statements)


def test_a_delete_only_deletes(indexer: SearchIndexer) -> None:
    statements = write(indexer, None, version=2)
    assert len(statements) == len(TABLES) and all(isinstance(s, Delete) for s in statements)


ROW_TYPES = {"token": TokenRow, "string": StringRow, "reference": ReferenceRow, "date": DateRow,
             "quantity": QuantityRow, "number": NumberRow, "uri": UriRow, "composite": CompositeRow}


def test_each_index_tables_columns_are_rid_res_type_then_its_row_fields_in_order() -> None:
    # index_values gives (rid, res_type, *row) to a positional INSERT of the table's columns
    assert set(ROW_TYPES) == set(TABLES)
    for kind, table in TABLES.items():
        assert [c.name for c in table.columns] == ["rid", "res_type", *ROW_TYPES[kind]._fields], kind


OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "24727-0", "display": "MRI hip"}], "text": "MRI"},
    "subject": {"reference": "Patient/p1"}, "effectivePeriod": {"start": "2026-01-05T09:00:00+01:00",
                                                                "end": "2026-01-06"},
    "valueQuantity": {"value": 3.5, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"},
    "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                   "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                     "code": "mm[Hg]"}}],
    "note": [{"text": "bone marrow oedema"}],
}


def test_driver_inserts_store_what_sqlalchemys_inserts_store(indexer: SearchIndexer) -> None:
    """The same rows (dates as UTC instants included) through insert_rows and through
    SQLAlchemy's insert(), read back alike."""
    rows = index_values(7, "Observation", indexer.extractor.extract(OBSERVATION))
    assert {"token", "reference", "date", "quantity", "composite"} <= set(rows)
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    read: dict[str, list[list[Any]]] = {}
    for rid, write in ((1, "driver"), (2, "sqlalchemy")):
        with engine.begin() as conn:
            for kind, values in rows.items():
                values = [(rid, *v[1:]) for v in values]
                if write == "driver":
                    insert_rows(conn, kind, values)
                else:
                    columns = [c.name for c in TABLES[kind].columns]
                    conn.execute(insert(TABLES[kind]), [dict(zip(columns, v)) for v in values])
    with engine.connect() as conn:
        for kind, table in TABLES.items():
            for rid in (1, 2):
                got = conn.execute(select(table).where(table.c.rid == rid)).all()
                read.setdefault(kind, []).append(sorted((tuple(r)[1:] for r in got), key=repr))
    for kind, (driver, alchemy) in read.items():
        assert driver == alchemy, kind
    dates = read["date"][0]
    assert dates and all(low.tzinfo is not None and high.tzinfo is not None for _, _, low, high in dates)
