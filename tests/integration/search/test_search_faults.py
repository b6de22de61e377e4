"""The REST and search faults of issue 8, over HTTP on SQLite and PostgreSQL, each with the
value the R4 text gives:

1. a malformed value is refused with 400 naming the parameter, never dropped (search.html#errors);
2. token search on string-typed elements ignores case (search.html#token);
3. _elements keeps the mandatory elements (search.html#elements);
4. _summary=true|text|data (search.html#summary);
5. DELETE of what never existed is 204 (http.html#delete), in batches too;
6. history _at means "current at some point in that time" (http.html#history);
7. a repeated _sort or _count is honoured or refused, and the self link is true (search.html#conformance).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask.testing import FlaskClient

FHIR_JSON = "application/fhir+json"
UCUM, LOINC = "http://unitsofmeasure.org", "http://loinc.org"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def put(client: FlaskClient, resource: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                   headers={"Content-Type": FHIR_JSON})
    assert r.status_code in (200, 201), r.json
    return r.json


def ids(client: FlaskClient, url: str) -> list[str]:
    r = client.get(url)
    assert r.status_code == 200, r.json
    assert all(e["search"]["mode"] == "match" for e in r.json.get("entry", [])), r.json
    return [e["resource"]["id"] for e in r.json.get("entry", [])]


def self_link(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    url = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    return parse_qsl(urlsplit(url).query)


PAIN = {"resourceType": "Observation", "id": "pain", "status": "final",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">pain 8</div>"},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "survey"}]}],
        "code": {"coding": [{"system": LOINC, "code": "72514-3"}]}, "subject": {"reference": "Patient/anna"},
        "valueQuantity": {"value": 8, "system": UCUM, "code": "{score}"}, "note": [{"text": "worse at night"}]}
ANNA = {"resourceType": "Patient", "id": "anna", "gender": "female", "birthDate": "1980-03-04",
        "telecom": [{"system": "email", "value": "me@example.org"}],
        "identifier": [{"system": "sys", "value": "abc-876"}],
        "contact": [{"name": {"family": "Doe"}}]}


@pytest.fixture
def clinic(client: FlaskClient) -> FlaskClient:
    put(client, ANNA)
    put(client, {"resourceType": "Patient", "id": "bob", "gender": "male", "birthDate": "1975-01-01"})
    put(client, {"resourceType": "Patient", "id": "cleo", "gender": "female", "birthDate": "1990-05-05"})
    put(client, PAIN)
    put(client, {"resourceType": "RiskAssessment", "id": "risk", "status": "final",
                 "subject": {"reference": "Patient/anna"}, "prediction": [{"probabilityDecimal": 0.25}]})
    return client


# -- 1. malformed values ---------------------------------------------------------------------

MALFORMED = [   # (search, parameter): one per parameter type, and the inputs of the report
    ("Patient?identifier=sys|abc-876|extra", "identifier"),                 # token
    ("Patient?family:missing=perhaps", "family:missing"),                   # string
    ("Observation?subject=Patient/not an id!", "subject"),                  # reference
    ("Patient?birthdate=notadate", "birthdate"),                            # date
    ("Observation?value-quantity=gtabc", "value-quantity"),                 # quantity
    ("Observation?value-quantity=ll109", "value-quantity"),
    ("RiskAssessment?probability=abc", "probability"),                      # number
    ("Patient?_profile=not a uri", "_profile"),                             # uri
    ("Observation?code-value-quantity=http://loinc.org|72514-3$gtabc", "code-value-quantity"),  # composite
    ("Observation?code-value-quantity=http://loinc.org|72514-3", "code-value-quantity"),
    ("Observation?code-value-quantity=a|b|c$7", "code-value-quantity"),
    ("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR", "identifier:of-type"),
    ("Flag?code:below=migration", "code:below"),
    ("Patient?_has:Observation:patient:date=notadate", "_has:Observation:patient:date"),
    ("Patient?_id=x' OR '1'='1", "_id"),
    ("Patient?_lastUpdated=gt2026-13-45", "_lastUpdated"),
]


@pytest.mark.parametrize("search,name", MALFORMED)
@pytest.mark.parametrize("prefer", [None, "handling=lenient", "handling=strict"])
def test_a_malformed_value_is_refused_with_400_naming_the_parameter(clinic: FlaskClient, search: str, name: str,
                                                                    prefer: str | None) -> None:
    """R4 search.html#errors: "If the server is unable to ... the search [because of] a syntactically
    incorrect value ... it SHOULD return an error"; dropping the filter would show everything."""
    r = clinic.get(f"/fhir/{search}", headers={"Prefer": prefer} if prefer else {})
    assert r.status_code == 400 and r.json["resourceType"] == "OperationOutcome", r.json
    issues = r.json["issue"]
    assert [(i["severity"], i["code"], i["expression"]) for i in issues] == [("error", "invalid", [name])]
    assert "ignored" not in issues[0]["diagnostics"]


def test_unknown_parameters_stay_lenient_and_strict_says_refused(clinic: FlaskClient) -> None:
    lenient = clinic.get("/fhir/Patient?gender=female&shoe-size=42").json
    assert [e["resource"]["id"] for e in lenient["entry"][:-1]] == ["anna", "cleo"]
    assert lenient["entry"][-1]["resource"]["issue"][0]["diagnostics"].endswith("(ignored)")
    strict = clinic.get("/fhir/Patient?gender=female&shoe-size=42", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert [i["expression"] for i in strict.json["issue"]] == [["shoe-size"]]
    assert "ignored" not in strict.json["issue"][0]["diagnostics"]


# -- 2. token search on strings ignores case -------------------------------------------------

def test_token_search_on_string_elements_ignores_case(clinic: FlaskClient) -> None:
    """R4 search.html#token: "If the underlying datatype is string then the search is not case sensitive"."""
    assert ids(clinic, "/fhir/Patient?email=ME@EXAMPLE.ORG") == ["anna"]
    assert ids(clinic, "/fhir/Patient?telecom=email|Me@Example.Org") == ["anna"]
    assert ids(clinic, "/fhir/Patient?identifier=sys|ABC-876") == ["anna"]
    assert ids(clinic, "/fhir/Patient?identifier=ABC-876") == ["anna"]
    assert ids(clinic, "/fhir/Patient?identifier:not=sys|ABC-876") == ["bob", "cleo"]
    assert ids(clinic, "/fhir/Patient?identifier=other|ABC-876") == []


def test_ids_and_codes_stay_case_sensitive(clinic: FlaskClient) -> None:
    """_id is an id, and administrative-gender and LOINC are case-sensitive code systems."""
    assert ids(clinic, "/fhir/Patient?_id=ANNA") == []
    assert ids(clinic, "/fhir/Patient?gender=FEMALE") == []
    assert ids(clinic, "/fhir/Observation?code=http://loinc.org|72514-3") == ["pain"]
    assert ids(clinic, "/fhir/Observation?status=FINAL") == []


# -- 3. and 4. _elements and _summary ---------------------------------------------------------

def test_elements_keeps_the_mandatory_elements(clinic: FlaskClient) -> None:
    """R4 search.html#elements: servers SHOULD always return mandatory elements (Observation:
    status 1..1, code 1..1), and tag the result SUBSETTED."""
    pain = clinic.get("/fhir/Observation?_elements=valueQuantity").json["entry"][0]["resource"]
    assert set(pain) == {"resourceType", "id", "meta", "status", "code", "valueQuantity"}
    assert SUBSETTED in pain["meta"]["tag"]
    by_element_name = clinic.get("/fhir/Observation?_elements=value").json["entry"][0]["resource"]
    assert set(by_element_name) == set(pain)


def test_summary_true_text_and_data(clinic: FlaskClient) -> None:
    """R4 search.html#summary: true = the elements marked summary in the base definition;
    text = text, id, meta and the top-level mandatory elements; data = all but text; each
    tagged SUBSETTED. Observation.category and note are not summary elements; Patient.contact neither."""
    def first(url: str) -> dict[str, Any]:
        r = clinic.get(url)
        assert r.status_code == 200, r.json
        return r.json["entry"][0]["resource"]

    summary = first("/fhir/Observation?_summary=true")
    assert set(summary) == {"resourceType", "id", "meta", "status", "code", "subject", "valueQuantity"}
    assert SUBSETTED in summary["meta"]["tag"]
    patient = first("/fhir/Patient?_id=anna&_summary=true")
    assert set(patient) == {"resourceType", "id", "meta", "gender", "birthDate", "telecom", "identifier"}
    text = first("/fhir/Observation?_summary=text")
    assert set(text) == {"resourceType", "id", "meta", "text", "status", "code"}
    data = first("/fhir/Observation?_summary=data")
    assert set(data) == (set(PAIN) | {"meta"}) - {"text"} and SUBSETTED in data["meta"]["tag"]
    full = first("/fhir/Observation?_summary=false")
    assert "text" in full and SUBSETTED not in full["meta"].get("tag", [])


# -- 5. DELETE of what never existed -----------------------------------------------------------

def test_delete_of_a_resource_that_never_existed_is_204_and_writes_nothing(clinic: FlaskClient) -> None:
    """R4 http.html#delete: "...or if the resource does not exist at all, the server should return
    either a 200 OK ... or a 204 No Content"."""
    assert clinic.delete("/fhir/Patient/never-was").status_code == 204
    assert clinic.get("/fhir/Patient/never-was").status_code == 404       # no deletion version made
    assert clinic.get("/fhir/Patient/never-was/_history").status_code == 404
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": "Patient/never-either"}}]}
    r = clinic.post("/fhir", json=batch, headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 200 and r.json["entry"][0]["response"]["status"].startswith("204")
    assert clinic.delete("/fhir/Patient/never-was", headers={"If-Match": 'W/"1"'}).status_code == 412


# -- 6. history _at and _since ------------------------------------------------------------------

def test_history_at_gives_the_versions_current_at_that_time(client: FlaskClient, clock: Any) -> None:
    """R4 http.html#history: _at "Only include resource versions that were current at some point
    during the time period specified in the date time value"; compared as served (milliseconds)."""
    clock.set(datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=timezone.utc))
    v1 = put(client, {"resourceType": "Patient", "id": "p", "gender": "female"})
    clock.advance(timedelta(hours=1))
    v2 = put(client, {"resourceType": "Patient", "id": "p", "gender": "male"})
    assert v1["meta"]["lastUpdated"] == "2026-11-30T10:00:00.123Z"

    def versions(query: str) -> list[str]:
        r = client.get(f"/fhir/Patient/p/_history?{query}")
        assert r.status_code == 200, r.json
        return [e["resource"]["meta"]["versionId"] for e in r.json["entry"]]

    assert versions(f"_at={v1['meta']['lastUpdated']}") == ["1"]
    assert versions("_at=2026-11-30T10:30:00Z") == ["1"]
    assert versions(f"_at={v2['meta']['lastUpdated']}") == ["2"]
    assert versions("_at=2026-11-30T12:00:00Z") == ["2"]
    assert versions("_at=2026-11-30T09:00:00Z") == []
    assert versions("_at=2026") == ["2", "1"]
    assert versions("_at=2026-11-30") == ["2", "1"]
    assert versions("_at=2026-12") == ["2"]
    assert versions("_at=2025") == []
    assert versions(f"_since={v1['meta']['lastUpdated']}") == ["2", "1"]
    assert versions(f"_since={v2['meta']['lastUpdated']}") == ["2"]
    assert client.get("/fhir/Patient/p/_history?_at=someday").status_code == 400
    assert client.get("/fhir/Patient/p/_history?_at=2026-11-30T10:00:00").status_code == 400   # no zone


# -- 7. repeated _sort and _count ------------------------------------------------------------------

def test_a_repeated_sort_is_applied_as_if_comma_joined(clinic: FlaskClient) -> None:
    """R4 search.html#sort: _sort=gender,-birthdate; repeated, it means the same here."""
    r = clinic.get("/fhir/Patient?_sort=gender&_sort=-birthdate").json
    assert [e["resource"]["id"] for e in r["entry"]] == ["cleo", "anna", "bob"]
    assert [p for p in self_link(r) if p[0] == "_sort"] == [("_sort", "gender"), ("_sort", "-birthdate")]
    joined = clinic.get("/fhir/Patient?_sort=gender,-birthdate").json
    assert [e["resource"]["id"] for e in joined["entry"]] == ["cleo", "anna", "bob"]


def test_a_repeated_count_is_refused_and_the_self_link_carries_the_count_used(clinic: FlaskClient) -> None:
    """R4: the self link SHALL carry the parameters actually used."""
    r = clinic.get("/fhir/Patient?_count=1&_count=3")
    assert r.status_code == 400 and r.json["issue"][0]["expression"] == ["_count"]
    capped = clinic.get("/fhir/Patient?_count=100000").json
    assert ("_count", "1000") in self_link(capped)
