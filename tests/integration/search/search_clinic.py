"""A small clinic's data for the search tests, and a Clinic: the Database (with the search
engine's write hook), the engine and the clock; `clinic.ids("Observation?code=...")` runs a
search and returns the matching ids."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl


from service.clock import FixedClock
from service.store import Database
from service.store.search import SearchEngine, SearchResult

BASE = "http://toh.test/fhir"
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
SNOMED, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
TOH = "https://fhir.toh-service.org/CodeSystem/toh"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROTOCOL = "https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol"


def cc(system: str | None, code: str, display: str | None = None, text: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system
    if display:
        coding["display"] = display
    out: dict[str, Any] = {"coding": [coding]}
    if text:
        out["text"] = text
    return out


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


CLINIC: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "pat-anna", "gender": "female", "birthDate": "1980-03-04",
     "meta": {"tag": [{"system": "http://toh/tags", "code": "cohort-a"}], "profile": ["http://toh/SD/patient"]},
     "name": [{"family": "Müller", "given": ["Ánna"]}], "identifier": [{"system": "urn:mrn", "value": "M1"}]},
    {"resourceType": "Patient", "id": "pat-bob", "gender": "male", "birthDate": "1975",
     "name": [{"family": "Muller", "given": ["Bob"]}], "identifier": [{"system": "urn:mrn", "value": "M2"}]},
    {"resourceType": "Patient", "id": "pat-zoe", "gender": "female", "birthDate": "1990-12-31",
     "name": [{"family": "Ølsen", "given": ["Zoë"]}], "identifier": [{"system": "urn:other", "value": "M1"}]},
    {"resourceType": "Practitioner", "id": "dr-x", "name": [{"family": "House"}]},
    {"resourceType": "Condition", "id": "cond-toh-left", "subject": ref("Patient/pat-anna"),
     "code": cc(SNOMED, "22222", "Transient osteoporosis of hip", "TOH left"),
     "clinicalStatus": cc(CLINICAL, "active"), "verificationStatus": cc(VERIFICATION, "confirmed"),
     "category": [cc(COND_CATEGORY, "encounter-diagnosis")], "bodySite": [cc(SNOMED, "287679003", "Left hip")],
     "onsetDateTime": "2026-02-10", "abatementDateTime": "2026-06", "recordedDate": "2026-02-11T10:15:00+01:00"},
    {"resourceType": "Condition", "id": "cond-toh-right", "subject": ref("Patient/pat-bob"),
     "code": cc("http://hl7.org/fhir/sid/icd-10", "M81.8"), "clinicalStatus": cc(CLINICAL, "resolved"),
     "category": [cc(COND_CATEGORY, "problem-list-item")], "bodySite": [cc(SNOMED, "287579007", "Right hip")],
     "onsetPeriod": {"start": "2025-11-01", "end": "2026-01-15"}, "recordedDate": "2025-11-02"},
    {"resourceType": "Condition", "id": "cond-pain", "subject": ref("Patient/pat-anna"),
     "code": {"text": "Hip pain"}, "clinicalStatus": cc(CLINICAL, "active"), "onsetDateTime": "2026"},
    {"resourceType": "Observation", "id": "obs-mri", "status": "preliminary", "subject": ref("Patient/pat-anna"),
     "category": [cc(OBS_CATEGORY, "imaging")], "code": cc(LOINC, "24590-2", "MR hip"),
     "effectivePeriod": {"start": "2026-02-01", "end": "2026-02-03"},
     "valueCodeableConcept": cc(SNOMED, "125112009", "Bone marrow edema")},
    {"resourceType": "Observation", "id": "obs-pain", "status": "final", "subject": ref("Patient/pat-anna"),
     "category": [cc(OBS_CATEGORY, "survey")], "code": cc(LOINC, "72514-3", "Pain severity"),
     "effectiveDateTime": "2026-02-10T10:00:00+02:00",
     "valueQuantity": {"value": 7, "system": UCUM, "code": "{score}"},
     "focus": [ref("Condition/cond-toh-left")], "derivedFrom": [ref("Observation/obs-mri")]},
    {"resourceType": "Observation", "id": "obs-weight", "status": "final", "subject": ref(f"{BASE}/Patient/pat-bob"),
     "category": [cc(OBS_CATEGORY, "vital-signs")], "code": cc(LOINC, "29463-7", "Body weight"),
     "effectiveDateTime": "2026-03-01", "valueQuantity": {"value": 70.5, "unit": "kg", "system": UCUM, "code": "kg"}},
    {"resourceType": "Observation", "id": "obs-group", "status": "final", "subject": ref("Group/grp-1"),
     "code": cc(LOINC, "29463-7"), "effectiveDateTime": "2026-03-02",
     "valueQuantity": {"value": 5400, "unit": "g", "system": UCUM, "code": "g"}},
    {"resourceType": "CarePlan", "id": "cp-old", "status": "completed", "intent": "plan",
     "subject": ref("Patient/pat-anna"), "period": {"start": "2025-01", "end": "2025-06"}},
    {"resourceType": "CarePlan", "id": "cp-toh", "status": "active", "intent": "plan",
     "subject": ref("Patient/pat-anna"), "category": [cc(TOH, "toh-follow-up")],
     "period": {"start": "2026-02-10", "end": "2026-08-10"},
     "activity": [{"detail": {"status": "scheduled", "scheduledPeriod": {"start": "2026-03-10", "end": "2026-03-10"}}}],
     "addresses": [ref("Condition/cond-toh-left")], "basedOn": [ref("CarePlan/cp-old")],
     "instantiatesCanonical": [PROTOCOL]},
    {"resourceType": "MedicationRequest", "id": "med-bisph", "status": "active", "intent": "order",
     "subject": ref("Patient/pat-anna"), "authoredOn": "2026-02-12",
     "medicationCodeableConcept": cc("http://www.whocc.no/atc", "M05BA04", "alendronic acid")},
    {"resourceType": "Flag", "id": "flag-avn", "status": "active", "code": cc(TOH, "avn-risk"),
     "subject": ref("Patient/pat-anna"), "period": {"start": "2026-02-15"}},
    {"resourceType": "Task", "id": "task-fu", "status": "requested", "intent": "order",
     "code": cc(TOH, "follow-up-mri"), "for": ref("Patient/pat-anna"), "focus": ref("Condition/cond-toh-left"),
     "basedOn": [ref("CarePlan/cp-toh")], "owner": ref("Practitioner/dr-x"),
     "executionPeriod": {"start": "2026-04-01", "end": "2026-04-02"}},
    {"resourceType": "Communication", "id": "comm-1", "status": "completed", "subject": ref("Patient/pat-anna"),
     "basedOn": [ref("CarePlan/cp-toh")], "sent": "2026-02-20"},
    {"resourceType": "RiskAssessment", "id": "risk-1", "status": "final", "subject": ref("Patient/pat-anna"),
     "prediction": [{"probabilityDecimal": 0.25}]},
    {"resourceType": "Subscription", "id": "sub-1", "status": "active", "reason": "flags",
     "criteria": "Flag?status=active", "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.org/hook"}},
]


class Clinic:
    """The stored clinic and a way to search it."""

    def __init__(self, database: Database, engine: SearchEngine, clock: FixedClock) -> None:
        self.database, self.engine, self.clock = database, engine, clock

    def store(self, resource: dict[str, Any]) -> None:
        with self.database.unit_of_work() as uow:
            uow.repo.update(resource["resourceType"], resource["id"], resource)
            uow.commit()

    def search(self, url: str) -> SearchResult:
        res_type, _, qs = url.partition("?")
        query = self.engine.parse(res_type or None, parse_qsl(qs, keep_blank_values=True), base_urls=(BASE,))
        with self.database.unit_of_work(write=False) as uow:
            return self.engine.search(uow.conn, query, now=self.clock.now())

    def ids(self, url: str) -> set[str]:
        result = self.search(url)
        assert not result.issues, [i.diagnostics for i in result.issues]
        return {m.res_id for m in result.matches}


def open_clinic(url: str) -> Clinic:
    clock = FixedClock(START)
    database = Database(url, clock=clock)
    database.migrate()
    engine = SearchEngine(base_urls=[BASE], default_count=50, max_count=200, clock=clock)
    engine.init_database(database)
    return Clinic(database, engine, clock)
