"""A transaction that creates a patient reads that patient's clinical resources from its own
journal, and gets exactly what the search index gives (workflows.clinical_watch.clinical_resources,
issue 11).

A Patient created by POST has an id the server assigned within this transaction, so no resource
stored before can name it: the resources whose subject is that Patient are the transaction's
own. The index path stays for every other case (a Patient written by PUT, one stored earlier,
a transaction that deletes a clinical resource).
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from service.workflows import clinical_watch
from tests.data.synthea.generator import synthea_bundle

FHIR = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


def condition(patient: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "202855006"}]}}


def test_a_new_patients_resources_from_the_journal_are_those_the_index_gives(
        client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    compared: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
    real = clinical_watch.clinical_resources
    real_written_here = clinical_watch._written_here

    def both(repo: Any, patient_id: str, base_urls: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        assert real_written_here(repo.journal, patient_id, base_urls) is not None   # the journal's path
        from_journal = real(repo, patient_id, base_urls)
        with monkeypatch.context() as m:
            m.setattr(clinical_watch, "_written_here", lambda *args: None)
            from_index = real(repo, patient_id, base_urls)
        compared.append((copy.deepcopy(from_journal), from_index))
        return from_journal

    monkeypatch.setattr(clinical_watch, "clinical_resources", both)
    for seed in (1, 2, 3):
        response = client.post("/fhir", data=json.dumps(synthea_bundle(seed, 14)), headers=FHIR)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert len(compared) >= 3
    for from_journal, from_index in compared:
        assert len(from_index) > 20   # the bundle's conditions, observations, orders and plans
        assert from_journal == from_index


def test_the_rules_do_not_change_the_resources_they_read(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    real = clinical_watch.assess
    changed: list[bool] = []

    def watching(resources: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        before = copy.deepcopy(resources)
        result = real(resources, *args, **kwargs)
        changed.append(before != resources)
        return result

    monkeypatch.setattr(clinical_watch, "assess", watching)
    for seed in (4, 5):
        response = client.post("/fhir", data=json.dumps(synthea_bundle(seed, 14)), headers=FHIR)
        assert response.status_code == 200
    assert changed and not any(changed)


def test_the_journal_answers_only_for_a_patient_created_here_by_post(app) -> None:  # type: ignore[no-untyped-def]
    database = app.extensions["toh"].database
    with database.unit_of_work() as uow:
        uow.record_provenance = False
        repo = uow.repo
        put, _ = repo.update("Patient", "p-put", {"resourceType": "Patient", "id": "p-put"})
        posted, _ = repo.create({"resourceType": "Patient"})
        for patient in ("p-put", posted.res_id):
            repo.create(condition(patient))
        repo.flush()
        assert clinical_watch._written_here(repo.journal, "p-put", ()) is None      # its id was the client's
        mine = clinical_watch._written_here(repo.journal, posted.res_id, ())
        assert [r["subject"]["reference"] for r in mine or []] == [f"Patient/{posted.res_id}"]
    with database.unit_of_work() as uow:
        uow.record_provenance = False
        repo = uow.repo
        posted, _ = repo.create({"resourceType": "Patient"})
        gone, _ = repo.create(condition(posted.res_id))
        repo.delete("Condition", gone.res_id)
        repo.flush()
        assert clinical_watch._written_here(repo.journal, posted.res_id, ()) is None   # a deletion: the index
