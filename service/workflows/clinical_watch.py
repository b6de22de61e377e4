"""Re-evaluate a patient's TOH course whenever their clinical data changes, and keep the
patient's rule-raised Flags in line with the findings, in the writer's own transaction.

Runs as a before-commit step of the unit of work: every patient touched by the
transaction's writes is assessed once (a 100-entry bundle costs one evaluation per
patient, not a hundred), under a per-patient lock so two processes evaluating the same
patient at the same moment run one after the other and never raise the same Flag twice.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from typing import Any, Protocol

from sqlalchemy import Connection

from service.clinical import Assessment, FlagChanges, Terminology, assess, flag_resource, reconcile_flags
from service.fhir.canonical import FLAG_KEY_SYSTEM
from service.store import Change, Repository, UnitOfWork

# The resource types the rules read, and the search parameter that names their patient.
CLINICAL_TYPES = ("Condition", "Observation", "MedicationRequest", "CarePlan")


class IdFinder(Protocol):
    """Finds resource ids by FHIR search criteria (the search engine's find_ids)."""

    def __call__(self, conn: Connection, res_type: str, params: list[tuple[str, str]]) -> list[str]: ...


def patient_of(resource: dict[str, Any] | None) -> str | None:
    """The id of the Patient a clinical resource is about (subject or patient), if any."""
    if not resource:
        return None
    for element in ("subject", "patient"):
        reference = (resource.get(element) or {}).get("reference")
        if isinstance(reference, str):
            parts = reference.rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1]
    return None


def patients_touched(changes: Iterable[Change]) -> list[str]:
    """Patients whose clinical data one of the changes wrote, removed or moved away."""
    found: dict[str, None] = {}
    for change in changes:
        if change.res_type not in CLINICAL_TYPES:
            continue
        before = json.loads(change.previous.content) if change.previous and change.previous.content else None
        for patient in (patient_of(change.resource), patient_of(before)):
            if patient:
                found[patient] = None
    return list(found)


def _medication_references(resources: Iterable[dict[str, Any]]) -> Iterable[str]:
    """'Medication/id' references of MedicationRequests and CarePlan activity products."""
    for resource in resources:
        candidates = [resource.get("medicationReference")]
        candidates += [(activity.get("detail") or {}).get("productReference")
                       for activity in resource.get("activity") or ()]
        for ref in candidates:
            reference = (ref or {}).get("reference")
            if isinstance(reference, str) and reference.startswith("Medication/") and reference.count("/") == 1:
                yield reference


class PatientRecords:
    """Loads what the rules read about one patient, through the search index."""

    def __init__(self, find_ids: IdFinder) -> None:
        self.find_ids = find_ids

    def clinical_resources(self, repo: Repository, patient_id: str) -> list[dict[str, Any]]:
        """Every current Condition, Observation, MedicationRequest and CarePlan of the patient,
        and the Medications their orders and plans refer to."""
        found: list[dict[str, Any]] = []
        for res_type in CLINICAL_TYPES:
            ids = self.find_ids(repo.conn, res_type, [("patient", f"Patient/{patient_id}")])
            found.extend(stored.resource() for stored in repo.read_many(res_type, ids))
        medications = sorted({ref.split("/", 1)[1] for ref in _medication_references(found)})
        found.extend(stored.resource() for stored in repo.read_many("Medication", medications))
        return found

    def rule_flags(self, repo: Repository, patient_id: str) -> list[dict[str, Any]]:
        """The patient's Flags that the rules raised (they carry a rule key identifier)."""
        ids = self.find_ids(repo.conn, "Flag", [("patient", f"Patient/{patient_id}"),
                                                ("identifier", f"{FLAG_KEY_SYSTEM}|")])
        return [stored.resource() for stored in repo.read_many("Flag", ids)]


class ClinicalWatch:
    """Assesses patients and reconciles their Flags; registered as a before-commit step."""

    def __init__(self, records: PatientRecords, terminology: Terminology) -> None:
        self.records = records
        self.terminology = terminology

    def assessment(self, repo: Repository, patient_id: str, as_of: date) -> Assessment:
        """The patient's assessment on a clinical date, from what is stored now."""
        return assess(self.records.clinical_resources(repo, patient_id), as_of, self.terminology)

    def evaluate(self, repo: Repository, patient_id: str, as_of: date) -> FlagChanges:
        """Assess one patient and write the Flag changes; returns what was changed."""
        repo.lock(f"toh-assessment:{patient_id}")
        findings = self.assessment(repo, patient_id, as_of).flags
        changes = reconcile_flags(findings, self.records.rule_flags(repo, patient_id), as_of)
        for finding in changes.create:
            repo.create(flag_resource(finding, f"Patient/{patient_id}"))
        for flag in (*changes.update, *changes.deactivate):
            repo.update("Flag", flag["id"], flag)
        return changes

    def before_commit(self, uow: UnitOfWork) -> None:
        """Evaluate every patient this transaction touched, as of the clock's date."""
        patients = patients_touched(uow.changes)
        if not patients:
            return
        today = uow.clock.now().date()
        for patient_id in patients:
            self.evaluate(uow.repo, patient_id, today)
