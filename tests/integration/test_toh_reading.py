"""Data as EHRs send it, over REST (issue 9): a DiagnosticReport's conclusion re-assesses the
patient, and the assessment lists, as `issue` parts, what it could not read."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from service.fhir.canonical import CONDITION_CLINICAL, EXT_LATERALITY, LOINC, SNOMED, TOH_CODES

FHIR = {"Content-Type": "application/fhir+json"}
HIP, LEFT = "24136001", "7771000"


def toh_condition(cid: str, joint: str, side: str, text: str, onset: str, **extra: Any) -> dict[str, Any]:
    site = {"coding": [{"system": SNOMED, "code": joint}], "text": text,
            "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": side}]}}]}
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [site], "onsetDateTime": onset, **extra}


def write(client, clock, when: str, resource: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    """PUT the resource with the clock set to noon UTC of `when`."""
    clock.set(datetime.fromisoformat(when).replace(hour=12, tzinfo=timezone.utc))
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          headers=FHIR)
    assert response.status_code in (200, 201), response.get_json()


def active_flags(client) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    bundle = client.get("/fhir/Flag?patient=Patient/p1&status=active&_count=100").get_json()
    return sorted((e["resource"]["code"]["coding"][0]["code"], e["resource"]["period"]["start"])
                  for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


def dr(conclusion: str) -> dict[str, Any]:
    return {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2025-02-01",
            "code": {"coding": [{"system": LOINC, "code": "36020-6", "display": "MR Hip - left"}]},
            "conclusion": conclusion}


def test_a_diagnostic_report_triggers_a_reassessment(client, clock) -> None:  # type: ignore[no-untyped-def]
    write(client, clock, "2025-01-10", {"resourceType": "Patient", "id": "p1"})
    write(client, clock, "2025-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06"))
    write(client, clock, "2025-02-01", dr("Diffuse marrow oedema of the left femoral head. Double line sign on T2."))
    assert active_flags(client) == [("avn-features", "2025-02-01")]
    write(client, clock, "2025-02-02", dr("Diffuse marrow oedema of the left femoral head. No double line sign."))
    assert active_flags(client) == []


def test_the_assessment_lists_what_it_could_not_read(client, clock) -> None:  # type: ignore[no-untyped-def]
    write(client, clock, "2025-01-10", {"resourceType": "Patient", "id": "p1"})
    write(client, clock, "2025-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06"))
    write(client, clock, "2025-02-01", {
        "resourceType": "Observation", "id": "dls", "status": "final", "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-02-01", "code": {"text": "Double-line sign"}, "bodySite": {"text": "left hip"},
        "valueCodeableConcept": {"text": "see report"}})
    params = client.get("/fhir/Patient/p1/$toh-assessment?asOf=2025-03-01").get_json()["parameter"]
    assert not [p for p in params if p["name"] == "flag"]
    issues = [{part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in p["part"]}
              for p in params if p["name"] == "issue"]
    assert {"code": "value-unknown", "severity": "warning", "resource": {"reference": "Observation/dls"}} \
        .items() <= next(i for i in issues if i["code"] == "value-unknown").items()
    assert active_flags(client) == []


def test_a_reactivated_problem_is_a_recurrence_dated_from_its_history(client, clock) -> None:  # type: ignore[no-untyped-def]
    """Resolved after 7 months, set to `recurrence` at month 16 (no abatement): a recurrence from
    the day of the change, not an episode 24 months unresolved (issue 9, fault 6)."""
    write(client, clock, "2024-01-10", {"resourceType": "Patient", "id": "p1"})
    write(client, clock, "2024-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2024-01-06"))
    resolved = toh_condition("hip", HIP, LEFT, "Left hip", "2024-01-06", abatementDateTime="2024-08-06")
    resolved["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "resolved"}]}
    write(client, clock, "2024-08-06", resolved)
    recurrence = toh_condition("hip", HIP, LEFT, "Left hip", "2024-01-06")
    recurrence["clinicalStatus"] = {"coding": [{"system": CONDITION_CLINICAL, "code": "recurrence"}]}
    write(client, clock, "2025-05-02", recurrence)
    clock.set(datetime(2026, 1, 10, 12, tzinfo=timezone.utc))
    assert active_flags(client) == [("recurrence", "2025-05-02")]
    params = client.get("/fhir/Patient/p1/$toh-assessment?asOf=2026-01-10").get_json()["parameter"]
    codes = sorted(next(p["valueCoding"]["code"] for p in f["part"] if p["name"] == "code")
                   for f in params if f["name"] == "flag")
    assert codes == ["recurrence"]


def test_a_service_request_for_full_weight_bearing_raises_the_flag(client, clock) -> None:  # type: ignore[no-untyped-def]
    write(client, clock, "2025-01-10", {"resourceType": "Patient", "id": "p1"})
    write(client, clock, "2025-01-10", toh_condition("hip", HIP, LEFT, "Left hip", "2025-01-06"))
    write(client, clock, "2025-02-01", {
        "resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "authoredOn": "2025-02-01", "code": {"text": "Physiotherapy"},
        "orderDetail": [{"text": "Full weight bearing"}]})
    assert active_flags(client) == [("full-weight-bearing-active-oedema", "2025-02-01")]
