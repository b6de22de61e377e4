"""Re-evaluate a patient's TOH course whenever their clinical data changes, and keep the
patient's rule-raised Flags in line with the findings, in the writer's own transaction.

Runs as a before-commit step of the unit of work: every patient touched by the
transaction's writes is assessed once (a 100-entry bundle costs one evaluation per
patient, not a hundred), under a per-patient lock so two processes evaluating the same
patient at the same moment run one after the other and never raise the same Flag twice.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from service.clinical import Assessment, FlagChanges, Terminology, assess, flag_resource, reconcile_flags
from service.fhir.canonical import FLAG_KEY_SYSTEM
from service.fhir.references import parse_reference
from service.store import Change, Repository, UnitOfWork

# The resource types the rules read, and the search parameter that names their patient.
CLINICAL_TYPES = ("Condition", "Observation", "DiagnosticReport", "MedicationRequest", "CarePlan",
                  "ServiceRequest")
# Every type an assessment reads: the clinical types and the Medications their orders name.
ASSESSED_TYPES = frozenset({*CLINICAL_TYPES, "Medication"})


def patient_of(resource: dict[str, Any] | None, base_urls: tuple[str, ...] = ()) -> str | None:
    """The id of the local Patient a clinical resource is about (subject or patient), if any."""
    if not resource:
        return None
    for element in ("subject", "patient"):
        target = _local_target(resource.get(element), base_urls)
        if target and target[0] == "Patient":
            return target[1]
    return None


def _local_target(reference: Any, base_urls: tuple[str, ...]) -> tuple[str, str] | None:
    """(type, id) of a Reference to a resource on this server, else None."""
    text = (reference or {}).get("reference") if isinstance(reference, dict) else None
    ref = parse_reference(text, base_urls) if isinstance(text, str) else None
    if ref is None or ref.target_type is None or ref.target_id is None:
        return None
    return ref.target_type, ref.target_id


def patients_touched(changes: Iterable[Change], base_urls: tuple[str, ...] = ()) -> list[str]:
    """Patients whose clinical data one of the changes wrote, removed or moved away, sorted
    (so that two transactions lock the same patients in the same order)."""
    found: set[str] = set()
    for change in changes:
        if change.res_type not in CLINICAL_TYPES:
            continue
        before = json.loads(change.previous.content) if change.previous and change.previous.content else None
        for patient in (patient_of(change.resource, base_urls), patient_of(before, base_urls)):
            if patient:
                found.add(patient)
    return sorted(found)


def _medication_ids(resources: Iterable[dict[str, Any]], base_urls: tuple[str, ...]) -> set[str]:
    """Ids of the local Medications that MedicationRequests and CarePlan activities name."""
    found = set()
    for resource in resources:
        candidates = [resource.get("medicationReference")]
        candidates += [(activity.get("detail") or {}).get("productReference")
                       for activity in resource.get("activity") or ()]
        for reference in candidates:
            target = _local_target(reference, base_urls)
            if target and target[0] == "Medication":
                found.add(target[1])
    return found


def clinical_resources(repo: Repository, patient_id: str, base_urls: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every current Condition, Observation, DiagnosticReport, MedicationRequest, CarePlan and
    ServiceRequest of the patient (each type's `patient` search parameter: its subject), by type
    and in the order they were first stored, and the Medications their orders and plans name.

    Found through the search index; or, when this transaction created the Patient under an id
    the server assigned (a POST: no resource stored before it can name that id), in the
    transaction's own journal (_written_here; the same resources, without a query: issue 11)."""
    repo.flush()
    found = _written_here(repo.journal, patient_id, base_urls)
    if found is None:
        found = []
        for res_type in CLINICAL_TYPES:
            ids = repo.find_ids(res_type, [("patient", f"Patient/{patient_id}")])
            found.extend(stored.resource() for stored in repo.read_many(res_type, ids))
    medications = sorted(_medication_ids(found, base_urls))
    found.extend(stored.resource() for stored in repo.read_many("Medication", medications))
    return found


def _written_here(journal: Sequence[Change], patient_id: str,
                  base_urls: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """The patient's clinical resources as clinical_resources gives them, from the journal of a
    transaction that created Patient/patient_id by POST; None if it did not, or if it deleted a
    clinical resource (left to the index). The dicts are the journal's own: the rules read them
    and must not change them (they are pure functions; tests/integration/test_clinical_journal.py)."""
    if not any(c.res_type == "Patient" and c.res_id == patient_id and c.method == "POST" and c.previous is None
               for c in journal):
        return None
    current: dict[tuple[str, str], dict[str, Any]] = {}   # first written first, as rids are
    for change in journal:
        if change.res_type in CLINICAL_TYPES:
            if change.resource is None:
                return None
            current[change.res_type, change.res_id] = change.resource
    subject = ("Patient", patient_id)
    return [resource for res_type in CLINICAL_TYPES for (kind, _), resource in current.items()
            if kind == res_type and _local_target(resource.get("subject"), base_urls) == subject]


def needs_history(resource: dict[str, Any]) -> bool:
    """True for a resource whose earlier versions the rules read: a Condition set to
    recurrence / relapse (when was it resolved, when reactivated?) and a stopped
    MedicationRequest (when was it stopped?), once it has more than one version."""
    if (resource.get("meta") or {}).get("versionId") in (None, "1"):
        return False
    if resource.get("resourceType") == "Condition":
        status = {c.get("code") for c in (resource.get("clinicalStatus") or {}).get("coding") or ()}
        return bool(status & {"recurrence", "relapse"})
    return resource.get("resourceType") == "MedicationRequest" and resource.get("status") == "stopped"


def earlier_versions(repo: Repository, resources: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """"Type/id" -> the earlier (not deleted) versions of each resource that needs_history()."""
    found: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        if not needs_history(resource):
            continue
        versions, _ = repo.history(resource["resourceType"], resource["id"], count=100)
        found[f"{resource['resourceType']}/{resource['id']}"] = [
            v.resource() for v in versions if not v.deleted and v.content is not None]
    return found


def rule_flags(repo: Repository, patient_id: str) -> list[dict[str, Any]]:
    """The patient's Flags that the rules raised (they carry a rule key identifier)."""
    ids = repo.find_ids("Flag", [("patient", f"Patient/{patient_id}"), ("identifier", f"{FLAG_KEY_SYSTEM}|")])
    return [stored.resource() for stored in repo.read_many("Flag", ids)]


class ClinicalWatch:
    """Assesses patients and reconciles their Flags; registered as a before-commit step."""

    def __init__(self, terminology: Terminology, base_urls: tuple[str, ...] = ()) -> None:
        self.terminology = terminology
        self.base_urls = base_urls

    def assessment(self, repo: Repository, patient_id: str, as_of: date) -> Assessment:
        """The patient's assessment on a clinical date, from what is stored now.

        Within one transaction (one repository) it is computed once per patient and date and
        reused while the transaction writes nothing the assessment reads (a resource of
        ASSESSED_TYPES): the watch's step and the care plans' step both ask for it, and the
        watch only writes Flags in between."""
        repo.flush()   # creates still queued are writes too
        key = ("toh-assessment", patient_id, as_of)
        journal = repo.journal
        found = repo.memo.get(key)
        if found is not None:
            mark, last, assessment = found
            if (len(journal) >= mark and (mark == 0 or journal[mark - 1] is last)
                    and not any(change.res_type in ASSESSED_TYPES for change in journal[mark:])):
                return assessment
        resources = clinical_resources(repo, patient_id, self.base_urls)
        assessment = assess(resources, as_of, self.terminology, base_urls=self.base_urls,
                            history=earlier_versions(repo, resources))
        repo.memo[key] = (len(journal), journal[-1] if journal else None, assessment)
        return assessment

    def evaluate(self, repo: Repository, patient_id: str, as_of: date) -> FlagChanges:
        """Assess one patient and write the Flag changes; returns what was changed."""
        repo.lock(f"toh-assessment:{patient_id}")
        findings = self.assessment(repo, patient_id, as_of).flags
        changes = reconcile_flags(findings, rule_flags(repo, patient_id), as_of)
        for finding in changes.create:
            repo.create(flag_resource(finding, f"Patient/{patient_id}"))
        for flag in (*changes.update, *changes.deactivate):
            repo.update("Flag", flag["id"], flag)
        return changes

    def before_commit(self, uow: UnitOfWork) -> None:
        """Evaluate every patient this transaction touched, as of the clock's date."""
        patients = patients_touched(uow.changes, self.base_urls)
        if not patients:
            return
        today = uow.clock.now().date()
        for patient_id in patients:
            self.evaluate(uow.repo, patient_id, today)
