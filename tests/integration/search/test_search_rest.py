"""The rest of R4 search, over HTTP on SQLite and PostgreSQL: composite parameters, _has
(reverse chaining), the token modifiers :of-type, :in, :not-in, :above and :below against the
ValueSets and CodeSystems the server holds (the guide's and those clients stored), and the
reference modifier :identifier. Expected values follow https://hl7.org/fhir/R4/search.html."""
from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

FHIR_JSON = "application/fhir+json"
LOINC, UCUM, SNOMED = "http://loinc.org", "http://unitsofmeasure.org", "http://snomed.info/sct"
TOH = "https://fhir.toh-service.org/CodeSystem/toh"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def put(client: FlaskClient, resource: dict[str, Any]) -> None:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                   headers={"Content-Type": FHIR_JSON})
    assert r.status_code in (200, 201), r.json


def ids(client: FlaskClient, url: str) -> set[str]:
    r = client.get(url, headers={"Prefer": "handling=strict"})
    assert r.status_code == 200, r.json
    return {e["resource"]["id"] for e in r.json.get("entry", []) if e["search"]["mode"] == "match"}


def coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def quantity(value: float, code: str = "{score}") -> dict[str, Any]:
    return {"value": value, "system": UCUM, "code": code}


def obs(oid: str, code: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": coded(LOINC, code),
            "subject": {"reference": "Patient/anna"}, **more}


@pytest.fixture
def clinic(client: FlaskClient) -> FlaskClient:
    put(client, {"resourceType": "Patient", "id": "anna", "gender": "female",
                 "identifier": [{"type": coded(V2_0203, "MR"), "system": "urn:mrn", "value": "M-12"}]})
    put(client, {"resourceType": "Patient", "id": "bob", "gender": "male",
                 "identifier": [{"type": coded(V2_0203, "DL"), "system": "urn:dl", "value": "M-12"}]})
    put(client, obs("pain-8", "72514-3", valueQuantity=quantity(8)))
    put(client, obs("pain-5", "72514-3", valueQuantity=quantity(5)))
    put(client, obs("weight", "29463-7", valueQuantity=quantity(80, "kg")))
    put(client, obs("bp", "85354-9", component=[
        {"code": coded(LOINC, "8480-6"), "valueQuantity": quantity(150, "mm[Hg]")},
        {"code": coded(LOINC, "8462-4"), "valueQuantity": quantity(90, "mm[Hg]")}]))
    put(client, obs("side", "24590-2", valueCodeableConcept=coded(SNOMED, "7771000")))
    put(client, obs("by-mrn", "72514-3", subject={"identifier": {"system": "urn:mrn", "value": "M-12"}},
                    valueQuantity=quantity(2)))
    put(client, {"resourceType": "Flag", "id": "f-migration", "status": "active", "code": coded(TOH, "migration"),
                 "subject": {"reference": "Patient/anna"}})
    put(client, {"resourceType": "Flag", "id": "f-other", "status": "active", "code": coded(TOH, "care-activity"),
                 "subject": {"reference": "Patient/bob"}})
    return client


# -- composite ----------------------------------------------------------------------------------

def test_composite_code_value_quantity(clinic: FlaskClient) -> None:
    """search.html#composite: every pain score over 7."""
    assert ids(clinic, "/fhir/Observation?code-value-quantity=http://loinc.org|72514-3$gt7") == {"pain-8"}
    assert ids(clinic, "/fhir/Observation?code-value-quantity=72514-3$lt6") == {"pain-5", "by-mrn"}
    assert ids(clinic, "/fhir/Observation?code-value-quantity=http://loinc.org|29463-7$gt7") == {"weight"}
    assert ids(clinic, "/fhir/Observation?code-value-quantity=72514-3$gt7,29463-7$gt7") == {"pain-8", "weight"}
    assert ids(clinic, "/fhir/Observation?code-value-concept=24590-2$http://snomed.info/sct|7771000") == {"side"}


def test_composite_pairs_the_values_of_one_component(clinic: FlaskClient) -> None:
    """component-code-value-quantity pairs a component's code with that component's value: the
    diastolic pressure (90) is not over 140 although the systolic one (150) is."""
    assert ids(clinic, "/fhir/Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140") == {"bp"}
    assert ids(clinic, "/fhir/Observation?component-code-value-quantity=http://loinc.org|8462-4$gt140") == set()
    assert ids(clinic, "/fhir/Observation?combo-code-value-quantity=8462-4$lt100") == {"bp"}


# -- _has ---------------------------------------------------------------------------------------

def test_has_selects_by_what_refers_to_the_resource(clinic: FlaskClient) -> None:
    """search.html#has: the patients that a Flag coded 'migration' refers to."""
    assert ids(clinic, "/fhir/Patient?_has:Flag:patient:code=migration") == {"anna"}
    assert ids(clinic, "/fhir/Patient?_has:Flag:subject:status=active") == {"anna", "bob"}
    assert ids(clinic, "/fhir/Patient?_has:Observation:patient:code-value-quantity=72514-3$gt7") == {"anna"}
    assert ids(clinic, "/fhir/Patient?_has:Flag:patient:code=no-such-code") == set()
    nested = "/fhir/Observation?subject:Patient._has:Flag:patient:code=migration"
    assert ids(clinic, nested) == {"pain-8", "pain-5", "weight", "bp", "side"}


def test_has_with_a_malformed_value_is_refused(clinic: FlaskClient) -> None:
    r = clinic.get("/fhir/Patient?_has:Observation:patient:date=notadate")
    assert r.status_code == 400 and r.json["issue"][0]["expression"] == ["_has:Observation:patient:date"]
    r = clinic.get("/fhir/Patient?_has:Flag:nonsense:code=x", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400


# -- token modifiers ------------------------------------------------------------------------------

def test_of_type_matches_the_identifier_type_and_value(clinic: FlaskClient) -> None:
    """search.html#token: identifier:of-type=[type system]|[type code]|[value]; the value is a
    string, so without case."""
    assert ids(clinic, f"/fhir/Patient?identifier:of-type={V2_0203}|MR|M-12") == {"anna"}
    assert ids(clinic, f"/fhir/Patient?identifier:of-type={V2_0203}|MR|m-12") == {"anna"}
    assert ids(clinic, f"/fhir/Patient?identifier:of-type={V2_0203}|DL|M-12") == {"bob"}
    assert ids(clinic, f"/fhir/Patient?identifier:of-type={V2_0203}|MR|M-13") == set()
    assert clinic.get(f"/fhir/Patient?identifier:of-type={V2_0203}|MR").status_code == 400


def test_in_and_not_in_use_the_valuesets_the_server_holds(clinic: FlaskClient) -> None:
    """The guide's toh-flags ValueSet (every descendant of 'flag') and one a client stored."""
    flags = "https://fhir.toh-service.org/ValueSet/toh-flags"
    assert ids(clinic, f"/fhir/Flag?code:in={flags}") == {"f-migration"}
    assert ids(clinic, f"/fhir/Flag?code:not-in={flags}") == {"f-other"}
    put(clinic, {"resourceType": "ValueSet", "id": "pain", "url": "http://example.org/vs/pain", "status": "active",
                 "compose": {"include": [{"system": LOINC, "concept": [{"code": "72514-3"}]}]}})
    assert ids(clinic, "/fhir/Observation?code:in=http://example.org/vs/pain") == {"pain-8", "pain-5", "by-mrn"}
    r = clinic.get("/fhir/Observation?code:in=http://example.org/vs/unknown")
    assert r.status_code == 400 and r.json["issue"][0]["expression"] == ["code:in"]


def test_below_and_above_follow_the_code_system_hierarchy(clinic: FlaskClient) -> None:
    """The guide's CodeSystem: 'migration' is below 'flag'; 'flag' is above 'migration'."""
    assert ids(clinic, f"/fhir/Flag?code:below={TOH}|flag") == {"f-migration"}
    assert ids(clinic, f"/fhir/Flag?code:below={TOH}|migration") == {"f-migration"}
    assert ids(clinic, f"/fhir/Flag?code:above={TOH}|migration") == {"f-migration"}
    assert ids(clinic, f"/fhir/Flag?code:above={TOH}|flag") == set()
    assert ids(clinic, f"/fhir/Flag?code:below={TOH}|care-activity") == {"f-other"}
    r = clinic.get("/fhir/Flag?code:below=http://unknown.org/cs|x")
    assert r.status_code == 400 and r.json["issue"][0]["expression"] == ["code:below"]


# -- reference :identifier ------------------------------------------------------------------------

def test_reference_identifier_modifier(clinic: FlaskClient) -> None:
    """search.html#reference: subject:identifier matches Reference.identifier."""
    assert ids(clinic, "/fhir/Observation?subject:identifier=urn:mrn|M-12") == {"by-mrn"}
    assert ids(clinic, "/fhir/Observation?subject:identifier=urn:mrn|m-12") == {"by-mrn"}
    assert ids(clinic, "/fhir/Observation?subject:identifier=urn:dl|M-12") == set()
