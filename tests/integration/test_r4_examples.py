"""The official R4 examples: every Patient, Condition, Observation and CarePlan example round-trips
through POST and PUT, every example of every clinical type is kept (stored and read back the
same), and every R4 resource type can be stored and read."""
from __future__ import annotations

import json
from typing import Any

import pytest

from service.fhir.canonical import EXT_SUBSCRIPTION_OWNER
from tests.r4_examples import examples

pytestmark = pytest.mark.slow
TYPES = ["Patient", "Condition", "Observation", "CarePlan"]


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource without what the server adds: meta.versionId and lastUpdated, and on a
    Subscription the owner extension naming the token subject that wrote it (README,
    "Subscriptions": a Subscription belongs to whoever made it)."""
    body = json.loads(json.dumps(resource))
    if body.get("resourceType") == "Subscription":
        kept = [e for e in body.get("extension", []) if e.get("url") != EXT_SUBSCRIPTION_OWNER]
        body.pop("extension", None)
        if kept:
            body["extension"] = kept
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


# Types whose records only the service writes (the audit trail, issue 12): writes through the API are 405.
SERVICE_WRITTEN = frozenset({"AuditEvent"})


def test_every_clinical_example_of_every_type_is_kept(client) -> None:  # type: ignore[no-untyped-def]
    from tests.r4_examples import examples_dir
    kept: dict[str, int] = {}
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
        elif res_type in SERVICE_WRITTEN:
            # the audit trail is the service's own and append-only: a client's AuditEvent is 405
            assert response.status_code == 405, path.name
            assert response.get_json()["resourceType"] == "OperationOutcome"
        elif response.status_code != 201:
            failures.append((path.name, response.status_code, response.get_data(as_text=True)[:200]))
        else:
            location = response.headers["Location"]           # .../fhir/{type}/{id}/_history/1
            new_id = location.split(f"/{res_type}/")[1].split("/")[0]
            read = client.get(f"/fhir/{res_type}/{new_id}")
            if read.status_code != 200 or without_server_meta(read.get_json()) != without_server_meta(
                    dict(resource, id=new_id)):
                failures.append((path.name, "read back differs", read.status_code))
            else:
                kept[res_type] = kept.get(res_type, 0) + 1
    assert failures == []
    assert sum(kept.values()) > 600
    assert len(kept) > 120          # the package has clinical examples of 125 types


# R4 types with no example in the package: a minimal resource (none has a required element).
NO_EXAMPLE = ["Parameters", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
              "SubstanceReferenceInformation", "SubstanceSourceMaterial"]


def test_every_r4_resource_type_is_stored_and_read_back(client) -> None:  # type: ignore[no-untyped-def]
    """One resource of each of R4's 146 resource types (the spec's list, http://hl7.org/fhir/R4/
    resourcelist.html, is what the CapabilityStatement names): PUT, then read back unchanged."""
    from tests.r4_examples import examples_dir
    types = [r["type"] for r in client.get("/fhir/metadata").get_json()["rest"][0]["resource"]]
    assert len(types) == 146
    one: dict[str, dict[str, Any]] = {t: {"resourceType": t} for t in NO_EXAMPLE}
    for path in sorted(examples_dir().glob("*.json")):
        resource = json.loads(path.read_text())
        if (resource.get("resourceType") in types and resource["resourceType"] not in one
                and path.name not in KNOWN_INVALID and len(path.read_bytes()) < 100_000):
            one[resource["resourceType"]] = resource
    assert sorted(one) == sorted(types)
    failures = []
    for res_type, resource in sorted(one.items()):
        body = dict(resource, id=f"every-{res_type.lower()}")
        stored = client.put(f"/fhir/{res_type}/{body['id']}", data=json.dumps(body),
                            headers={"Content-Type": "application/fhir+json"})
        read = client.get(f"/fhir/{res_type}/{body['id']}")
        if res_type in SERVICE_WRITTEN:
            if stored.status_code != 405 or stored.get_json()["resourceType"] != "OperationOutcome":
                failures.append((res_type, stored.status_code, read.status_code))
            continue
        if stored.status_code != 201 or read.status_code != 200 or \
                without_server_meta(read.get_json()) != without_server_meta(body):
            failures.append((res_type, stored.status_code, read.status_code))
    assert failures == []
