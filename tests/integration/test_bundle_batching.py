"""A transaction Bundle's creates are written together (issue 11): the number of INSERT
statements does not grow with the number of entries, and what is written is all there,
indexed, and seen by the bundle's own search entries."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.integration.test_bundles import bundle, entry, patient, post_bundle


@contextmanager
def inserts_counted(app: Any) -> Iterator[list[str]]:
    """The INSERT statements sent to the database inside the block (an executemany counts once)."""
    engine = app.extensions["toh"].database.engine
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def patients(n: int, family: str) -> dict[str, Any]:
    return bundle("transaction", *[
        entry("POST", "Patient", patient(name=[{"family": family, "given": [f"P{i}"]}], gender="female",
                                         identifier=[{"system": "http://hospital.example/mrn", "value": f"{family}-{i}"}]),
              full_url=f"urn:uuid:00000000-0000-4000-8000-{i:012d}")
        for i in range(n)])


def test_a_transaction_writes_its_creates_with_the_same_statements_whatever_its_size(app, client) -> None:  # type: ignore[no-untyped-def]
    with inserts_counted(app) as small:
        assert post_bundle(client, patients(3, "Small")).status_code == 200
    with inserts_counted(app) as large:
        assert post_bundle(client, patients(30, "Large")).status_code == 200
    assert len(large) == len(small)
    # every one stored, with its index rows (R4 search: family, identifier, gender)
    assert client.get("/fhir/Patient?family=Large&_summary=count").get_json()["total"] == 30
    assert client.get("/fhir/Patient?identifier=http://hospital.example/mrn|Large-29").get_json()["total"] == 1
    assert client.get("/fhir/Patient?gender=female&_summary=count").get_json()["total"] == 33
    history = client.get("/fhir/Patient/_history?_count=100").get_json()
    assert history["total"] == 33


def test_a_search_entry_sees_the_creates_before_it(client) -> None:  # type: ignore[no-untyped-def]
    tx = patients(2, "Seen")
    tx["entry"].append(entry("GET", "Patient?family=Seen"))
    body = post_bundle(client, tx).get_json()
    assert body["entry"][2]["resource"]["type"] == "searchset"
    assert len([e for e in body["entry"][2]["resource"]["entry"] if e["search"]["mode"] == "match"]) == 2


def test_each_resource_is_parsed_by_the_r4_model_once(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from service.fhir import resources

    parsed: list[str] = []
    real = resources._model

    class Counting:
        def __init__(self, model: Any) -> None:
            self.model = model

        def model_validate(self, data: dict[str, Any]) -> Any:
            parsed.append(data["resourceType"])
            return self.model.model_validate(data)

    monkeypatch.setattr(resources, "_model", lambda res_type: Counting(real(res_type)))
    assert post_bundle(client, patients(4, "Once")).status_code == 200
    assert [t for t in parsed if t != "Provenance"] == ["Patient"] * 4   # (and the transaction's Provenance)
