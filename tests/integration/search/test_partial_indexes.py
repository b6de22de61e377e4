"""The partial search indexes (service.store.search.tables.PARTIAL, migration
0009_partial_indexes) hold only rows that have their column, yet every search that compares
that column finds what it did, and SQLite still answers it from that index.

The searches and their expected matches follow R4's token and reference search
(https://hl7.org/fhir/R4/search.html#token: `[system]|` any code of the system, `|[code]` a code
without a system, a string-typed element's value without regard to case;
https://hl7.org/fhir/R4/search.html#reference: a canonical URL).
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import event

from service.store.search.tables import PARTIAL, search_reference, search_token

MRN = "urn:oid:2.16.840.1.113883.3.4711"
PLAN = "https://clinic.example.org/PlanDefinition/hip-follow-up"
STORE_ROWS = 5_000


def _create(client: Any, resource: dict[str, Any]) -> str:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.get_data(as_text=True)
    return str(response.get_json()["id"])


def _found(client: Any, query: str) -> set[str]:
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return {entry["resource"]["id"] for entry in response.get_json().get("entry", [])
            if entry.get("search", {}).get("mode", "match") == "match"}


@pytest.fixture
def stored(client: Any) -> dict[str, str]:
    ids = {
        "with_mrn": _create(client, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "AbC-1"}]}),
        "no_system": _create(client, {"resourceType": "Patient", "identifier": [{"value": "xyz-9"}]}),
        "other": _create(client, {"resourceType": "Patient", "identifier": [{"system": "urn:other", "value": "Q"}]}),
    }
    subject = {"reference": f"Patient/{ids['with_mrn']}"}
    ids["loinc"] = _create(client, {"resourceType": "Observation", "status": "final", "subject": subject,
                                    "code": {"coding": [{"system": "http://loinc.org", "code": "24966-8"}]}})
    ids["text_only"] = _create(client, {"resourceType": "Observation", "status": "final", "subject": subject,
                                        "code": {"coding": [{"code": "hip-pain"}]}})
    ids["plan"] = _create(client, {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
                                   "subject": subject, "instantiatesCanonical": [PLAN]})
    ids["plain_plan"] = _create(client, {"resourceType": "CarePlan", "status": "draft", "intent": "plan",
                                         "subject": subject})
    return ids


@pytest.mark.parametrize(("query", "expected"), [
    ("Patient?identifier=abc-1", {"with_mrn"}),                  # code_ci: the value without case
    ("Patient?identifier=XYZ-9", {"no_system"}),
    (f"Patient?identifier={MRN}|", {"with_mrn"}),                # system: any code of the system
    ("Patient?identifier=|xyz-9", {"no_system"}),                # no system: the rows outside the index
    ("Observation?code=http://loinc.org|", {"loinc"}),
    ("Observation?code=|hip-pain", {"text_only"}),
    (f"CarePlan?instantiates-canonical={PLAN}", {"plan"}),       # url: a canonical reference
    ("CarePlan?instantiates-canonical=https://clinic.example.org/PlanDefinition/other", set()),
    ("CarePlan?instantiates-canonical:missing=true", {"plain_plan"}),
])
def test_searches_on_a_partially_indexed_column_find_what_they_should(
        client: Any, stored: dict[str, str], query: str, expected: set[str]) -> None:
    assert _found(client, query) == {stored[name] for name in expected}


def _statements(app: Any, client: Any, query: str, table: str) -> list[tuple[str, Any]]:
    """The statements on table that a search ran."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if table in statement and statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    engine = app.extensions["toh"].database.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        client.get(f"/fhir/{query}").get_json()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert captured, f"{query} ran no statement on {table}"
    return captured


def _plan(conn: Any, dialect: str, statement: str, parameters: Any) -> str:
    """The plan of statement as text: SQLite's EXPLAIN QUERY PLAN; PostgreSQL's EXPLAIN with
    sequential scans off (tables this small would be read whole; what is asked is whether an
    index can answer the query at all)."""
    if dialect == "sqlite":
        return " / ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).scalar_one()
    return plan if isinstance(plan, str) else json.dumps(plan)


@pytest.mark.parametrize(("query", "table", "sqlite_index"), [
    (f"CarePlan?instantiates-canonical={PLAN}", "search_reference", "ix_search_reference_url"),
    (f"Patient?identifier={MRN}|", "search_token", "ix_search_token_system"),
    # an empty system: system IS NULL, looked up in the NULL range of the (whole) system index
    ("Patient?identifier=|xyz-9", "search_token", "ix_search_token_system"),
])
def test_the_search_is_answered_from_an_index_on_its_column(app: Any, client: Any, stored: dict[str, str],
                                                            query: str, table: str, sqlite_index: str) -> None:
    """A partial index is used only when the query's WHERE implies its condition; a comparison
    with a value does (https://www.sqlite.org/partialindex.html#queries_using_partial_indexes,
    https://www.postgresql.org/docs/15/indexes-partial.html). SQLite must seek the column in
    the named index; PostgreSQL must answer from some index rather than read the table. A value
    without a system (`identifier=abc-1`: code = ? OR code_ci = ?) is not here: SQLite scans the
    (res_type, param) range of one token index for it, as it did before code_ci's index was partial."""
    statements = _statements(app, client, query, table)
    engine = app.extensions["toh"].database.engine
    with engine.begin() as conn:   # a store's proportions: most rows without url and code_ci
        conn.execute(search_token.insert(), [
            {"rid": 10_000 + i, "res_type": "Patient", "param": "identifier", "system": MRN if i % 3 == 0 else None,
             "code": f"V{i}", "code_ci": f"v{i}" if i % 10 == 0 else None} for i in range(STORE_ROWS)])
        conn.execute(search_reference.insert(), [
            {"rid": 10_000 + i, "res_type": "CarePlan", "param": "instantiates-canonical",
             "target_type": "Patient", "target_id": f"p{i % 500}", "url": PLAN if i % 100 == 0 else None}
            for i in range(STORE_ROWS)])
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {table}")
    with engine.begin() as conn:
        plans = [_plan(conn, engine.dialect.name, statement, parameters) for statement, parameters in statements]
    if engine.dialect.name == "sqlite":
        assert any(re.search(rf"INDEX {sqlite_index} \([^)]*(system|url)", plan) for plan in plans), plans
    else:
        scans = [node for plan in plans for node in _nodes(json.loads(plan)[0]["Plan"])
                 if node.get("Relation Name") == table]
        assert scans and not [n for n in scans if n["Node Type"] == "Seq Scan"], plans


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a PostgreSQL JSON plan."""
    return [plan, *(node for child in plan.get("Plans", ()) for node in _nodes(child))]


def test_the_partial_indexes_hold_only_rows_with_their_column(app: Any) -> None:
    engine = app.extensions["toh"].database.engine
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            definitions = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all())
        else:
            definitions = dict(conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()").all())
    for index, column in PARTIAL.items():
        assert re.search(rf"WHERE \(?{column} IS NOT NULL\)?$", definitions[index]), definitions[index]
