"""Every official R4 Patient, Condition, Observation and CarePlan example round-trips."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.r4_examples import examples

pytestmark = pytest.mark.slow
TYPES = ["Patient", "Condition", "Observation", "CarePlan"]


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(resource))
    meta = body.get("meta", {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if not meta:
        body.pop("meta", None)
    return body


@pytest.mark.parametrize("res_type", TYPES)
def test_examples_round_trip(client, res_type: str) -> None:  # type: ignore[no-untyped-def]
    found = examples(res_type)
    assert len(found) >= 10, f"expected the spec's {res_type} examples"
    failures = []
    for name, resource in found:
        created = client.post(f"/fhir/{res_type}", data=json.dumps(resource),
                              headers={"Content-Type": "application/fhir+json"})
        if created.status_code != 201:
            failures.append((name, created.status_code, created.get_data(as_text=True)[:300]))
            continue
        new_id = created.get_json()["id"]
        read = client.get(f"/fhir/{res_type}/{new_id}").get_json()
        expected = without_server_meta(dict(resource, id=new_id))
        if without_server_meta(read) != expected:
            failures.append((name, "differs", None))
        put = client.put(f"/fhir/{res_type}/{resource['id']}", data=json.dumps(resource),
                         headers={"Content-Type": "application/fhir+json"})
        if put.status_code != 201 or without_server_meta(
                client.get(f"/fhir/{res_type}/{resource['id']}").get_json()) != without_server_meta(resource):
            failures.append((name, "put", put.status_code))
    assert failures == []


# Examples the R4 model rejects, and why.
KNOWN_INVALID = {
    "Questionnaire-qs1.json": "the spec's own example lacks the required item.linkId",
}
CONFORMANCE = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap",
               "OperationDefinition", "CapabilityStatement", "CompartmentDefinition", "NamingSystem",
               "ImplementationGuide", "StructureMap", "TerminologyCapabilities", "GraphDefinition",
               "MessageDefinition", "ExampleScenario"}


def test_every_clinical_example_of_every_type_is_kept(client) -> None:  # type: ignore[no-untyped-def]
    from tests.r4_examples import examples_dir
    stored = 0
    failures = []
    for path in sorted(examples_dir().glob("*.json")):
        resource = json.loads(path.read_text())
        res_type = resource.get("resourceType")
        if res_type is None or res_type in CONFORMANCE or path.name == "package.json":
            continue
        response = client.post(f"/fhir/{res_type}", data=json.dumps(resource),
                               headers={"Content-Type": "application/fhir+json", "Prefer": "return=minimal"})
        if len(json.dumps(resource)) > client.application.config["MAX_CONTENT_LENGTH"]:
            assert response.status_code == 413, path.name  # over the configured payload limit
        elif path.name in KNOWN_INVALID:
            assert response.status_code == 422, path.name
        elif response.status_code != 201:
            failures.append((path.name, response.status_code, response.get_data(as_text=True)[:200]))
        else:
            stored += 1
    assert failures == []
    assert stored > 600
