"""An auditor's walk-through, end to end over HTTP (SQLite and PostgreSQL): find the care plans
of a period, read one's history, see who changed it (Provenance) and who read it (AuditEvent),
and download the adherence report as CSV and JSON."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from service.fhir.canonical import CONDITION_CLINICAL, TOH_CODES
from service.security import ROLES
from tests.auth import make_token

FHIR = "application/fhir+json"


def send(client: Any, method: str, path: str, body: Any = None) -> Any:
    response = client.open(path, method=method, data=None if body is None else json.dumps(body),
                           headers={"Content-Type": FHIR})
    assert response.status_code < 300, response.get_data(as_text=True)
    return response


def task(tid: str, due: str, status: str, done: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Task", "id": tid, "status": status, "intent": "order",
                            "basedOn": [{"reference": "CarePlan/plan-1"}], "for": {"reference": "Patient/p1"},
                            "focus": {"reference": "Condition/hip"},
                            "restriction": {"period": {"start": due, "end": due}}}
    if done:
        body["executionPeriod"] = {"start": done, "end": done}
    return body


PLAN = {"resourceType": "CarePlan", "id": "plan-1", "status": "active", "intent": "plan",
        "subject": {"reference": "Patient/p1"}, "period": {"start": "2025-06-01"},
        "addresses": [{"reference": "Condition/hip"}]}


@pytest.fixture
def clinic(app: Any) -> dict[str, Any]:
    """A plan written and changed by dr-house (ehr), read by bob (staff)."""
    ehr = app.test_client(token=make_token(ROLES["ehr"], sub="dr-house"))
    send(ehr, "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1", "name": [{"family": "Testperson"}]})
    send(ehr, "PUT", "/fhir/Condition/hip", {
        "resourceType": "Condition", "id": "hip", "subject": {"reference": "Patient/p1"},
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved"}]},
        "code": {"text": "Transient osteoporosis of the left hip"},
        "onsetDateTime": "2025-06-01", "abatementDateTime": "2025-12-01"})
    send(ehr, "PUT", "/fhir/CarePlan/plan-1", PLAN)
    send(ehr, "PUT", "/fhir/CarePlan/plan-old", {**PLAN, "id": "plan-old", "status": "completed",
                                                 "period": {"start": "2024-01-01", "end": "2024-06-01"}})
    for body in (task("t-on-time", "2025-07-15", "completed", "2025-07-10"),
                 task("t-late", "2025-09-01", "completed", "2025-09-20"),
                 task("t-missed", "2025-12-01", "requested"),
                 task("t-cancelled", "2025-10-01", "cancelled"),
                 task("t-open", "2026-03-01", "requested"),
                 task("t-later", "2027-01-01", "requested")):     # due after the period: not counted
        send(ehr, "PUT", f"/fhir/Task/{body['id']}", body)
    send(ehr, "PUT", "/fhir/Flag/f1", {"resourceType": "Flag", "id": "f1", "status": "inactive",
                                       "code": {"coding": [{"system": TOH_CODES, "code": "migration"}]},
                                       "subject": {"reference": "Patient/p1"},
                                       "period": {"start": "2025-08-01", "end": "2025-08-31"}})
    send(ehr, "PUT", "/fhir/CarePlan/plan-1", {**PLAN, "note": [{"text": "reviewed"}]})   # version 2
    bob = app.test_client(token=make_token(ROLES["staff"], sub="bob"))
    send(bob, "GET", "/fhir/CarePlan/plan-1")
    return {"auditor": app.test_client(token=make_token(ROLES["auditor"], sub="alice"))}


def test_the_auditors_walk_through(clinic: dict[str, Any]) -> None:
    alice = clinic["auditor"]
    # 1. the care plans of a period, with their patient and who made them
    plans = send(alice, "GET", "/fhir/CarePlan?date=ge2025-06-01&date=le2026-06-30"
                               "&_include=CarePlan:subject&_revinclude=Provenance:target").get_json()
    matches = [e["resource"]["id"] for e in plans["entry"] if e["search"]["mode"] == "match"]
    included = {e["resource"]["resourceType"] for e in plans["entry"] if e["search"]["mode"] == "include"}
    assert matches == ["plan-1"]
    assert included == {"Patient", "Provenance"}
    # 2. its history
    history = send(alice, "GET", "/fhir/CarePlan/plan-1/_history").get_json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    # 3. who changed it: one Provenance per version
    provenance = send(alice, "GET", "/fhir/Provenance?target=CarePlan/plan-1").get_json()
    made = sorted((t["reference"], p["resource"]["agent"][0]["who"]["display"])
                  for p in provenance["entry"] for t in p["resource"]["target"] if "plan-1" in t["reference"])
    assert made == [("CarePlan/plan-1/_history/1", "dr-house"), ("CarePlan/plan-1/_history/2", "dr-house")]
    # 4. who read it
    reads = send(alice, "GET", "/fhir/AuditEvent?entity=CarePlan/plan-1&action=R&subtype=read").get_json()
    readers = {a["who"]["display"] for e in reads["entry"] for a in e["resource"]["agent"] if a["requestor"]}
    assert "bob" in readers
    # 5. the adherence report, CSV for spreadsheets
    response = send(alice, "GET", "/fhir/CarePlan/$adherence-report?from=2025-06-01&to=2026-06-30&_format=csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["care_plan"] for r in rows] == ["CarePlan/plan-1"]
    row = rows[0]
    assert (row["followups_due"], row["done_on_time"], row["done_late"], row["missed"], row["cancelled"],
            row["open"]) == ("5", "1", "1", "1", "1", "1")
    assert row["flags_raised"] == "1" and "migration 2025-08-01..2025-08-31 (30 days)" in row["flags"]
    assert row["onset_to_resolution_days"] == "183"              # 2025-06-01 to 2025-12-01
    # ... and JSON for tools
    report = send(alice, "GET", "/fhir/CarePlan/$adherence-report?from=2025-06-01&to=2026-06-30&_format=json")
    line = report.get_json()["carePlans"][0]
    assert line["missed"] == 1 and line["flags"][0]["days_open"] == 30
    # 6. the auditor's own reading is on the record too
    mine = send(alice, "GET", "/fhir/AuditEvent?agent=alice&subtype=operation").get_json()
    assert mine["total"] >= 2


def test_the_report_needs_an_auditors_reach(app: Any, clinic: dict[str, Any]) -> None:
    patient_app = app.test_client(token=make_token("patient/*.rs", patient="p1"))
    assert patient_app.get("/fhir/CarePlan/$adherence-report?from=2025-01-01&to=2025-12-31").status_code == 403
    alice = clinic["auditor"]
    assert alice.get("/fhir/CarePlan/$adherence-report?from=2025-13-01&to=2025-12-31").status_code == 400
    assert alice.get("/fhir/CarePlan/$adherence-report?from=2025-01-01").status_code == 400
    assert alice.get("/fhir/CarePlan/$adherence-report?from=2025-01-01&to=2025-12-31&_format=xml").status_code == 400


def test_the_report_is_in_the_capability_statement(client: Any) -> None:
    resources = client.get("/fhir/metadata").get_json()["rest"][0]["resource"]
    care_plan = next(r for r in resources if r["type"] == "CarePlan")
    assert any(o["name"] == "adherence-report" for o in care_plan["operation"])
