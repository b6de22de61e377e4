"""Real FHIR clients that no one here wrote (fhirpy, fhirclient) against a real `toh serve`."""
from __future__ import annotations

from typing import Any

import pytest
import requests
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

pytestmark = pytest.mark.slow

SUBJECT = {"reference": "Patient/p1"}
CODE = {"coding": [{"system": "http://snomed.info/sct", "code": "24136001"}], "text": "hip"}

# A minimal valid body for each type the service reasons about, and a field to change.
TYPES: dict[str, tuple[dict[str, Any], str, Any]] = {
    "Patient": ({"gender": "female"}, "gender", "male"),
    "Condition": ({"subject": SUBJECT, "code": CODE}, "onsetDateTime", "2026-02-01"),
    "Observation": ({"status": "preliminary", "code": CODE}, "status", "final"),
    "CarePlan": ({"status": "draft", "intent": "plan", "subject": SUBJECT}, "status", "active"),
    "MedicationRequest": ({"status": "draft", "intent": "order", "subject": SUBJECT,
                           "medicationCodeableConcept": {"text": "alendronate"}}, "status", "cancelled"),
    "Flag": ({"status": "active", "code": CODE, "subject": SUBJECT}, "status", "inactive"),
    "Task": ({"status": "requested", "intent": "order"}, "status", "completed"),
    "Communication": ({"status": "preparation"}, "status", "completed"),
    # email: a rest-hook Subscription's create answer carries its generated secret, which no read shows;
    # off: a `requested` one is handshaken by the delivery tick, which changes its status (a new version)
    "Subscription": ({"status": "off", "reason": "follow-ups", "criteria": "Task?status=requested",
                      "channel": {"type": "email", "endpoint": "mailto:clinic@clinic.invalid"}},
                     "reason", "follow-ups and flags"),
    "PlanDefinition": ({"status": "draft"}, "status", "active"),
}


def test_fhirpy_create_read_update_delete_history(live_server) -> None:  # type: ignore[no-untyped-def]
    client = SyncFHIRClient(live_server.base, extra_headers={"Content-Type": "application/fhir+json"})
    for res_type, (body, field, new_value) in TYPES.items():
        versions_before = client.execute(f"{res_type}/_history", method="get")["total"]  # e.g. the guide's
        resource = client.resource(res_type, **body)
        resource.save()
        assert resource.id and resource["meta"]["versionId"] == "1"
        fetched = client.reference(res_type, resource.id).to_resource()
        assert fetched.serialize() == resource.serialize()

        fetched[field] = new_value
        fetched.save()
        assert fetched["meta"]["versionId"] == "2"
        assert client.reference(res_type, resource.id).to_resource()[field] == new_value

        history = client.execute(f"{res_type}/{resource.id}/_history", method="get")
        assert history["type"] == "history" and history["total"] == 2
        assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
        type_history = client.execute(f"{res_type}/_history", method="get")
        assert type_history["total"] == versions_before + 2

        fetched.delete()
        with pytest.raises((ResourceNotFound, OperationOutcome)):
            client.reference(res_type, resource.id).to_resource()
        gone = requests.get(f"{live_server.base}/{res_type}/{resource.id}", timeout=10)
        assert gone.status_code == 410


def test_fhirclient_create_read_update_delete_history(live_server) -> None:  # type: ignore[no-untyped-def]
    import importlib

    server = FHIRServer(None, base_uri=live_server.base + "/")
    for res_type, (body, field, new_value) in TYPES.items():
        module = importlib.import_module(f"fhirclient.models.{res_type.lower()}")
        model = getattr(module, res_type)
        try:
            created_json = model(dict(body, resourceType=res_type)).create(server)
        except FHIRValidationError as exc:  # pragma: no cover - would mean our bodies are wrong
            raise AssertionError(f"fhirclient rejects our {res_type} body: {exc}") from exc
        rid = created_json["id"]
        fetched = model.read(rid, server)
        assert fetched.id == rid and fetched.meta.versionId == "1"

        setattr(fetched, field, new_value if field != "onsetDateTime" else None)
        if field == "onsetDateTime":
            from fhirclient.models.fhirdatetime import FHIRDateTime
            fetched.onsetDateTime = FHIRDateTime(new_value)
        fetched.update(server)
        again = model.read(rid, server)
        assert again.meta.versionId == "2"
        assert again.as_json()[field] == new_value

        history = server.request_json(f"{res_type}/{rid}/_history")
        assert history["total"] == 2

        again.delete(server)
        with pytest.raises(requests.HTTPError) as err:
            model.read(rid, server)
        assert err.value.response.status_code == 410
