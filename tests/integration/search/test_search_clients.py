"""Real FHIR clients from PyPI (fhirpy, fhirclient) search a real `toh serve`: paging through
next links, _include/_revinclude, counts, sorting."""
from __future__ import annotations

import pytest
import requests
from fhirclient.models.condition import Condition
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient

pytestmark = pytest.mark.slow


@pytest.fixture
def server(live_server):  # type: ignore[no-untyped-def]
    empty = requests.get(f"{live_server.base}/Patient", timeout=10)   # a broken search route fails here
    assert empty.status_code == 200, empty.text
    assert empty.json()["resourceType"] == "Bundle" and empty.json()["type"] == "searchset"
    client = SyncFHIRClient(live_server.base, extra_headers={"Content-Type": "application/fhir+json"})
    patient = client.resource("Patient", name=[{"family": "Müller"}], gender="female")
    patient.save()
    for i in range(7):
        client.resource("Condition", subject={"reference": f"Patient/{patient.id}"},
                        code={"coding": [{"system": "http://snomed.info/sct", "code": "22222"}]},
                        onsetDateTime=f"2026-02-{10 + i:02d}").save()
    live_server.patient_id = patient.id
    return live_server


def test_fhirpy_pages_includes_and_counts(server) -> None:  # type: ignore[no-untyped-def]
    client = SyncFHIRClient(server.base)
    conditions = client.resources("Condition").search(patient=server.patient_id).sort("-onset-date").limit(3)
    fetched = conditions.fetch_all()                  # follows the next links
    assert [c["onsetDateTime"] for c in fetched] == [f"2026-02-{10 + i:02d}" for i in range(6, -1, -1)]
    assert conditions.count() == 7
    bundle = client.resources("Condition").search(patient=server.patient_id).include(
        "Condition", "subject").limit(2).fetch_raw()
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "match", "include"]
    patients = client.resources("Patient").search(family="muller").revinclude("Condition", "subject").fetch_raw()
    assert len([e for e in patients["entry"] if e["resource"]["resourceType"] == "Condition"]) == 7


def test_fhirclient_search_and_next_page(server) -> None:  # type: ignore[no-untyped-def]
    smart = FHIRServer(None, server.base)
    search = Condition.where(struct={"patient": server.patient_id, "_count": "4", "_sort": "onset-date"})
    bundles = list(search.perform_iter(smart))        # fhirclient follows the next link itself
    assert [len(b.entry) for b in bundles] == [4, 3]
    onsets = [e.resource.onsetDateTime.date.isoformat()[:10] for b in bundles for e in b.entry]
    assert onsets == [f"2026-02-{10 + i:02d}" for i in range(7)]
