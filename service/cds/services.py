"""The CDS services this server offers and the discovery document that lists them
(CDS Hooks 2.0, "Discovery", https://cds-hooks.hl7.org/2.0/#discovery).

    discovery() -> {"services": [{"hook", "title", "description", "id", "prefetch"}, ...]}

Every service asks for the same prefetch: the patient's resources the TOH rules read
(service.clinical.facts), one search per type, keyed as below. A key the EHR leaves out of a
request is read from `fhirServer` instead (CDS Hooks 2.0, "Prefetch Template").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATIENT_VIEW, ORDER_SIGN, ORDER_SELECT = "toh-patient-view", "toh-order-sign", "toh-order-select"


@dataclass(frozen=True)
class Template:
    """One prefetch template: `key` in the request's prefetch, the FHIR search it stands for
    (with the {{context.patientId}} token), and the resource types its answer holds."""

    key: str
    query: str
    types: tuple[str, ...]

    def for_patient(self, patient_id: str) -> str:
        """The search with the patient's id in place of the token (the id is a FHIR id)."""
        return self.query.replace("{{context.patientId}}", patient_id)


TEMPLATES: tuple[Template, ...] = (
    Template("conditions", "Condition?patient={{context.patientId}}", ("Condition",)),
    Template("observations", "Observation?patient={{context.patientId}}", ("Observation",)),
    Template("diagnosticReports", "DiagnosticReport?patient={{context.patientId}}", ("DiagnosticReport",)),
    Template("medicationRequests",
             "MedicationRequest?patient={{context.patientId}}&_include=MedicationRequest:medication",
             ("MedicationRequest", "Medication")),
    Template("carePlans", "CarePlan?patient={{context.patientId}}", ("CarePlan",)),
    Template("serviceRequests", "ServiceRequest?patient={{context.patientId}}", ("ServiceRequest",)),
)


@dataclass(frozen=True)
class CdsService:
    """One CDS service: its id (the URL segment), the hook it answers and what it does."""

    id: str
    hook: str
    title: str
    description: str

    def describe(self) -> dict[str, Any]:
        """Its entry in the discovery document."""
        return {"hook": self.hook, "title": self.title, "description": self.description, "id": self.id,
                "prefetch": {t.key: t.query for t in TEMPLATES}}


SERVICES: dict[str, CdsService] = {s.id: s for s in (
    CdsService(PATIENT_VIEW, "patient-view", "Transient osteoporosis of the hip: flags",
               "When a chart opens: one card per TOH flag that holds today (migration, recurrence, "
               "no resolution by 12 or 24 months, AVN features, insufficiency fracture, bisphosphonate in "
               "pregnancy or breastfeeding, full weight-bearing on active oedema), with its evidence."),
    CdsService(ORDER_SIGN, "order-sign", "Transient osteoporosis of the hip: order check",
               "Before orders are signed: a bisphosphonate while the patient is pregnant or breastfeeding, "
               "or full weight-bearing while bone marrow oedema is active, gives a critical card with the "
               "reason, the advice of the clinical texts and a suggestion."),
    CdsService(ORDER_SELECT, "order-select", "Transient osteoporosis of the hip: order check (selection)",
               "When orders are selected: the same check as toh-order-sign on the selected draft orders."),
)}


def discovery() -> dict[str, Any]:
    """The discovery document (GET {baseUrl}/cds-services)."""
    return {"services": [s.describe() for s in SERVICES.values()]}
