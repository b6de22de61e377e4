"""The TOH guide over HTTP: served read-only and searchable, claimed profiles enforced on every
write, $validate at type and instance level, profiles in the CapabilityStatement."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from service.fhir.canonical import SD_PAIN_SCORE, SD_TOH_CONDITION, TOH_CODES
from tests.integration.test_rest_api import count_resources

EXAMPLES = Path(__file__).resolve().parents[2] / "fhir_profiles" / "examples"
FHIR = {"Content-Type": "application/fhir+json"}


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def test_every_guide_example_is_accepted(client) -> None:  # type: ignore[no-untyped-def]
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert len(names) >= 9
    for name in names:
        resource = example(name)
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=json.dumps(resource),
                              headers=FHIR)
        assert response.status_code == 201, (name, response.get_json())


@pytest.mark.parametrize("name, break_it, location", [
    ("Condition-toh-left-hip.json", lambda r: r.pop("bodySite"), "Condition.bodySite"),
    ("Condition-toh-left-hip.json",
     lambda r: r["code"]["coding"][0].update(system="http://example.org/not-icd"), "Condition.code"),
    ("Observation-toh-pain-score-left-hip.json", lambda r: r["valueQuantity"].update(value=11), "Observation"),
])
def test_a_broken_profiled_resource_is_422_and_not_stored(client, name, break_it, location) -> None:  # type: ignore[no-untyped-def]
    resource = example(name)
    break_it(resource)
    resource.pop("id")
    response = client.post(f"/fhir/{resource['resourceType']}", data=json.dumps(resource), headers=FHIR)
    assert response.status_code == 422, response.get_json()
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    locations = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert any(loc.startswith(location) for loc in locations), locations
    assert count_resources(client) == 0


def test_abated_but_active_condition_is_rejected(client) -> None:  # type: ignore[no-untyped-def]
    resource = example("Condition-toh-left-hip.json")
    resource["abatementDateTime"] = "2026-09-01"
    response = client.put(f"/fhir/Condition/{resource['id']}", data=json.dumps(resource), headers=FHIR)
    assert response.status_code == 422
    assert any(i["code"] == "invariant" for i in response.get_json()["issue"])


def test_unprofiled_and_foreign_profile_resources_are_accepted(client) -> None:  # type: ignore[no-untyped-def]
    resource = example("Condition-toh-left-hip.json")
    resource.pop("bodySite")
    resource["meta"] = {"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition"]}
    assert client.post("/fhir/Condition", data=json.dumps(resource), headers=FHIR).status_code == 201
    resource.pop("meta")
    assert client.post("/fhir/Condition", data=json.dumps(resource), headers=FHIR).status_code == 201


def test_validate_operation_type_level(client) -> None:  # type: ignore[no-untyped-def]
    good = example("Observation-toh-pain-score-left-hip.json")
    ok = client.post("/fhir/Observation/$validate", data=json.dumps(good), headers=FHIR)
    assert ok.status_code == 200
    assert all(i["severity"] not in ("error", "fatal") for i in ok.get_json()["issue"])

    bad = copy.deepcopy(good)
    bad["valueQuantity"]["value"] = 11
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bad},
                                                          {"name": "profile", "valueUri": SD_PAIN_SCORE}]}
    checked = client.post("/fhir/Observation/$validate", data=json.dumps(params), headers=FHIR)
    assert checked.status_code == 200
    assert any(i["severity"] == "error" for i in checked.get_json()["issue"])

    unprofiled = {"resourceType": "Condition", "subject": {"reference": "Patient/p"}}
    against = client.post(f"/fhir/Condition/$validate?profile={SD_TOH_CONDITION}", data=json.dumps(unprofiled),
                          headers=FHIR).get_json()
    assert {e for i in against["issue"] for e in i.get("expression", [])} >= {"Condition.bodySite"}
    broken_r4 = client.post("/fhir/Condition/$validate", data=json.dumps({"resourceType": "Condition"}),
                            headers=FHIR).get_json()
    assert any("Condition.subject" in i.get("expression", []) for i in broken_r4["issue"])
    assert count_resources(client) == 0


def test_validate_operation_instance_level(client) -> None:  # type: ignore[no-untyped-def]
    plain = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"}}
    client.put("/fhir/Condition/c1", data=json.dumps(plain), headers=FHIR)
    outcome = client.get(f"/fhir/Condition/c1/$validate?profile={SD_TOH_CONDITION}").get_json()
    assert any(i["severity"] == "error" for i in outcome["issue"])
    assert client.get("/fhir/Condition/nope/$validate").status_code == 404


def test_guide_resources_are_served_and_searchable(client) -> None:  # type: ignore[no-untyped-def]
    found = client.get(f"/fhir/StructureDefinition?url={SD_TOH_CONDITION}").get_json()
    assert [e["resource"]["url"] for e in found["entry"] if e["search"]["mode"] == "match"] == [SD_TOH_CONDITION]
    assert found["entry"][0]["resource"]["snapshot"]["element"]
    codes = client.get("/fhir/CodeSystem?code=migration").get_json()
    assert [e["resource"]["url"] for e in codes["entry"] if e["search"]["mode"] == "match"] == [TOH_CODES]
    assert client.get("/fhir/CodeSystem?code=no-such-code").get_json()["total"] == 0
    plan = client.get("/fhir/PlanDefinition?url=https://fhir.toh-service.org/PlanDefinition/toh-follow-up-protocol")
    assert len(plan.get_json()["entry"]) == 1

    def valueset_names(query: str) -> list[str]:
        bundle = client.get(f"/fhir/ValueSet?{query}").get_json()
        return sorted(e["resource"]["name"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")

    # the guide's ValueSet names (fhir_profiles/ValueSet/*.json); a string search matches a
    # case- and accent-insensitive start of the value, :exact the whole value (R4 3.1.1.5.2)
    assert valueset_names("name=TrackedJoints") == ["TrackedJoints"]
    assert valueset_names("name=pregnancy") == ["PregnancyBreastfeedingFindings", "PregnancyEndedFindings", "PregnancyStatusValues"]
    assert valueset_names("name:exact=trackedjoints") == []
    assert valueset_names("name:exact=TrackedJoints") == ["TrackedJoints"]
    assert len(valueset_names("_count=100")) == len(list((EXAMPLES.parent / "ValueSet").glob("*.json")))


def test_guide_search_parameters_are_served_and_used(client) -> None:  # type: ignore[no-untyped-def]
    url = "https://fhir.toh-service.org/SearchParameter/Flag-status"
    found = client.get(f"/fhir/SearchParameter?url={url}").get_json()
    assert [e["resource"]["code"] for e in found["entry"]] == ["status"]
    cs = client.get("/fhir/metadata").get_json()
    flag = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Flag")
    assert {"name": "status", "definition": url} in [{k: p[k] for k in ("name", "definition")}
                                                     for p in flag["searchParam"]]
    for status in ("active", "inactive"):
        body = {"resourceType": "Flag", "status": status, "code": {"text": status},
                "subject": {"reference": "Patient/p"}}
        client.post("/fhir/Flag", data=json.dumps(body), headers=FHIR)
    active = client.get("/fhir/Flag?status=active").get_json()
    assert [e["resource"]["status"] for e in active["entry"]] == ["active"]


def test_guide_resources_are_read_only(client) -> None:  # type: ignore[no-untyped-def]
    vs = client.get(f"/fhir/StructureDefinition?url={SD_TOH_CONDITION}").get_json()["entry"][0]["resource"]
    response = client.put(f"/fhir/StructureDefinition/{vs['id']}", data=json.dumps(vs), headers=FHIR)
    assert response.status_code == 405 and response.get_json()["resourceType"] == "OperationOutcome"
    assert client.delete(f"/fhir/StructureDefinition/{vs['id']}").status_code == 405
    assert client.get(f"/fhir/StructureDefinition/{vs['id']}").headers["ETag"] == 'W/"1"'


def test_capability_statement_lists_profiles(client) -> None:  # type: ignore[no-untyped-def]
    cs = client.get("/fhir/metadata").get_json()
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert SD_TOH_CONDITION in by_type["Condition"]["supportedProfile"]
    assert SD_PAIN_SCORE in by_type["Observation"]["supportedProfile"]
    assert any(op["name"] == "validate" for op in by_type["Condition"]["operation"])
    assert any(op["name"] == "toh-assessment" for op in by_type["Patient"]["operation"])


def test_restarting_does_not_rewrite_the_guide(app) -> None:  # type: ignore[no-untyped-def]
    from service.workflows.conformance import install_guide
    svc = app.extensions["toh"]
    assert install_guide(svc.database, svc.conformance) == 0


SNOMED = "http://snomed.info/sct"
BODY_SITES = [   # (bodySite, does it state a side?)
    ({"coding": [{"system": SNOMED, "code": "287679003", "display": "Left hip"}]}, True),
    ({"coding": [{"system": SNOMED, "code": "24136001", "display": "Hip joint structure"}], "text": "L hip"}, True),
    ({"coding": [{"system": SNOMED, "code": "24136001"}, {"system": SNOMED, "code": "24028007"}]}, True),
    ({"coding": [{"system": SNOMED, "code": "24136001", "display": "Hip joint structure"}]}, False),
    ({"coding": [{"system": SNOMED, "code": "24136001"}], "text": "hip"}, False),
]


@pytest.mark.parametrize("body_site,states_side", BODY_SITES)
def test_validate_and_the_rules_agree_on_what_states_a_side(client, body_site, states_side) -> None:  # type: ignore[no-untyped-def]
    """$validate warns (toh-bodysite-1) exactly when the clinical rules cannot read a side from
    the bodySite (service.clinical.anatomy.read_site): a display "Left hip" states the side."""
    from service import _terminology
    from service.clinical.anatomy import read_site
    condition = example("Condition-toh-left-hip.json")
    condition["bodySite"] = [body_site]
    outcome = client.post("/fhir/Condition/$validate", data=json.dumps(condition), headers=FHIR).get_json()
    warned = any("toh-bodysite-1" in i.get("diagnostics", "") for i in outcome["issue"])
    assert warned is not states_side, outcome
    assert bool(read_site({"bodySite": [body_site]}, _terminology()).sides) is states_side


def test_every_operation_in_the_capability_statement_has_its_definition(client) -> None:  # type: ignore[no-untyped-def]
    """CapabilityStatement.rest.resource.operation.definition is canonical(OperationDefinition):
    the guide's own operations are served here; FHIR's are defined by the spec."""
    cs = client.get("/fhir/metadata").get_json()
    definitions = {op["definition"] for r in cs["rest"][0]["resource"] for op in r.get("operation", ())}
    assert "https://fhir.toh-service.org/OperationDefinition/Patient-toh-assessment" in definitions
    for url in definitions - {d for d in definitions if d.startswith("http://hl7.org/fhir/")}:
        found = client.get(f"/fhir/OperationDefinition?url={url}").get_json()
        assert [e["resource"]["url"] for e in found.get("entry", [])] == [url]
        op = found["entry"][0]["resource"]
        assert client.get(f"/fhir/OperationDefinition/{op['id']}").status_code == 200
