"""FHIR Bulk Data export over the REST API (README, "Export and restore"; Bulk Data Access IG
v2): kick-off, status with X-Progress, the manifest and its NDJSON files, _type, _since,
Patient- and Group-level compartments, DELETE, expiry, the system/ scope, and the job rows that
any process may claim once (a lease; given back when the process stops). SQLite and PostgreSQL."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

from service import create_app
from service.clock import FixedClock
from service.store import ExportJobs
from service.store.schema import resources
from tests.auth import make_token
from tests.cohort import write_cohort

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def bulk(database_url: str, tmp_path: Path) -> Iterator[tuple[Any, FixedClock, list[str]]]:
    """An app whose export files go to tmp_path/exports, holding a two-patient cohort."""
    clock = FixedClock(datetime(2025, 1, 1, 9, tzinfo=timezone.utc))
    app = create_app({"database_url": database_url, "base_url": "http://toh.test/fhir",
                      "export_dir": str(tmp_path / "exports"), "export_expiry_hours": 1}, clock=clock)
    patients = write_cohort(app.test_client(), clock, patients=2)
    yield app, clock, patients
    app.extensions["toh"].database.dispose()


def finished(client: Any, location: str, headers: dict[str, str] | None = None) -> Any:
    """Poll the status URL (as a client does) until it is no longer 202; checks X-Progress."""
    path = location.removeprefix("http://toh.test")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(path, headers=headers or {})
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"] and response.headers["Retry-After"]
        time.sleep(0.05)
    raise AssertionError("the export did not finish within 60 s")


def kick_off(client: Any, url: str, headers: dict[str, str] | None = None) -> Any:
    response = client.get(url, headers={**ASYNC, **(headers or {})})
    assert response.status_code == 202, response.get_json()
    assert response.headers["Content-Location"].startswith("http://toh.test/fhir/$export-status/")
    done = finished(client, response.headers["Content-Location"], headers)
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.mimetype == "application/json" and done.headers["Expires"]
    return response.headers["Content-Location"], done.get_json()


def files(client: Any, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each output file's resources, by type, checking its media type and count."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        response = client.get(entry["url"].removeprefix("http://toh.test"), headers={"Accept": "application/fhir+ndjson"})
        assert response.status_code == 200 and response.mimetype == "application/fhir+ndjson"
        lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
        assert len(lines) == entry["count"] and {r["resourceType"] for r in lines} == {entry["type"]}
        out[entry["type"]] = lines
    return out


def stored_count(database_url: str, res_type: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(resources).where(
            resources.c.res_type == res_type, resources.c.deleted.is_(False))).scalar_one()
    engine.dispose()
    return int(count)


def test_system_export_of_some_types(bulk: Any, database_url: str) -> None:
    app, _clock, patients = bulk
    client = app.test_client()
    _, manifest = kick_off(client, "/fhir/$export?_type=Patient,Observation&_outputFormat=application/fhir%2Bndjson")
    assert manifest["request"] == "http://toh.test/fhir/$export?_type=Patient,Observation&_outputFormat=application/fhir%2Bndjson"
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["transactionTime"].endswith("Z")
    assert [o["type"] for o in manifest["output"]] == ["Observation", "Patient"]
    got = files(client, manifest)
    assert sorted(p["id"] for p in got["Patient"]) == sorted(patients)
    assert len(got["Observation"]) == stored_count(database_url, "Observation")   # deleted ones are not exported
    for resource in got["Observation"][:5]:                 # each line is the resource as the server serves it
        assert client.get(f"/fhir/Observation/{resource['id']}").get_json() == resource


def test_since_keeps_what_changed_after_it(bulk: Any) -> None:
    app, _clock, _ = bulk
    client = app.test_client()
    _, manifest = kick_off(client, "/fhir/$export?_since=2025-06-01T00:00:00Z")
    got = files(client, manifest)
    changed = client.get("/fhir/Condition?_lastUpdated=gt2025-06-01T00:00:00Z&_count=1000").get_json()
    assert sorted(c["id"] for c in got["Condition"]) == sorted(e["resource"]["id"] for e in changed["entry"])
    assert all(r["meta"]["lastUpdated"] > "2025-06-01" for rs in got.values() for r in rs)
    assert "Patient" not in got                              # written in January, unchanged since


def test_patient_and_group_exports_keep_to_the_compartments(bulk: Any) -> None:
    app, _clock, patients = bulk
    client = app.test_client()
    _, everyone = kick_off(client, "/fhir/Patient/$export")
    got = files(client, everyone)
    assert "Practitioner" not in got and "Organization" not in got    # not in a Patient compartment
    assert sorted(p["id"] for p in got["Patient"]) == sorted(patients)
    group = {"resourceType": "Group", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{patients[0]}"}},
                        {"entity": {"reference": f"Patient/{patients[1]}"}, "inactive": True}]}
    created = client.post("/fhir/Group", json=group, headers={"Content-Type": "application/fhir+json"})
    _, members = kick_off(client, f"/fhir/Group/{created.get_json()['id']}/$export?_type=Patient,Condition")
    got = files(client, members)
    assert [p["id"] for p in got["Patient"]] == [patients[0]]
    assert got["Condition"] and {c["subject"]["reference"] for c in got["Condition"]} == {f"Patient/{patients[0]}"}
    assert client.get("/fhir/Group/nobody/$export", headers=ASYNC).status_code == 404


def test_delete_cancels_and_removes_the_files_and_only_the_owner_sees_a_job(bulk: Any, tmp_path: Path) -> None:
    app, _clock, _ = bulk
    client = app.test_client()
    location, manifest = kick_off(client, "/fhir/$export?_type=Patient")
    job_id = location.rsplit("/", 1)[1]
    assert (tmp_path / "exports" / job_id / "Patient.ndjson").is_file()
    other = {"Authorization": f"Bearer {make_token(('system/*.rs',), sub='someone-else')}"}
    path = location.removeprefix("http://toh.test")
    assert client.get(path, headers=other).status_code == 404
    assert client.get(manifest["output"][0]["url"].removeprefix("http://toh.test"), headers=other).status_code == 404
    assert client.delete(path, headers=other).status_code == 404
    deleted = client.delete(path)
    assert deleted.status_code == 202
    assert not (tmp_path / "exports" / job_id).exists()
    assert client.get(path).status_code == 404 and client.delete(path).status_code == 404


def test_files_expire(bulk: Any, tmp_path: Path) -> None:
    app, clock, _ = bulk
    client = app.test_client()
    location, _ = kick_off(client, "/fhir/$export?_type=Patient")
    exporter = app.extensions["toh"].exporter
    clock.advance(timedelta(minutes=59))
    assert exporter.expire() == 0 and client.get(location.removeprefix("http://toh.test")).status_code == 200
    clock.advance(timedelta(minutes=2))                     # TOH_EXPORT_EXPIRY_HOURS = 1
    assert exporter.expire() == 1
    assert client.get(location.removeprefix("http://toh.test")).status_code == 404
    assert not any((tmp_path / "exports").iterdir())


@pytest.mark.parametrize("url, headers, status, says", [
    ("/fhir/$export", {"Accept": "application/fhir+json"}, 400, "respond-async"),
    ("/fhir/$export?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
    ("/fhir/$export?_type=Patient,Nonsense", ASYNC, 400, "Nonsense"),
    ("/fhir/$export?_type=AuditEvent", ASYNC, 400, "AuditEvent"),
    ("/fhir/$export?_since=yesterday", ASYNC, 400, "_since"),
    ("/fhir/$export?_typeFilter=Patient%3Fname%3Dx", ASYNC, 400, "_typeFilter"),
    ("/fhir/$export", {**ASYNC, "Authorization": f"Bearer {make_token(('user/*.rs',))}"}, 403, "system/"),
    ("/fhir/$export?_type=Patient",
     {**ASYNC, "Authorization": f"Bearer {make_token(('system/Observation.rs',))}"}, 403, "Patient"),
])
def test_refusals_are_outcomes_and_queue_nothing(app: Any, url: str, headers: dict[str, str], status: int,
                                                 says: str) -> None:
    response = app.test_client().get(url, headers=headers)
    assert response.status_code == status
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and says in json.dumps(outcome)
    database = app.extensions["toh"].database
    with database.unit_of_work(write=False) as uow:
        assert ExportJobs(uow.conn, database.dialect).claim(datetime.now(timezone.utc)) is None


def test_a_job_is_claimed_once_taken_over_after_its_lease_and_given_back_on_stop(bulk: Any, tmp_path: Path) -> None:
    app, clock, _ = bulk
    services = app.extensions["toh"]
    database, exporter = services.database, services.exporter
    params = {"level": "system", "types": ["Patient"], "since": None, "patients": None, "compartment_types": [],
              "base": "http://toh.test/fhir"}
    with database.unit_of_work() as uow:
        job_id = ExportJobs(uow.conn, database.dialect).create(request="r", params=params, owner="x", now=clock.now())
        uow.conn.commit()
        uow.committed = True

    def claim(at: datetime) -> str | None:
        with database.unit_of_work() as uow:
            job = ExportJobs(uow.conn, database.dialect).claim(at)
            uow.conn.commit()
            uow.committed = True
            return None if job is None else job.id

    assert claim(clock.now()) == job_id
    assert claim(clock.now()) is None                          # held
    assert claim(clock.now() + timedelta(minutes=6)) == job_id  # its holder died: the lease ran out
    clock.advance(timedelta(minutes=12))
    stopping = iter([False, True])                            # the process stops as the job starts writing
    assert exporter.run_pending(stop=lambda: next(stopping, True)) == 0
    with database.unit_of_work(write=False) as uow:
        job = ExportJobs(uow.conn, database.dialect).get(job_id)
    assert job is not None and job.status == "pending"        # given back, for any process
    assert not (tmp_path / "exports" / job_id).exists()
    assert exporter.run_pending(stop=lambda: False) == 1       # the next process finishes it
    with database.unit_of_work(write=False) as uow:
        job = ExportJobs(uow.conn, database.dialect).get(job_id)
    assert job is not None and job.status == "complete" and job.manifest is not None
    assert (tmp_path / "exports" / job_id / "Patient.ndjson").is_file()


def test_the_capability_statement_declares_the_export_operations(app: Any) -> None:
    statement = app.test_client().get("/fhir/metadata").get_json()
    bulk = "http://hl7.org/fhir/uv/bulkdata"
    assert statement["instantiates"] == [f"{bulk}/CapabilityStatement/bulk-data"]
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/export"} in statement["rest"][0]["operation"]
    by_type = {r["type"]: r.get("operation", []) for r in statement["rest"][0]["resource"]}
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/patient-export"} in by_type["Patient"]
    assert {"name": "export", "definition": f"{bulk}/OperationDefinition/group-export"} in by_type["Group"]
    assert not any(o["name"] == "export" for o in by_type["Observation"])
    assert not any(o["name"].startswith("export-") for ops in by_type.values() for o in ops)


def test_two_processes_never_hold_the_same_job(pg_database_url: str) -> None:
    """PostgreSQL: while one transaction holds a job it is claiming, another claimer skips it
    (FOR UPDATE SKIP LOCKED) and takes the next one, without waiting."""
    from service.store import Database
    from tests.databases import empty_tables
    empty_tables(pg_database_url)
    database = Database(pg_database_url)
    now = datetime(2026, 1, 5, tzinfo=timezone.utc)
    params = {"level": "system", "types": None, "since": None, "patients": None, "compartment_types": [], "base": "b"}
    try:
        with database.unit_of_work() as uow:
            jobs = ExportJobs(uow.conn, database.dialect)
            first = jobs.create(request="1", params=params, owner="x", now=now)
            second = jobs.create(request="2", params=params, owner="x", now=now + timedelta(seconds=1))
            uow.conn.commit()
            uow.committed = True
        with database.unit_of_work() as one, database.unit_of_work() as other:
            held = ExportJobs(one.conn, database.dialect).claim(now)
            other.conn.execute(text("SET LOCAL lock_timeout = '3s'"))   # a claimer that waited would fail, not hang
            started = time.monotonic()
            skipped_to = ExportJobs(other.conn, database.dialect).claim(now)
            assert time.monotonic() - started < 2
            assert held is not None and skipped_to is not None
            assert (held.id, skipped_to.id) == (first, second)
            assert ExportJobs(other.conn, database.dialect).claim(now) is None
    finally:
        database.dispose()
