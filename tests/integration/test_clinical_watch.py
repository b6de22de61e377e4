"""README: "every write of a patient's Condition, Observation, MedicationRequest or CarePlan
re-evaluates the patient in the same transaction and keeps their Flags in line".

Each case stores the other half of a bisphosphonate-in-pregnancy finding first, then writes one
resource of the type under test: the Flag must be there as soon as that write returns, and go
inactive when a later write of the same type takes the finding away (TOH.md: a bisphosphonate
is contra-indicated in pregnancy; the guide's ValueSets name the codes)."""
from __future__ import annotations

import json
from typing import Any

import pytest

FHIR = {"Content-Type": "application/fhir+json"}
SNOMED, LOINC, ATC = "http://snomed.info/sct", "http://loinc.org", "http://www.whocc.no/atc"
PATIENT = {"reference": "Patient/p1"}
PREGNANT_OBSERVATION = {      # LOINC 82810-3 pregnancy status = SNOMED 77386006 pregnant
    "resourceType": "Observation", "id": "preg", "status": "final", "subject": PATIENT,
    "code": {"coding": [{"system": LOINC, "code": "82810-3"}]}, "effectiveDateTime": "2026-01-02",
    "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006"}]}}
PREGNANT_CONDITION = {
    "resourceType": "Condition", "id": "preg", "subject": PATIENT, "onsetDateTime": "2026-01-02",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                   "code": "active"}]},
    "code": {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]}}
ALENDRONATE = {"coding": [{"system": ATC, "code": "M05BA04", "display": "alendronic acid"}]}
ORDER = {"resourceType": "MedicationRequest", "id": "rx", "status": "active", "intent": "order",
         "subject": PATIENT, "authoredOn": "2026-01-03", "medicationCodeableConcept": ALENDRONATE}
PLAN = {"resourceType": "CarePlan", "id": "plan", "status": "active", "intent": "plan", "subject": PATIENT,
        "period": {"start": "2026-01-03"},
        "activity": [{"detail": {"kind": "MedicationRequest", "status": "scheduled",
                                 "productCodeableConcept": ALENDRONATE}}]}

# (what is stored first, the write under test, the same resource changed so the finding is gone)
CASES = {
    "CarePlan": (PREGNANT_OBSERVATION, PLAN, PLAN | {"status": "revoked"}),
    "MedicationRequest": (PREGNANT_OBSERVATION, ORDER, ORDER | {"status": "cancelled"}),
    "Observation": (ORDER, PREGNANT_OBSERVATION, PREGNANT_OBSERVATION | {"status": "entered-in-error"}),
    "Condition": (ORDER, PREGNANT_CONDITION, PREGNANT_CONDITION | {"verificationStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]}}),
}


def put(client, resource: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                          headers=FHIR)
    assert response.status_code in (200, 201), response.get_json()


def flags(client, status: str) -> list[str]:  # type: ignore[no-untyped-def]
    bundle = client.get(f"/fhir/Flag?patient=Patient/p1&status={status}").get_json()
    return sorted(e["resource"]["code"]["coding"][0]["code"] for e in bundle.get("entry", [])
                  if e["search"]["mode"] == "match")


@pytest.mark.parametrize("written", list(CASES))
def test_a_write_of_each_clinical_type_re_evaluates_the_patient(client, written: str) -> None:  # type: ignore[no-untyped-def]
    first, trigger, undone = CASES[written]
    put(client, {"resourceType": "Patient", "id": "p1", "gender": "female"})
    put(client, first)
    assert flags(client, "active") == []
    put(client, trigger)
    assert flags(client, "active") == ["bisphosphonate-in-pregnancy"]
    put(client, undone)
    assert flags(client, "active") == []
    assert flags(client, "inactive") == ["bisphosphonate-in-pregnancy"]


def test_deleting_a_care_plan_re_evaluates_the_patient(client) -> None:  # type: ignore[no-untyped-def]
    put(client, {"resourceType": "Patient", "id": "p1", "gender": "female"})
    put(client, PREGNANT_OBSERVATION)
    put(client, PLAN)
    assert flags(client, "active") == ["bisphosphonate-in-pregnancy"]
    assert client.delete("/fhir/CarePlan/plan").status_code in (200, 204)
    assert flags(client, "active") == []
