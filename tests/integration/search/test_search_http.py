"""Search over HTTP through the Flask test client, on SQLite and PostgreSQL (the `app` and
`client` fixtures of tests/conftest.py): Bundles, links, POST _search, compartments,
$everything, outcomes, Prefer: handling=strict, _summary, _elements, the CapabilityStatement."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient


FHIR_JSON = "application/fhir+json"


@pytest.fixture
def web(client: FlaskClient) -> FlaskClient:
    """The test client (create_app registers the search routes)."""
    return client


def put(client: FlaskClient, resource: dict[str, Any]) -> None:
    r = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                   headers={"Content-Type": FHIR_JSON})
    assert r.status_code in (200, 201), r.json


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def patients(web: FlaskClient) -> FlaskClient:
    put(web, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Müller"}], "gender": "female",
              "identifier": [{"system": "urn:mrn", "value": "M1"}]})
    put(web, {"resourceType": "Patient", "id": "p2", "name": [{"family": "Doe"}], "gender": "male"})
    for i in range(7):
        put(web, {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [{"system": "http://snomed.info/sct", "code": "22222"}]},
                  "onsetDateTime": f"2026-02-{10 + i:02d}"})
    put(web, {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "pain"},
              "subject": {"reference": "Patient/p1"}, "focus": [{"reference": "Condition/c0"}]})
    put(web, {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "pain"},
              "subject": {"reference": "Patient/p2"}})
    return web


def test_searchset_bundle(patients: FlaskClient) -> None:
    r = patients.get("/fhir/Condition?patient=p1&_count=3&_include=Condition:subject&_total=accurate")
    assert r.status_code == 200 and r.mimetype == FHIR_JSON
    bundle = r.json
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 7
    modes = [e["search"]["mode"] for e in bundle["entry"]]
    assert modes == ["match"] * 3 + ["include"]
    first = bundle["entry"][0]
    assert first["fullUrl"] == f"http://toh.test/fhir/Condition/{first['resource']['id']}"
    assert first["resource"] == patients.get(f"/fhir/Condition/{first['resource']['id']}").json
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"].startswith("http://toh.test/fhir/Condition?patient=p1&_count=3")
    assert "next" in links and "previous" not in links


def test_following_next_and_previous_links(patients: FlaskClient) -> None:
    url, ids, pages = "/fhir/Condition?patient=p1&_count=3&_sort=-onset-date", [], []
    while url:
        bundle = patients.get(url).json
        pages.append(bundle)
        ids += [e["resource"]["id"] for e in bundle["entry"]]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = local(nxt[0]) if nxt else ""
        if len(pages) == 1:   # a write between pages changes nothing
            put(patients, {"resourceType": "Condition", "id": "c-new", "subject": {"reference": "Patient/p1"},
                           "onsetDateTime": "2027-01-01"})
    assert ids == [f"c{i}" for i in range(6, -1, -1)]
    prev = [link["url"] for link in pages[-1]["link"] if link["relation"] == "previous"][0]
    back = patients.get(local(prev)).json
    assert [e["resource"]["id"] for e in back["entry"]] == ["c3", "c2", "c1"]
    self_link = [link["url"] for link in pages[1]["link"] if link["relation"] == "self"][0]
    assert patients.get(local(self_link)).json["entry"] == pages[1]["entry"]


def test_post_search_with_a_form_body(patients: FlaskClient) -> None:
    r = patients.post("/fhir/Patient/_search", data={"family": "muller"})
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json["entry"]] == ["p1"]
    assert r.json["link"][0]["url"] == "http://toh.test/fhir/Patient?family=muller"


def test_compartment_everything_and_history_routes(patients: FlaskClient) -> None:
    comp = patients.get("/fhir/Patient/p1/Observation").json
    assert [e["resource"]["id"] for e in comp["entry"]] == ["o1"]
    assert comp["link"][0]["url"] == "http://toh.test/fhir/Patient/p1/Observation"
    everything = patients.get("/fhir/Patient/p1/$everything?_count=100").json
    assert {e["resource"]["id"] for e in everything["entry"]} == {"p1", "o1"} | {f"c{i}" for i in range(7)}
    typed = patients.get("/fhir/Patient/p1/$everything?_type=Observation").json
    assert [e["resource"]["id"] for e in typed["entry"]] == ["o1"]
    assert patients.get("/fhir/Patient/nobody/$everything").status_code == 404
    history = patients.get("/fhir/Patient/p1/_history")
    assert history.status_code == 200 and history.json["type"] == "history"
    assert patients.get("/fhir/Patient/p1").json["id"] == "p1"


def test_unknown_parameters_are_reported_or_refused(patients: FlaskClient) -> None:
    bundle = patients.get("/fhir/Patient?gender=female&shoe-size=42&_sort=shoe-size").json
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "outcome"]
    outcome = bundle["entry"][-1]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [["shoe-size"], ["_sort"]]
    assert all(i["diagnostics"].endswith("(ignored)") for i in outcome["issue"])
    assert "shoe-size" not in bundle["link"][0]["url"]
    strict = patients.get("/fhir/Patient?gender=female&shoe-size=42", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json["resourceType"] == "OperationOutcome"
    assert strict.json["issue"][0]["severity"] == "error"
    assert "ignored" not in strict.json["issue"][0]["diagnostics"]
    lenient = patients.get("/fhir/Patient?gender=female", headers={"Prefer": "handling=strict"})
    assert lenient.status_code == 200
    assert patients.get("/fhir/NoSuchType?x=1").status_code == 404
    assert patients.get("/fhir/Patient?_cursor=garbage").status_code == 400


def test_summary_count_and_elements(patients: FlaskClient) -> None:
    count = patients.get("/fhir/Condition?_summary=count").json
    assert count["total"] == 7 and "entry" not in count
    subset = patients.get("/fhir/Patient?_id=p1&_elements=gender").json["entry"][0]["resource"]
    assert set(subset) == {"resourceType", "id", "meta", "gender"}
    assert subset["meta"]["tag"][-1]["code"] == "SUBSETTED"


def test_conditional_create_uses_search(patients: FlaskClient) -> None:
    r = patients.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "X"}]},
                      headers={"If-None-Exist": "identifier=urn:mrn|M1", "Content-Type": FHIR_JSON})
    assert r.status_code == 200 and r.json["id"] == "p1"


def test_capability_statement_lists_search_parameters(web: FlaskClient) -> None:
    cs = web.get("/fhir/metadata").json
    condition = next(r for r in cs["rest"][0]["resource"] if r["type"] == "Condition")
    params = {p["name"]: p for p in condition["searchParam"]}
    assert params["onset-date"]["type"] == "date"
    assert params["patient"]["definition"] == "http://hl7.org/fhir/SearchParameter/clinical-patient"
    assert {"code": "search-type"} in condition["interaction"]
