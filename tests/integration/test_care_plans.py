"""Care plans on a confirmed TOH diagnosis, PlanDefinition/$apply, and the sweep moving a
patient through the 6-24 month course by the clock (SQLite and PostgreSQL).

Expected values come from the guide's PlanDefinition (fhir_profiles/PlanDefinition/): reviews
6 weeks, 3, 6, 9 and 12 months after onset, 18 and 24 months only if unresolved at 12 months,
a repeat MRI between 6 and 24 months; and from the defaults TOH_FOLLOWUP_LEAD_DAYS=7 (ready a
week before the window) and TOH_OVERDUE_GRACE_DAYS=14 (overdue from the 15th day after it).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from service.fhir.canonical import (CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, PD_TOH_PROTOCOL, SNOMED,
                                    TOH_CODES)
from service.workflows.sweep import sweep

FHIR = {"Content-Type": "application/fhir+json"}
HIP, KNEE, LEFT, RIGHT = "24136001", "49076000", "7771000", "24028007"


def at(day: str, hour: int = 9) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=timezone.utc)


def condition(cid: str, joint: str, side: str, onset: str, *, verification: str | None = "confirmed",
              clinical: str = "active", abatement: str | None = None, patient: str = "p1") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{patient}"},
        "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": clinical}]},
        "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
        "bodySite": [{"coding": [{"system": SNOMED, "code": joint}],
                      "extension": [{"url": EXT_LATERALITY,
                                     "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": side}]}}]}],
        "onsetDateTime": onset}
    if verification:
        resource["verificationStatus"] = {"coding": [{"system": CONDITION_VER_STATUS, "code": verification}]}
    if abatement:
        resource["abatementDateTime"] = abatement
    return resource


def put(client, resource: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          headers=FHIR)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def search(client, query: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    bundle = client.get(f"/fhir/{query}&_count=200").get_json()
    assert bundle["resourceType"] == "Bundle", bundle
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def tasks(client, patient: str = "p1") -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return sorted(search(client, f"Task?patient=Patient/{patient}"),
                  key=lambda t: (t["restriction"]["period"]["end"], t["instantiatesUri"]))


def by_action(client, patient: str = "p1") -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Tasks by their PlanDefinition action id (and the joint's CarePlan when several)."""
    return {t["instantiatesUri"].split("#")[1] + "@" + t["focus"]["reference"]: t for t in tasks(client, patient)}


def plans(client, patient: str = "p1") -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return search(client, f"CarePlan?patient=Patient/{patient}")


def active_flags(client, patient: str = "p1") -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((f["code"]["coding"][0]["code"], f["period"]["start"])
                  for f in search(client, f"Flag?patient=Patient/{patient}&status=active"))


def run_sweep(app, clock, day: str) -> list[str]:  # type: ignore[no-untyped-def]
    clock.set(at(day))
    report = sweep(app.extensions["toh"].database, clock.now())
    assert not report.failed, report.lines()
    return report.lines()


@pytest.fixture
def patient(client, clock):  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1979-04-02"})
    return "p1"


def test_a_confirmed_diagnosis_gets_one_plan_with_tasks_timed_from_onset(client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    [plan] = plans(client)
    assert plan["status"] == "active" and plan["intent"] == "plan"
    assert plan["subject"] == {"reference": "Patient/p1"}
    assert plan["addresses"] == [{"reference": "Condition/hip"}]
    assert plan["instantiatesCanonical"] == [PD_TOH_PROTOCOL]
    assert plan["period"]["start"] == "2025-03-01"          # the onset, not the day it arrived
    found = tasks(client)
    windows = [(t["instantiatesUri"].split("#")[1], t["restriction"]["period"]["start"],
                t["restriction"]["period"]["end"]) for t in found]
    assert windows == [("review-6w", "2025-04-12", "2025-04-12"), ("review-3m", "2025-06-01", "2025-06-01"),
                       ("review-6m", "2025-09-01", "2025-09-01"), ("review-9m", "2025-12-01", "2025-12-01"),
                       ("review-12m", "2026-03-01", "2026-03-01"), ("repeat-mri", "2025-09-01", "2027-03-01")]
    for task in found:
        assert task["status"] == "requested" and task["intent"] == "order"
        assert task["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
        assert task["for"] == {"reference": "Patient/p1"} and task["focus"] == {"reference": "Condition/hip"}
        assert task["code"]["coding"][0]["system"] == TOH_CODES
        assert task["code"]["coding"][0]["code"] in ("follow-up-review", "repeat-mri")
    referenced = {a["reference"]["reference"] for a in plan["activity"] if "reference" in a}
    assert referenced == {f"Task/{t['id']}" for t in found}
    # The same Condition again (unchanged, then with a new note), and a retried transaction: one plan.
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    put(client, {**condition("hip", HIP, LEFT, "2025-03-01"), "note": [{"text": "crutches"}]})
    entry = {"resource": condition("hip", HIP, LEFT, "2025-03-01"), "request": {"method": "PUT", "url": "Condition/hip"}}
    for _ in range(2):
        response = client.post("/fhir", data=json.dumps({"resourceType": "Bundle", "type": "transaction",
                                                         "entry": [entry]}), headers=FHIR)
        assert response.status_code == 200, response.get_json()
    assert len(plans(client)) == 1 and len(tasks(client)) == 6


def test_a_plan_only_once_the_diagnosis_is_confirmed_and_revoked_when_refuted(client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", verification="provisional"))
    assert plans(client) == [] and tasks(client) == []
    clock.set(at("2025-03-10"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    assert [p["status"] for p in plans(client)] == ["active"]
    clock.set(at("2025-03-20"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", verification="refuted"))
    [plan] = plans(client)
    assert plan["status"] == "revoked"
    assert {t["status"] for t in tasks(client)} == {"cancelled"}
    assert all(t["statusReason"]["text"] for t in tasks(client))


def test_apply_returns_the_plan_and_stores_nothing(client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", verification="provisional"))
    before = client.get("/fhir/_history?_count=1").get_json()["total"]
    for response in (client.get("/fhir/PlanDefinition/toh-follow-up-protocol/$apply?subject=Patient/p1"),
                     client.post("/fhir/PlanDefinition/toh-follow-up-protocol/$apply", headers=FHIR,
                                 data=json.dumps({"resourceType": "Parameters", "parameter": [
                                     {"name": "subject", "valueString": "Patient/p1"}]}))):
        assert response.status_code == 200, response.get_json()
        plan = response.get_json()
        assert plan["resourceType"] == "CarePlan" and plan["subject"] == {"reference": "Patient/p1"}
        assert plan["addresses"] == [{"reference": "Condition/hip"}] and plan["period"]["start"] == "2025-03-01"
        contained = {t["id"]: t for t in plan["contained"]}
        assert set(contained) == {"review-6w", "review-3m", "review-6m", "review-9m", "review-12m", "repeat-mri"}
        assert contained["review-3m"]["restriction"]["period"]["end"] == "2025-06-01"
        assert {a["reference"]["reference"] for a in plan["activity"] if "reference" in a} == \
            {f"#{i}" for i in contained}
    assert client.get("/fhir/_history?_count=1").get_json()["total"] == before
    assert plans(client) == []
    missing = client.get("/fhir/PlanDefinition/toh-follow-up-protocol/$apply")
    assert missing.status_code == 400 and missing.get_json()["resourceType"] == "OperationOutcome"
    unknown = client.get("/fhir/PlanDefinition/toh-follow-up-protocol/$apply?subject=Patient/nobody")
    assert unknown.status_code == 404
    wrong = client.get("/fhir/PlanDefinition/toh-follow-up-protocol/$apply?subject=Condition/hip")
    assert wrong.status_code == 400


def test_time_based_flags_appear_without_any_write(app, client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    """The issue's report: TOH from 2025-03-01, nothing sent afterwards."""
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", verification=None))
    run_sweep(app, clock, "2026-06-01")
    assert ("delayed-resolution", "2026-03-01") in active_flags(client)
    run_sweep(app, clock, "2027-04-01")
    assert {("delayed-resolution", "2026-03-01"), ("failure-to-resolve", "2027-03-01")} <= set(active_flags(client))


def test_a_patient_through_24_months_by_the_clock(app, client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    hip = lambda action: by_action(client)[f"{action}@Condition/hip"]  # noqa: E731

    run_sweep(app, clock, "2025-04-04")          # 6-week review: window 2025-04-12, ready 7 days before
    assert hip("review-6w")["status"] == "requested"
    run_sweep(app, clock, "2025-04-05")
    assert hip("review-6w")["status"] == "ready"
    # The clinician completes the 6-week review and moves the 3-month one to 2025-06-20.
    clock.set(at("2025-04-14"))
    put(client, {**hip("review-6w"), "status": "completed"})
    moved = hip("review-3m")
    moved["restriction"]["period"] = {"start": "2025-06-20", "end": "2025-06-20"}
    put(client, moved)
    run_sweep(app, clock, "2025-05-30")          # the old ready day (05-25) has passed
    assert hip("review-3m")["status"] == "requested"
    run_sweep(app, clock, "2025-06-13")
    assert hip("review-3m")["status"] == "ready"
    assert hip("review-3m")["restriction"]["period"]["end"] == "2025-06-20"
    assert hip("review-6w")["status"] == "completed"
    put(client, {**hip("review-3m"), "status": "completed"})

    # Migration to the right knee at month 5: a plan for that joint.
    clock.set(at("2025-08-03"))
    put(client, condition("knee", KNEE, RIGHT, "2025-08-01"))
    assert sorted(p["addresses"][0]["reference"] for p in plans(client)) == ["Condition/hip", "Condition/knee"]
    assert by_action(client)["review-6w@Condition/knee"]["restriction"]["period"]["end"] == "2025-09-12"

    # The hip's 6-month review is not done: overdue from 2025-09-16 (window end + 14 days + 1).
    run_sweep(app, clock, "2025-09-15")
    assert hip("review-6m")["status"] == "ready"
    assert ("follow-up-overdue", "2025-09-16") not in active_flags(client)
    run_sweep(app, clock, "2025-09-16")
    assert ("follow-up-overdue", "2025-09-16") in active_flags(client)
    clock.set(at("2025-09-20"))
    put(client, {**hip("review-6m"), "status": "completed"})
    assert ("follow-up-overdue", "2025-09-16") not in active_flags(client)

    # The knee resolves at month 10: its plan completes, what is left is cancelled.
    clock.set(at("2025-12-20"))
    put(client, condition("knee", KNEE, RIGHT, "2025-08-01", clinical="resolved", abatement="2025-12-15"))
    knee_plan = next(p for p in plans(client) if p["addresses"][0]["reference"] == "Condition/knee")
    assert knee_plan["status"] == "completed"
    knee = {k: t for k, t in by_action(client).items() if k.endswith("@Condition/knee")}
    assert {t["status"] for t in knee.values()} <= {"cancelled", "ready"} and "cancelled" in \
        {t["status"] for t in knee.values()}
    assert all(t["status"] != "requested" for t in knee.values())

    # The hip is unresolved at 12 months: the 18- and 24-month reviews are added then, not before.
    run_sweep(app, clock, "2026-02-28")
    assert "review-18m@Condition/hip" not in by_action(client)
    run_sweep(app, clock, "2026-03-01")
    assert hip("review-18m")["restriction"]["period"]["end"] == "2026-09-01"
    assert hip("review-24m")["restriction"]["period"]["end"] == "2027-03-01"
    assert ("delayed-resolution", "2026-03-01") in active_flags(client)

    # Resolution at month 20: the plan completes, open Tasks are cancelled, done ones stay done.
    clock.set(at("2026-11-10"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", clinical="resolved", abatement="2026-11-01"))
    hip_plan = next(p for p in plans(client) if p["addresses"][0]["reference"] == "Condition/hip")
    assert hip_plan["status"] == "completed" and hip_plan["period"]["end"] == "2026-11-01"
    assert hip("review-6w")["status"] == "completed" and hip("review-6m")["status"] == "completed"
    assert hip("review-24m")["status"] == "cancelled"
    assert hip("review-3m")["restriction"]["period"]["end"] == "2025-06-20"
    run_sweep(app, clock, "2027-06-01")
    assert all(t["status"] in ("completed", "cancelled", "ready") for t in tasks(client))
    assert not [f for f in active_flags(client) if f[0] == "follow-up-overdue" and f[1] > "2026-11-10"]


def test_a_plan_put_on_hold_by_a_clinician_is_left_alone(app, client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-05"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    [plan] = plans(client)
    put(client, {**plan, "status": "on-hold"})
    run_sweep(app, clock, "2025-05-01")
    assert {t["status"] for t in tasks(client)} == {"requested"}      # the schedule is paused
    clock.set(at("2025-11-10"))
    put(client, condition("hip", HIP, LEFT, "2025-03-01", clinical="resolved", abatement="2025-11-01"))
    [plan] = plans(client)
    assert plan["status"] == "on-hold"                                 # not completed over the hold
    assert {t["status"] for t in tasks(client)} == {"requested"}


def test_after_40_days_down_one_sweep_catches_up_in_order_once(app, client, clock, patient) -> None:  # type: ignore[no-untyped-def]
    clock.set(at("2025-03-25"))
    put(client, {"resourceType": "Patient", "id": "p2"})
    put(client, condition("hip", HIP, LEFT, "2025-03-01"))
    put(client, condition("hip2", HIP, RIGHT, "2025-03-20", patient="p2"))
    run_sweep(app, clock, "2025-04-01")                    # the last sweep before the outage
    assert {t["status"] for t in tasks(client) + tasks(client, "p2")} == {"requested"}
    lines = run_sweep(app, clock, "2025-05-11")            # 40 days later
    # Fell due in the outage: p1's 6-week review (2025-04-12) ready on 04-05 and overdue from
    # 04-27; p2's (2025-05-01) ready on 04-24, overdue only from 05-16.
    first = by_action(client)["review-6w@Condition/hip"]
    second = by_action(client, "p2")["review-6w@Condition/hip2"]
    assert first["status"] == "ready" and second["status"] == "ready"
    assert active_flags(client) == [("follow-up-overdue", "2025-04-27")] and active_flags(client, "p2") == []
    actions = [line for line in lines if not line.startswith("sweep as of")]
    assert len(actions) == 3
    assert actions == sorted(actions)                          # due order
    assert [a.split(" ", 1)[0][:10] for a in actions] == ["2025-04-05", "2025-04-24", "2025-04-27"]
    assert f"Task/{first['id']} ready" in actions[0] and f"Task/{second['id']} ready" in actions[1]
    assert "overdue since 2025-04-27" in actions[2]
    for task in (first, second):
        history = client.get(f"/fhir/Task/{task['id']}/_history").get_json()
        assert [e["resource"]["status"] for e in history["entry"]] == ["ready", "requested"]   # once
    assert run_sweep(app, clock, "2025-05-11")[:-1] == []      # nothing twice
    with app.extensions["toh"].database.unit_of_work(write=False) as uow:
        from service.store import FollowUps
        rows = FollowUps(uow.conn, uow.database.dialect).reminders_about([f"Task/{first['id']}",
                                                                          f"Task/{second['id']}"])
    assert [(r["kind"], r["about"], r["due_on"]) for r in rows] == [
        ("follow-up-due", f"Task/{first['id']}", "2025-04-05"),
        ("follow-up-due", f"Task/{second['id']}", "2025-04-24"),
        ("follow-up-overdue", f"Task/{first['id']}", "2025-04-27")]


def test_a_clinic_names_its_own_plan_definition_in_configuration(database_url, clock) -> None:  # type: ignore[no-untyped-def]
    from service import create_app
    custom = "https://clinic.example/PlanDefinition/toh-short"
    app = create_app({"database_url": database_url, "base_url": "http://toh.test/fhir",
                      "followup_plan": custom}, clock=clock)
    client = app.test_client()
    try:
        clock.set(at("2025-03-05"))
        put(client, {"resourceType": "Patient", "id": "p1"})
        put(client, condition("early", HIP, LEFT, "2025-03-01"))      # not stored yet: the write stands, no plan
        assert plans(client) == []
        put(client, {"resourceType": "PlanDefinition", "id": "toh-short", "url": custom, "status": "active",
                     "action": [{"id": "review-2w", "title": "Review at 2 weeks",
                                 "code": [{"coding": [{"system": TOH_CODES, "code": "follow-up-review"}]}],
                                 "timingDuration": {"value": 14, "unit": "days", "system": "http://unitsofmeasure.org",
                                                    "code": "d"}}]})
        put(client, {**condition("early", HIP, LEFT, "2025-03-01"), "note": [{"text": "seen again"}]})
        [plan] = plans(client)
        assert plan["instantiatesCanonical"] == [custom]
        assert [(t["instantiatesUri"], t["restriction"]["period"]["end"]) for t in tasks(client)] == \
            [(f"{custom}#review-2w", "2025-03-15")]
    finally:
        app.extensions["toh"].database.dispose()
