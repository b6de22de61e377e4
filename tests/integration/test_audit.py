"""The audit trail over HTTP (SQLite and PostgreSQL): a BALP AuditEvent for every interaction,
refusals included; append-only through the API and against raw SQL; Provenance for every
write, the service's own included."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from service.fhir.canonical import CONDITION_CLINICAL, EXT_LATERALITY, SNOMED, TOH_CODES
from service.security import ROLES
from tests.auth import make_token

FHIR = "application/fhir+json"
HIP, KNEE, LEFT, RIGHT = "24136001", "49076000", "7771000", "24028007"   # SNOMED joints and sides


def send(client: Any, method: str, path: str, body: Any = None, **headers: str) -> Any:
    data = None if body is None else json.dumps(body)
    return client.open(path, method=method, data=data, headers={"Content-Type": FHIR, **headers})


def toh_condition(cid: str, joint: str, side: str, onset: str) -> dict[str, Any]:
    site = {"coding": [{"system": SNOMED, "code": joint}],
            "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {"coding": [{"system": SNOMED,
                                                                                        "code": side}]}}]}
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [site], "onsetDateTime": onset}


def events(client: Any, query: str) -> list[dict[str, Any]]:
    bundle = client.get(f"/fhir/AuditEvent?{query}")
    assert bundle.status_code == 200, bundle.get_data(as_text=True)
    return [e["resource"] for e in bundle.get_json().get("entry", [])]


def coding(concept: dict[str, Any]) -> tuple[str, str]:
    return concept["system"], concept["code"]


def test_a_read_is_recorded_as_balp_says(app: Any, client: Any) -> None:
    send(client, "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    alice = app.test_client(token=make_token(ROLES["auditor"], sub="alice"))
    assert alice.get("/fhir/Patient/p1").status_code == 200
    found = events(client, "entity=Patient/p1&subtype=read")
    assert len(found) == 1
    event = found[0]
    assert coding(event["type"]) == ("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest")
    assert coding(event["subtype"][0]) == ("http://hl7.org/fhir/restful-interaction", "read")
    assert event["action"] == "R" and event["outcome"] == "0"
    assert event["recorded"].startswith("2026-01-05T09:00")            # the service's clock
    requestor = next(a for a in event["agent"] if a["requestor"])
    assert requestor["who"]["identifier"]["value"] == "alice"
    assert requestor["altId"] == "toh-tests"                           # the client id
    assert "urn:smart:scope:user/AuditEvent.rs" in requestor["policy"]
    assert requestor["network"]["address"]
    what = [e["what"]["reference"] for e in event["entity"] if "reference" in e.get("what", {})]
    assert "Patient/p1/_history/1" in what
    assert event["source"]["observer"]["display"] == "toh-service"


def test_a_search_records_its_query(client: Any) -> None:
    assert client.get("/fhir/Condition?subject=Patient/p9&_count=5").status_code == 200
    event = events(client, "subtype=search-type")[0]
    query = next(e["query"] for e in event["entity"] if "query" in e)
    assert base64.b64decode(query).decode() == "subject=Patient/p9&_count=5"
    assert any(e.get("what", {}).get("reference") == "Patient/p9" for e in event["entity"])


def test_refusals_are_recorded(app: Any, client: Any) -> None:
    assert app.test_client(token=None).get("/fhir/Patient/p1").status_code == 401
    staff = app.test_client(token=make_token(ROLES["staff"], sub="bob"))
    assert send(staff, "POST", "/fhir/Condition", toh_condition("c1", HIP, LEFT, "2026-01-01")).status_code == 403
    unauthenticated = events(client, "outcome=4&subtype=read")
    assert len(unauthenticated) == 1 and "401" in unauthenticated[0]["outcomeDesc"]
    refused = events(client, "outcome=4&action=C&agent=bob")
    assert len(refused) == 1 and "403" in refused[0]["outcomeDesc"]


def test_a_write_and_its_audit_event_land_together(client: Any) -> None:
    created = send(client, "POST", "/fhir/Patient", {"resourceType": "Patient"})
    pid = created.get_json()["id"]
    event = events(client, f"entity=Patient/{pid}&action=C")[0]
    assert event["outcome"] == "0"
    assert any(e.get("what", {}).get("reference") == f"Patient/{pid}/_history/1" for e in event["entity"])
    # a transaction that fails keeps nothing but the record of its failure
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "gender": "x"}}]}
    assert send(client, "POST", "/fhir", bad).status_code == 422 or send(client, "POST", "/fhir", bad).status_code == 400
    failed = events(client, "subtype=transaction")
    assert failed and all(e["outcome"] == "4" for e in failed)
    assert client.get("/fhir/Patient?_summary=count").get_json()["total"] == 1


@pytest.mark.parametrize("method, path", [("POST", "/fhir/AuditEvent"), ("PUT", "/fhir/AuditEvent/x"),
                                          ("DELETE", "/fhir/AuditEvent/x")])
def test_audit_events_cannot_be_written_through_the_api(client: Any, method: str, path: str) -> None:
    body = {"resourceType": "AuditEvent", "id": "x"} if method != "DELETE" else None
    response = send(client, method, path, body)
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_a_bundle_cannot_write_audit_events(app: Any) -> None:
    client = app.test_client(token=make_token("system/AuditEvent.cruds"))   # even a scope naming it
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "POST", "url": "AuditEvent"}, "resource": {
            "resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}}]}
    entry = send(client, "POST", "/fhir", bundle).get_json()["entry"][0]
    assert entry["response"]["status"].startswith("405")


def test_the_trail_is_append_only_against_raw_sql(client: Any, database_url: str) -> None:
    client.get("/fhir/Patient")
    client.application.extensions["toh"].database.settle_audit()   # SQLite: the search's event out of the journal
    engine = create_engine(database_url)
    try:
        for statement in ("UPDATE audit_events SET outcome = '0'", "DELETE FROM audit_events"):
            with pytest.raises(DBAPIError):
                with engine.begin() as conn:
                    conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() >= 1
    finally:
        engine.dispose()


def test_audit_searches(client: Any, clock: Any) -> None:
    from datetime import timedelta
    send(client, "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    clock.advance(timedelta(days=1))
    client.get("/fhir/Patient/p1")
    # (each search is recorded too: subtype keeps these counts to the write and the read)
    assert len(events(client, "patient=Patient/p1&subtype=read,update")) == 2
    assert len(events(client, "patient=p1&subtype=read,update&date=ge2026-01-06")) == 1
    assert len(events(client, "patient=p1&subtype=read,update&date=lt2026-01-06")) == 1
    assert len(events(client, "entity=http://toh.test/fhir/Patient/p1&action=U,R")) == 2
    assert len(events(client, "agent=test-suite&subtype=update&outcome=0")) == 1
    unknown = client.get("/fhir/AuditEvent?who-knows=1")
    assert unknown.status_code == 400
    assert client.get("/fhir/AuditEvent?date=notadate").status_code == 400


def test_every_write_has_its_provenance(app: Any, client: Any) -> None:
    send(client, "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    ehr = app.test_client(token=make_token(ROLES["ehr"], sub="dr-house", fhirUser="Practitioner/house"))
    assert send(ehr, "PUT", "/fhir/Condition/hip", toh_condition("hip", HIP, LEFT, "2026-01-01")).status_code == 201
    changed = toh_condition("hip", HIP, LEFT, "2025-12-30")
    assert send(ehr, "PUT", "/fhir/Condition/hip", changed).status_code == 200
    found = client.get("/fhir/Provenance?target=Condition/hip").get_json()
    provenances = [e["resource"] for e in found["entry"]]
    targets = sorted(t["reference"] for p in provenances for t in p["target"] if "Condition/hip" in t["reference"])
    assert targets == ["Condition/hip/_history/1", "Condition/hip/_history/2"]
    for p in provenances:
        assert p["agent"][0]["who"]["reference"] == "Practitioner/house"
        assert p["agent"][0]["onBehalfOf"]["identifier"]["value"] == "toh-tests"
    activities = sorted(p["activity"]["coding"][0]["code"] for p in provenances)
    assert activities == ["CREATE", "UPDATE"]


def test_the_services_own_writes_have_the_service_as_agent(client: Any) -> None:
    send(client, "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"})
    send(client, "PUT", "/fhir/Condition/hip", toh_condition("hip", HIP, LEFT, "2025-06-01"))
    send(client, "PUT", "/fhir/Condition/knee", toh_condition("knee", KNEE, RIGHT, "2025-11-01"))  # migration
    flags = client.get("/fhir/Flag?patient=Patient/p1").get_json()["entry"]
    assert flags, "the clinical watch raises a Flag for the migration"
    flag = flags[0]["resource"]
    provenance = client.get(f"/fhir/Provenance?target=Flag/{flag['id']}").get_json()["entry"][0]["resource"]
    assert provenance["agent"][0]["who"]["display"] == "toh-service"
    assert f"Flag/{flag['id']}/_history/1" in [t["reference"] for t in provenance["target"]]


def _audit_row(event_id: str, recorded: Any) -> dict[str, Any]:
    return {"id": event_id, "recorded": recorded, "action": "R", "subtype": "read", "outcome": "0",
            "agent": "alice", "agent_ref": None, "entity": "Patient/p1", "patient": "p1",
            "content": json.dumps({"resourceType": "AuditEvent", "id": event_id})}


@pytest.mark.parametrize("fsync", [False, True], ids=["commit", "fsync"])
def test_a_read_event_commits_before_the_answer_and_leaves_clinical_writes_durable(
        database_url: str, clock: Any, fsync: bool) -> None:
    """TOH_AUDIT_FSYNC=0 (the default): a read's AuditEvent is committed (visible to every other
    connection, kept through a SIGKILL) without waiting for the disk; only its own transaction
    is relaxed (SQLite: the connection's next other transaction sets full durability again
    before it begins), so the pooled connection is back to full durability for the next
    clinical write, also when the append fails."""
    from service.store.db import Database

    db = Database(database_url, clock=clock, audit_journal=False, audit_fsync=fsync)
    db.migrate()
    sqlite = db.dialect == "sqlite"
    seen: list[str] = []
    try:
        with db.engine.connect() as conn:     # the pool's one connection, traced by the driver itself
            driver = conn.connection.driver_connection
            if sqlite:
                driver.set_trace_callback(seen.append)
            else:
                import psycopg

                class Traced(psycopg.Cursor):   # type: ignore[type-arg]
                    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                        seen.append(str(query))
                        return super().execute(query, *args, **kwargs)

                driver.cursor_factory = Traced
        db.append_audit([_audit_row("e1", clock.now())])
        other = create_engine(database_url)
        try:
            with other.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM audit_events WHERE id = 'e1'")).scalar_one() == 1
        finally:
            other.dispose()
        relaxing = [s for s in seen if "synchronous" in s.lower()]
        if fsync:
            assert relaxing == []
        elif sqlite:   # one INSERT in autocommit, its own transaction; relaxed until the next other one
            assert relaxing == ["PRAGMA synchronous=NORMAL"]
            assert [s for s in seen if s.startswith("INSERT INTO audit_events")] and \
                not [s for s in seen if s.startswith(("BEGIN", "COMMIT"))], seen
        else:   # one INSERT in autocommit, its own transaction, relaxed for that transaction only
            assert len(relaxing) == 1 and relaxing[0].startswith("INSERT INTO audit_events")
            assert relaxing[0].endswith("RETURNING set_config('synchronous_commit', 'off', true)")
        with pytest.raises(DBAPIError):
            db.append_audit([_audit_row("e1", clock.now())])      # the same id again: refused
        with db.engine.connect() as conn:                         # back to full durability
            if sqlite:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2   # FULL
                if not fsync:   # set again on the traced connection, before its transaction began
                    changes = [s for s in seen if "synchronous=" in s or s.startswith("BEGIN")]
                    assert changes[-2:] == ["PRAGMA synchronous=FULL", "BEGIN DEFERRED"], changes
            else:
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 1
    finally:
        db.dispose()


def test_read_events_appended_together_are_each_committed_once_and_a_refused_one_fails_alone(
        database_url: str, clock: Any) -> None:
    """Threads appending at once (a worker's threads answering reads) share transactions
    (service.store.group_commit): every call returns with its row committed, and a row the
    database refuses (an id already recorded) fails its own call only."""
    import threading

    from service.store.db import Database

    db = Database(database_url, clock=clock, audit_journal=False)
    db.migrate()
    try:
        db.append_audit([_audit_row("taken", clock.now())])
        outcome: dict[str, Any] = {}
        checker = create_engine(database_url)

        def append(event_id: str) -> None:
            try:
                db.append_audit([_audit_row(event_id, clock.now())])
            except DBAPIError as exc:
                outcome[event_id] = exc
                return
            with checker.connect() as conn:     # committed, seen from another connection
                outcome[event_id] = conn.execute(text("SELECT count(*) FROM audit_events WHERE id = :i"),
                                                 {"i": event_id}).scalar_one()

        ids = [f"e{i}" for i in range(24)] + ["taken"]
        threads = [threading.Thread(target=append, args=(event_id,)) for event_id in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        checker.dispose()
        assert isinstance(outcome.pop("taken"), DBAPIError)
        assert outcome == {f"e{i}": 1 for i in range(24)}
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 25
    finally:
        db.dispose()


def test_a_failing_audit_append_raises_sqlalchemys_error_and_the_next_one_works(
        database_url: str, clock: Any) -> None:
    """The append runs on the driver's cursor; its errors still reach the caller as SQLAlchemy's
    (the edge answers 503 for an OperationalError, the database being away), and the pooled
    connection is left usable."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from service.store.db import Database

    db = Database(database_url, clock=clock, audit_journal=False)
    db.migrate()
    other = create_engine(database_url)
    try:
        with other.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        expected = OperationalError if db.dialect == "sqlite" else ProgrammingError   # no such table
        with pytest.raises(expected):
            db.append_audit([_audit_row("e1", clock.now())])
        with other.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        db.append_audit([_audit_row("e2", clock.now())])
        with other.connect() as conn:
            assert conn.execute(text("SELECT id FROM audit_events")).scalars().all() == ["e2"]
    finally:
        other.dispose()
        db.dispose()


def test_a_read_event_committed_on_the_reads_own_connection(database_url: str, clock: Any) -> None:
    """append_audit(via=) commits on the request's connection once its read is over (no second
    connection from the pool): the row is committed on return, and the connection is left as
    the read had it (PostgreSQL: still in autocommit)."""
    from service.store.db import Database

    db = Database(database_url, clock=clock, audit_journal=False)
    db.migrate()
    other = create_engine(database_url)
    try:
        with db.unit_of_work(write=False) as uow:
            uow.conn.execute(text("SELECT count(*) FROM resources")).scalar_one()
            uow.commit()
            driver = uow.conn.connection.driver_connection
            before = getattr(driver, "autocommit", None)
            db.append_audit([_audit_row("e1", clock.now())], via=uow.conn)
            with other.connect() as conn:     # committed, seen from elsewhere, before the read ends
                assert conn.execute(text("SELECT count(*) FROM audit_events WHERE id = 'e1'")).scalar_one() == 1
            assert getattr(driver, "autocommit", None) == before
            assert db.engine.pool.checkedout() == 1          # no other connection was taken
            assert uow.conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == 1
    finally:
        other.dispose()
        db.dispose()


def test_an_audit_append_with_no_database_to_connect_to_raises_sqlalchemys_operational_error(
        pg_database_url: str, clock: Any) -> None:
    """The edge answers 503 for an OperationalError (TRANSIENT_ERRORS): a connection that
    cannot be made (the server shut down) must reach it as one, not as the driver's own.
    PostgreSQL only: a SQLite file is always there to open."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from bench.scratch import free_port
    from service.store.db import Database

    db = Database(make_url(pg_database_url).set(port=free_port()).render_as_string(hide_password=False), clock=clock)
    try:
        with pytest.raises(OperationalError):
            db.append_audit([_audit_row("e1", clock.now())])
    finally:
        db.dispose()


@pytest.mark.parametrize("fsync", [False, True], ids=["commit", "fsync"])
def test_more_audit_rows_than_one_statement_takes_are_appended_in_one_transaction(
        database_url: str, clock: Any, fsync: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past AUDIT_STATEMENT_ROWS (PostgreSQL's one-statement append) or SQLITE_STATEMENT_VALUES
    (SQLite's) the rows go in a transaction of statements: all committed, or none when one is
    refused, and the connection back to full durability either way."""
    from service.store import db as db_module
    from service.store.db import Database

    monkeypatch.setattr(db_module, "AUDIT_STATEMENT_ROWS", 1)
    monkeypatch.setattr(db_module, "SQLITE_STATEMENT_VALUES", 1)
    db = Database(database_url, clock=clock, audit_journal=False, audit_fsync=fsync)
    db.migrate()
    try:
        db.append_audit([_audit_row("m1", clock.now()), _audit_row("m2", clock.now())])
        with pytest.raises(DBAPIError):
            db.append_audit([_audit_row("m3", clock.now()), _audit_row("m1", clock.now())])
        with db.engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT id FROM audit_events")).scalars()) == ["m1", "m2"]
            if db.dialect == "postgresql":
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
            else:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 2   # FULL
    finally:
        db.dispose()
