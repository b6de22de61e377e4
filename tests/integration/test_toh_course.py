"""A two-year TOH course written through the REST API (Flask test client, SQLite and PostgreSQL)
as it happens: the test clock moves with it, which a real server's clock cannot, so this lives in
integration/, not e2e/.
Left hip at month 0, migration to the right knee at month 5, hip resolved at month 9, knee
still active at month 18. The assessment is checked at several dates, and so are the Flags
the service stored on its own."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from service.fhir.canonical import (CONDITION_CLINICAL, EXT_LATERALITY, LOINC, OBSERVATION_CATEGORY, SNOMED,
                                    TOH_CODES)

FHIR = {"Content-Type": "application/fhir+json"}
HIP, KNEE, LEFT, RIGHT = "24136001", "49076000", "7771000", "24028007"


def body_site(joint: str, side: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": SNOMED, "code": joint}], "text": text,
            "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": side}]}}]}


def toh_condition(cid: str, joint: str, side: str, text: str, onset: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [body_site(joint, side, text)], "onsetDateTime": onset, **extra}


def mri(oid: str, joint: str, side: str, text: str, when: str, **findings: bool) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/p1"},
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
            "code": {"text": f"MRI {text}"}, "effectiveDateTime": when, "bodySite": body_site(joint, side, text),
            "component": [{"code": {"coding": [{"system": TOH_CODES, "code": code.replace("_", "-")}]},
                           "valueBoolean": present} for code, present in findings.items()]}


def pain(oid: str, when: str, score: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": LOINC, "code": "72514-3"}]}, "effectiveDateTime": when,
            "valueQuantity": {"value": score, "unit": "{score}"}}


def write(client, clock, when: str, resource: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    clock.set(datetime.fromisoformat(when).replace(hour=12, tzinfo=timezone.utc))
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          headers=FHIR)
    assert response.status_code in (200, 201), response.get_json()


def assessment(client, as_of: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.get(f"/fhir/Patient/p1/$toh-assessment?asOf={as_of}")
    assert response.status_code == 200, response.get_json()
    params = response.get_json()
    assert params["resourceType"] == "Parameters"
    episodes = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in e["part"]
                 if p["name"] != "evidence"} for e in params["parameter"] if e["name"] == "episode"]
    flags = sorted(next(p["valueCoding"]["code"] for p in f["part"] if p["name"] == "code")
                   for f in params["parameter"] if f["name"] == "flag")
    return {"episodes": sorted(episodes, key=lambda e: e["onset"]), "flags": flags}


def active_flags(client) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    bundle = client.get("/fhir/Flag?patient=Patient/p1&status=active&_count=100").get_json()
    return sorted((e["resource"]["code"]["coding"][0]["code"], e["resource"]["period"]["start"])
                  for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def test_two_year_course(client, clock) -> None:  # type: ignore[no-untyped-def]
    write(client, clock, "2025-01-10", {"resourceType": "Patient", "id": "p1", "gender": "male",
                                         "birthDate": "1979-04-02"})
    write(client, clock, "2025-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06"))
    write(client, clock, "2025-01-12", mri("mri-hip", HIP, LEFT, "Left hip", "2025-01-12",
                                           bone_marrow_oedema_diffuse=True, focal_subchondral_lesion=False,
                                           double_line_sign=False, crescent_sign=False))
    for n, (when, score) in enumerate([("2025-01-12", 8), ("2025-03-01", 6), ("2025-05-01", 4)]):
        write(client, clock, when, pain(f"pain-{n}", when, score))
    assert active_flags(client) == []

    write(client, clock, "2025-06-10", toh_condition("knee", KNEE, RIGHT, "Right knee", "2025-06-06"))
    write(client, clock, "2025-06-12", mri("mri-knee", KNEE, RIGHT, "Right knee", "2025-06-12",
                                           bone_marrow_oedema_diffuse=True))
    assert active_flags(client) == [("migration", "2025-06-06")]

    resolved = toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06", abatementDateTime="2025-10-01")
    resolved["clinicalStatus"]["coding"][0]["code"] = "resolved"
    write(client, clock, "2025-10-06", resolved)
    write(client, clock, "2026-07-10", pain("pain-18m", "2026-07-10", 3))  # month 18: knee still active

    early = assessment(client, "2025-03-01")
    assert [(e["joint"], e["side"], e["status"]) for e in early["episodes"]] == [("hip", "left", "active")]
    assert early["flags"] == []

    migrated = assessment(client, "2025-07-01")
    assert [(e["joint"], e["side"], e["status"]) for e in migrated["episodes"]] == [
        ("hip", "left", "active"), ("knee", "right", "active")]
    assert migrated["flags"] == ["migration"]

    after_hip = assessment(client, "2025-11-01")
    hip, knee = after_hip["episodes"]
    assert hip["status"] == "resolved" and hip["resolutionDate"] == "2025-10-01"
    assert knee["status"] == "active" and knee["monthsSinceOnset"] == 4
    assert after_hip["flags"] == ["migration"]

    month18 = assessment(client, "2026-07-10")
    assert month18["episodes"][1]["monthsSinceOnset"] == 13
    assert month18["flags"] == ["delayed-resolution", "migration"]
    # before the data existed clinically, nothing holds
    assert assessment(client, "2024-12-01") == {"episodes": [], "flags": []}

    assert active_flags(client) == [("delayed-resolution", "2026-06-06"), ("migration", "2025-06-06")]
    # replaying the same data raises nothing twice
    write(client, clock, "2026-07-11", pain("pain-18m", "2026-07-10", 3))
    all_flags = client.get("/fhir/Flag?patient=Patient/p1&_count=100").get_json()
    assert sorted(e["resource"]["code"]["coding"][0]["code"] for e in all_flags["entry"]) == [
        "delayed-resolution", "migration"]


def test_flag_goes_inactive_when_the_diagnosis_is_corrected(client, clock) -> None:  # type: ignore[no-untyped-def]
    write(client, clock, "2025-01-10", {"resourceType": "Patient", "id": "p1"})
    write(client, clock, "2025-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06"))
    write(client, clock, "2025-06-10", toh_condition("knee", KNEE, RIGHT, "Right knee", "2025-06-06"))
    assert active_flags(client) == [("migration", "2025-06-06")]
    refuted = toh_condition("knee", KNEE, RIGHT, "Right knee", "2025-06-06", verificationStatus={
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]})
    write(client, clock, "2025-06-20", refuted)
    assert active_flags(client) == []
    flag = client.get("/fhir/Flag?patient=Patient/p1").get_json()["entry"][0]["resource"]
    assert flag["status"] == "inactive" and flag["period"]["end"] == "2025-06-20"


def test_assessment_errors(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/fhir/Patient/nobody/$toh-assessment").status_code == 404
    client.put("/fhir/Patient/p1", data=json.dumps({"resourceType": "Patient", "id": "p1"}), headers=FHIR)
    bad = client.get("/fhir/Patient/p1/$toh-assessment?asOf=yesterday")
    assert bad.status_code == 400 and bad.get_json()["resourceType"] == "OperationOutcome"
    today = client.get("/fhir/Patient/p1/$toh-assessment").get_json()
    assert today["parameter"][0] == {"name": "asOf", "valueDate": "2026-01-05"}  # the test clock's date


def test_bisphosphonate_by_medication_reference_in_pregnancy(client, clock) -> None:  # type: ignore[no-untyped-def]
    """The order names the drug through a Medication resource, not a code of its own."""
    write(client, clock, "2026-01-02", {"resourceType": "Patient", "id": "p1", "gender": "female"})
    write(client, clock, "2026-01-02", {
        "resourceType": "Observation", "id": "preg", "status": "final", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": "82810-3"}]}, "effectiveDateTime": "2026-01-02",
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006"}]}})
    write(client, clock, "2026-01-03", {"resourceType": "Medication", "id": "alendronate",
                                         "code": {"coding": [{"system": "http://www.whocc.no/atc",
                                                              "code": "M05BA04"}]}})
    write(client, clock, "2026-01-04", {
        "resourceType": "MedicationRequest", "id": "rx", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-01-04",
        "medicationReference": {"reference": "Medication/alendronate"}})
    assert [code for code, _ in active_flags(client)] == ["bisphosphonate-in-pregnancy"]
