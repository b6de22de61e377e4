"""A transaction assesses each patient once, and again only after it writes what the
assessment reads (workflows.clinical_watch.ClinicalWatch.assessment).

The clinical watch's step and the care plans' step both need the patient's assessment; the
watch only writes Flags in between, so the second asks for the same one. A write of a clinical
type (or a Medication) in between must make the next ask compute it afresh.
"""
from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from service.workflows import clinical_watch
from tests.data.synthea.generator import synthea_bundle
from tests.integration.test_clinical_watch import ORDER, PREGNANT_OBSERVATION

FHIR = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


@pytest.fixture
def assessed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The patients assess() is run for, in order."""
    calls: list[str] = []
    real = clinical_watch.assess

    def counting(resources: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        patients = {clinical_watch.patient_of(r) for r in resources} - {None}
        calls.append(",".join(sorted(p for p in patients if p)))
        return real(resources, *args, **kwargs)
    monkeypatch.setattr(clinical_watch, "assess", counting)
    return calls


def test_a_transaction_bundle_assesses_its_patient_once(client, assessed: list[str]) -> None:  # type: ignore[no-untyped-def]
    bundle = synthea_bundle(1, 14)
    response = client.post("/fhir", data=json.dumps(bundle), headers=FHIR)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    plans = client.get("/fhir/CarePlan?_count=100").get_json()
    assert plans["total"] > 14   # the bundle's plans and the follow-up plan the care plans step made
    assert len(assessed) == 1 and assessed[0]


def test_a_clinical_write_in_between_makes_it_assess_again(app, assessed: list[str]) -> None:  # type: ignore[no-untyped-def]
    watch = app.extensions["toh"].clinical
    database = app.extensions["toh"].database
    today = date(2026, 2, 1)
    with database.unit_of_work() as uow:
        uow.record_provenance = False
        repo = uow.repo
        repo.update("Patient", "p1", {"resourceType": "Patient", "id": "p1", "gender": "female"})
        repo.update("Observation", "preg", PREGNANT_OBSERVATION)
        first = watch.assessment(repo, "p1", today)
        assert watch.assessment(repo, "p1", today) is first          # nothing written: reused
        repo.create({"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p1"},
                     "code": {"text": "not read by the rules"}})
        assert watch.assessment(repo, "p1", today) is first          # a Flag is not read
        assert len(assessed) == 1
        repo.update("MedicationRequest", "rx", ORDER)
        second = watch.assessment(repo, "p1", today)
        assert len(assessed) == 2
        assert first.flag_codes() == [] and second.flag_codes() == ["bisphosphonate-in-pregnancy"]
        assert watch.assessment(repo, "p1", date(2026, 2, 2)) is not second   # another date: its own
        with repo.deferred():   # a create still queued counts as written
            repo.create({k: v for k, v in PREGNANT_OBSERVATION.items() if k != "id"} | {"effectiveDateTime": "2026-01-05"})
            watch.assessment(repo, "p1", today)
        assert len(assessed) == 4
