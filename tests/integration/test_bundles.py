"""Batch and transaction Bundles (POST /fhir) over HTTP, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from service.fhir.errors import Unprocessable
from tests.data.synthea.generator import synthea_bundle

FHIR = "application/fhir+json"
BASE = "http://toh.test/fhir"
MRN = "http://hospital.example/mrn"


def post_bundle(client, bundle: Any, path: str = "/fhir", **headers: str):  # type: ignore[no-untyped-def]
    data = bundle if isinstance(bundle, (str, bytes)) else json.dumps(bundle)
    return client.post(path, data=data, headers={"Content-Type": FHIR, **headers})


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(method: str, url: str, resource: dict[str, Any] | None = None, full_url: str | None = None,
          **request: str) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


def condition(subject: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "code": {"text": "Transient osteoporosis of the left hip"},
            "subject": {"reference": subject}, **fields}


def history_keys(client) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(fullUrl, etag) of every stored version, deletions included, but the Provenance the
    service records of each write."""
    history = client.get("/fhir/_history?_count=1000").get_json()
    assert history["total"] == len(history["entry"])
    return {(e["fullUrl"], e["response"]["etag"]) for e in history["entry"] if not _service_provenance(e)}


def _service_provenance(entry: dict[str, Any]) -> bool:
    """Whether a history entry is a Provenance the service recorded (its agents name them)."""
    resource = entry.get("resource") or {}
    return resource.get("resourceType") == "Provenance" and any(
        (a.get("who") or {}).get("identifier", {}).get("system") == "urn:toh:agent" for a in resource.get("agent", []))


@pytest.fixture
def written(client):  # type: ignore[no-untyped-def]
    """How many versions were stored since the test began (the guide's resources are preloaded)."""
    before = history_keys(client)
    return lambda: len(history_keys(client) - before)


def read_back(client, response_entries: list[dict[str, Any]]) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The stored current version of every resource a response Bundle names."""
    found = []
    for item in response_entries:
        got = client.get(item["fullUrl"].replace(BASE, "/fhir"))
        assert got.status_code == 200, item
        found.append(got.get_json())
    return found


def references(value: Any) -> list[str]:
    """Every `reference` string anywhere inside value."""
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [ref for key, item in value.items() if key != "reference" for ref in references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references(item)]
    return []


def assert_every_reference_resolves(client, resources: list[dict[str, Any]]) -> int:  # type: ignore[no-untyped-def]
    """Every reference in resources is Type/id of a stored resource; returns how many there are."""
    seen: set[str] = set()
    total = 0
    for resource in resources:
        for ref in references(resource):
            total += 1
            assert ref.count("/") == 1 and not ref.startswith("urn:"), f"{ref} in {resource['resourceType']}"
            if ref not in seen:
                assert client.get(f"/fhir/{ref}").status_code == 200, ref
                seen.add(ref)
    return total


def outcome_of(response, status: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == FHIR
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body


# -- transactions ---------------------------------------------------------------------------

def test_transaction_resolves_urn_references_at_any_depth_and_forward(client) -> None:  # type: ignore[no-untyped-def]
    """References to entries listed later, in extensions and nested elements, urn:uuid and urn:oid."""
    tx = bundle(
        "transaction",
        entry("POST", "Condition", condition(
            "urn:uuid:7f0b-patient",
            evidence=[{"detail": [{"reference": "urn:oid:1.2.3.4.5"}]}],
            extension=[{"url": "http://example.org/seen-by", "valueReference": {"reference": "urn:uuid:7f0b-gp"}}]),
            full_url="urn:uuid:7f0b-condition"),
        entry("POST", "Observation", {"resourceType": "Observation", "id": "client-id-ignored", "status": "final",
                                       "code": {"text": "MRI hip"}, "subject": {"reference": "urn:uuid:7f0b-patient"}},
              full_url="urn:oid:1.2.3.4.5"),
        entry("POST", "Patient", patient(generalPractitioner=[{"reference": "urn:uuid:7f0b-gp"}]),
              full_url="urn:uuid:7f0b-patient"),
        entry("POST", "Practitioner", {"resourceType": "Practitioner"}, full_url="urn:uuid:7f0b-gp"),
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    ids = {e["resource"]["resourceType"]: e["resource"]["id"] for e in body["entry"]}
    assert ids["Observation"] != "client-id-ignored"
    stored = client.get(f"/fhir/Condition/{ids['Condition']}").get_json()
    assert stored["subject"]["reference"] == f"Patient/{ids['Patient']}"
    assert stored["evidence"][0]["detail"][0]["reference"] == f"Observation/{ids['Observation']}"
    assert stored["extension"][0]["valueReference"]["reference"] == f"Practitioner/{ids['Practitioner']}"
    assert client.get(f"/fhir/Patient/{ids['Patient']}").get_json()["generalPractitioner"][0]["reference"] \
        == f"Practitioner/{ids['Practitioner']}"
    assert assert_every_reference_resolves(client, read_back(client, body["entry"])) == 5


def test_transaction_response_in_original_order_after_r4_processing_order(client) -> None:  # type: ignore[no-untyped-def]
    """GET runs after PUT, PUT after POST, DELETE first; entries answer in the order sent."""
    post_bundle(client, bundle("transaction", entry("PUT", "Patient/old", patient(id="old")),
                               entry("PUT", "Patient/kept", patient(id="kept", gender="male"))))
    tx = bundle(
        "transaction",
        entry("GET", "Patient/kept"),
        entry("PUT", "Patient/kept", patient(id="kept", gender="female"), **{"ifMatch": 'W/"1"'}),
        entry("POST", "Condition", condition("Patient/kept"), full_url="urn:uuid:c-1"),
        entry("DELETE", "Patient/old"),
        entry("GET", "Patient/kept/_history/1"),
        entry("HEAD", "Patient/kept"),
    )
    response = post_bundle(client, tx, path="/fhir/")  # with the trailing slash clients use
    assert response.status_code == 200, response.get_data(as_text=True)
    got = response.get_json()["entry"]
    assert [e["response"]["status"] for e in got] == ["200 OK", "200 OK", "201 Created", "204 No Content",
                                                      "200 OK", "200 OK"]
    assert got[0]["resource"]["gender"] == "female" and got[0]["response"]["etag"] == 'W/"2"'
    assert got[1]["response"]["location"] == f"{BASE}/Patient/kept/_history/2"
    assert got[1]["fullUrl"] == f"{BASE}/Patient/kept"
    condition_id = got[2]["resource"]["id"]
    assert got[2]["response"]["location"] == f"{BASE}/Condition/{condition_id}/_history/1"
    assert got[2]["response"]["etag"] == 'W/"1"' and got[2]["response"]["lastModified"].endswith("Z")
    assert got[3]["response"]["etag"] == 'W/"2"' and "resource" not in got[3]
    assert got[4]["resource"]["gender"] == "male"
    assert "resource" not in got[5] and got[5]["response"]["etag"] == 'W/"2"'
    assert client.get("/fhir/Patient/old").status_code == 410


def test_prefer_return_minimal_leaves_resources_out(client) -> None:  # type: ignore[no-untyped-def]
    tx = bundle("transaction", entry("POST", "Patient", patient(), full_url="urn:uuid:p"),
                entry("POST", "Condition", condition("urn:uuid:p")))
    got = post_bundle(client, tx, Prefer="return=minimal").get_json()["entry"]
    assert all("resource" not in e and e["response"]["status"] == "201 Created" for e in got)
    assert all(e["response"]["location"].startswith(BASE) for e in got)


def test_transaction_of_100_entries_referencing_each_other(client, written) -> None:  # type: ignore[no-untyped-def]
    """A chain of 100 resources, each pointing to the previous and the next by urn:uuid."""
    n = 100
    entries = [entry("POST", "Patient", patient(link=[{"type": "seealso", "other": {"reference": f"urn:uuid:e-{j}"}}
                                                      for j in (i - 1, i + 1) if 0 <= j < n]),
                     full_url=f"urn:uuid:e-{i}") for i in range(n)]
    response = post_bundle(client, bundle("transaction", *entries))
    assert response.status_code == 200, response.get_data(as_text=True)
    got = response.get_json()["entry"]
    assert len(got) == n and all(e["response"]["status"] == "201 Created" for e in got)
    ids = [e["resource"]["id"] for e in got]
    middle = client.get(f"/fhir/Patient/{ids[50]}").get_json()
    assert [link["other"]["reference"] for link in middle["link"]] == [f"Patient/{ids[49]}", f"Patient/{ids[51]}"]
    assert written() == n
    assert assert_every_reference_resolves(client, read_back(client, got)) == 2 * (n - 1)


def _failing(kind: str) -> tuple[dict[str, Any], int]:
    """An entry that fails, and the status it must fail with."""
    return {
        "invalid": (entry("POST", "Patient", patient(birthDate="yesterday"), full_url="urn:uuid:bad"), 422),
        "unknown": (entry("GET", "Patient/never-there", full_url="urn:uuid:bad"), 404),
        "stale": (entry("PUT", "Patient/seed", patient(id="seed"), full_url="urn:uuid:bad", ifMatch='W/"9"'), 412),
        "dangling": (entry("POST", "Condition", condition("urn:uuid:nobody"), full_url="urn:uuid:bad"), 400),
        "patch": (entry("PATCH", "Patient/seed", full_url="urn:uuid:bad"), 405),
        "no-url": ({"fullUrl": "urn:uuid:bad", "request": {"method": "POST"}, "resource": patient()}, 400),
        "search": (entry("GET", "Patient?name=x&_cursor=not-a-cursor", full_url="urn:uuid:bad"), 400),
    }[kind]


@pytest.mark.parametrize("kind", ["invalid", "unknown", "stale", "dangling", "patch", "no-url", "search"])
def test_transaction_failing_half_way_leaves_nothing_behind(client, kind: str) -> None:  # type: ignore[no-untyped-def]
    post_bundle(client, bundle("transaction", entry("PUT", "Patient/seed", patient(id="seed"))))
    before = client.get("/fhir/_history").get_json()
    good = [entry("POST", "Condition", condition(f"urn:uuid:p-{i}"), full_url=f"urn:uuid:c-{i}") for i in range(30)]
    good += [entry("POST", "Patient", patient(), full_url=f"urn:uuid:p-{i}") for i in range(30)]
    good += [entry("PUT", f"Patient/new-{i}", patient(id=f"new-{i}")) for i in range(10)]
    good += [entry("DELETE", "Patient/seed")]
    bad, status = _failing(kind)
    if kind == "stale":
        good.pop()  # that entry writes Patient/seed itself
    tx = bundle("transaction", *good[:50], bad, *good[50:])
    body = outcome_of(post_bundle(client, tx), status)
    issue = body["issue"][0]
    assert "Bundle.entry[50]" in issue["diagnostics"] and "urn:uuid:bad" in issue["diagnostics"]
    assert issue["expression"][0] == "Bundle.entry[50]"
    assert client.get("/fhir/_history").get_json() == before
    assert client.get("/fhir/Patient/new-0").status_code == 404
    assert client.get("/fhir/Patient/seed").status_code == 200


def test_invalid_resource_reports_its_fhirpath_inside_the_entry(client, written) -> None:  # type: ignore[no-untyped-def]
    tx = bundle("transaction", entry("POST", "Patient", patient()),
                entry("POST", "Patient", patient(birthDate="yesterday"), full_url="urn:uuid:x"))
    body = outcome_of(post_bundle(client, tx), 422)
    assert body["issue"][0]["expression"][:2] == ["Bundle.entry[1]", "Bundle.entry[1].resource.birthDate"]
    assert written() == 0


def test_same_full_url_twice_or_a_resource_written_twice_is_400(client, written) -> None:  # type: ignore[no-untyped-def]
    twice = bundle("transaction", entry("POST", "Patient", patient(), full_url="urn:uuid:same"),
                   entry("POST", "Patient", patient(), full_url="urn:uuid:same"))
    assert "urn:uuid:same" in outcome_of(post_bundle(client, twice), 400)["issue"][0]["diagnostics"]
    written_twice = bundle("transaction", entry("PUT", "Patient/a", patient(id="a")),
                           entry("DELETE", "Patient/a"))
    issue = outcome_of(post_bundle(client, written_twice), 400)["issue"][0]
    assert "Patient/a" in issue["diagnostics"] and issue["expression"][0] == "Bundle.entry[1]"
    assert written() == 0


@pytest.mark.parametrize("body, status", [
    ({"resourceType": "Patient"}, 400),
    ({"resourceType": "Bundle", "type": "collection", "entry": []}, 400),
    ({"resourceType": "Bundle", "type": "transaction", "entry": {"not": "a list"}}, 400),
    ("[1, 2]", 400),
    ("{not json", 400),
])
def test_not_a_batch_or_transaction_is_400(client, body: Any, status: int) -> None:  # type: ignore[no-untyped-def]
    outcome_of(post_bundle(client, body), status)


def test_empty_transaction_answers_an_empty_response(client) -> None:  # type: ignore[no-untyped-def]
    response = post_bundle(client, {"resourceType": "Bundle", "type": "transaction"})
    assert response.status_code == 200 and response.get_json()["entry"] == []


def test_too_many_entries_is_413(app, client, written) -> None:  # type: ignore[no-untyped-def]
    svc = app.extensions["toh"]
    svc.settings = svc.settings.with_overrides({"max_bundle_entries": 5})
    five = [entry("POST", "Patient", patient()) for _ in range(5)]
    assert post_bundle(client, bundle("batch", *five)).status_code == 200
    body = outcome_of(post_bundle(client, bundle("transaction", *five, entry("POST", "Patient", patient()))), 413)
    assert "at most 5" in body["issue"][0]["diagnostics"]
    assert written() == 5


# -- conditional requests -----------------------------------------------------------------

def test_conditional_create_maps_the_full_url_to_the_existing_resource(client, written) -> None:  # type: ignore[no-untyped-def]
    first = post_bundle(client, bundle("transaction", entry("POST", "Patient", patient(
        identifier=[{"system": MRN, "value": "123"}]))))
    existing = first.get_json()["entry"][0]["resource"]["id"]
    tx = bundle("transaction",
                entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "123"}]),
                      full_url="urn:uuid:p", ifNoneExist=f"identifier={MRN}|123"),
                entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "456"}]),
                      full_url="urn:uuid:q", ifNoneExist=f"Patient?identifier={MRN}|456"),
                entry("POST", "Condition", condition("urn:uuid:p")),
                entry("POST", "Condition", condition("urn:uuid:q")))
    got = post_bundle(client, tx).get_json()["entry"]
    assert [e["response"]["status"] for e in got] == ["200 OK", "201 Created", "201 Created", "201 Created"]
    assert got[0]["resource"]["id"] == existing and got[0]["response"]["etag"] == 'W/"1"'
    assert got[2]["resource"]["subject"]["reference"] == f"Patient/{existing}"
    assert got[3]["resource"]["subject"]["reference"] == f"Patient/{got[1]['resource']['id']}"
    assert written() == 4


def test_conditional_update_creates_updates_or_refuses(client, written) -> None:  # type: ignore[no-untyped-def]
    def upsert(value: str, **fields: Any):  # type: ignore[no-untyped-def]
        return post_bundle(client, bundle("transaction", entry(
            "PUT", f"Patient?identifier={MRN}|{value}",
            patient(identifier=[{"system": MRN, "value": value}], **fields), full_url="urn:uuid:p"),
            entry("POST", "Condition", condition("urn:uuid:p"))))

    created = upsert("1", gender="male")
    assert created.status_code == 200, created.get_data(as_text=True)
    got = created.get_json()["entry"]
    assert got[0]["response"]["status"] == "201 Created"
    pid = got[0]["resource"]["id"]
    assert got[1]["resource"]["subject"]["reference"] == f"Patient/{pid}"

    updated = upsert("1", gender="female").get_json()["entry"]
    assert updated[0]["response"]["status"] == "200 OK" and updated[0]["resource"]["id"] == pid
    assert updated[0]["response"]["etag"] == 'W/"2"' and updated[0]["resource"]["gender"] == "female"

    post_bundle(client, bundle("batch", *[entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "2"}]))
                                          for _ in range(2)]))
    before = written()
    assert outcome_of(upsert("2"), 412)["issue"][0]["expression"][0] == "Bundle.entry[0]"
    assert written() == before


def test_conditional_reference_resolves_in_the_bundle_or_the_store(client) -> None:  # type: ignore[no-untyped-def]
    post_bundle(client, bundle("transaction", entry("PUT", "Patient/known", patient(
        id="known", identifier=[{"system": MRN, "value": "k"}]))))
    tx = bundle("transaction",
                entry("POST", "Condition", condition(f"Patient?identifier={MRN}|k")),
                entry("POST", "Condition", condition(f"Patient?identifier={MRN}|fresh")),
                entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "fresh"}]),
                      ifNoneExist=f"identifier={MRN}|fresh"))
    got = post_bundle(client, tx).get_json()["entry"]
    assert got[0]["resource"]["subject"]["reference"] == "Patient/known"
    assert got[1]["resource"]["subject"]["reference"] == f"Patient/{got[2]['resource']['id']}"
    missing = bundle("transaction", entry("POST", "Condition", condition(f"Patient?identifier={MRN}|nobody")))
    assert "matches no resource" in outcome_of(post_bundle(client, missing), 412)["issue"][0]["diagnostics"]


# -- search entries -------------------------------------------------------------------------

LOINC = "http://loinc.org"


def observation(subject: str, code: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": subject},
            "code": {"coding": [{"system": LOINC, "code": code}]}, **fields}


def ids_of(searchset: dict[str, Any], mode: str = "match") -> list[str]:
    return sorted(e["resource"]["id"] for e in searchset.get("entry", []) if e["search"]["mode"] == mode)


def test_transaction_searches_run_last_and_see_its_own_writes(client) -> None:  # type: ignore[no-untyped-def]
    """Searches listed first still run after the DELETE, POSTs and PUT of the same transaction."""
    post_bundle(client, bundle("transaction",
                               entry("PUT", "Patient/p1", patient(id="p1", identifier=[{"system": "urn:mrn",
                                                                                        "value": "1"}])),
                               entry("PUT", "Observation/old", observation("Patient/p1", "8867-4", id="old")),
                               entry("PUT", "Observation/other", observation("Patient/p2", "8867-4", id="other"))))
    tx = bundle(
        "transaction",
        entry("GET", f"Observation?patient=Patient/p1&code={LOINC}|8867-4&_count=1&_total=accurate"
                     "&_include=Observation:subject"),
        entry("GET", "Patient?identifier=urn:mrn|1&gender=female"),
        entry("PUT", "Patient/p1", patient(id="p1", gender="female", identifier=[{"system": "urn:mrn", "value": "1"}])),
        entry("POST", "Observation", observation("Patient/p1", "8867-4"), full_url="urn:uuid:o1"),
        entry("POST", "Observation", observation("urn:uuid:p-ref", "8867-4")),
        entry("POST", "Observation", observation("Patient/p1", "9279-1")),
        entry("DELETE", "Observation/old"),
        entry("GET", f"{BASE}/Observation?patient=p1"),
        entry("HEAD", "Patient?identifier=urn:mrn|1"),
        entry("PUT", "Patient/p-ref", patient(id="p-ref"), full_url="urn:uuid:p-ref"),
    )
    response = post_bundle(client, tx)
    assert response.status_code == 200, response.get_data(as_text=True)
    got = response.get_json()["entry"]
    assert [e["response"]["status"] for e in got] == ["200 OK"] * 3 + ["201 Created"] * 3 + ["204 No Content",
                                                      "200 OK", "200 OK", "201 Created"]
    heart = got[0]["resource"]
    assert heart["resourceType"] == "Bundle" and heart["type"] == "searchset" and heart["total"] == 1
    assert ids_of(heart) == [got[3]["resource"]["id"]] and ids_of(heart, "include") == ["p1"]
    assert heart["entry"][0]["fullUrl"] == f"{BASE}/Observation/{got[3]['resource']['id']}"
    assert "fullUrl" not in got[0] and "location" not in got[0]["response"]
    links = {link["relation"]: link["url"] for link in heart["link"]}
    assert links["self"].startswith(f"{BASE}/Observation?patient=Patient%2Fp1&code=") and "next" not in links
    women = got[1]["resource"]
    assert ids_of(women) == ["p1"] and women["entry"][0]["resource"]["meta"]["versionId"] == "2"
    assert ids_of(got[7]["resource"]) == sorted([got[3]["resource"]["id"], got[5]["resource"]["id"]])
    assert "resource" not in got[8]
    # the search saw the committed state: the same search over REST now answers the same
    again = client.get(f"/fhir/Observation?patient=Patient/p1&code={LOINC}|8867-4").get_json()
    assert ids_of(again) == ids_of(heart)


def test_a_search_entry_pages_like_the_search_route(client) -> None:  # type: ignore[no-untyped-def]
    """A search entry's next link, followed over REST after the commit, gives the next page."""
    tx = bundle("transaction", *[entry("POST", "Observation", observation("Patient/p1", "8867-4"))
                                 for _ in range(3)],
                entry("GET", "Observation?patient=p1&_count=2&_sort=_lastUpdated"))
    got = post_bundle(client, tx).get_json()["entry"]
    first = got[3]["resource"]
    assert len(first["entry"]) == 2 and "total" not in first
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(next_url.replace(BASE, "/fhir")).get_json()
    assert sorted(ids_of(first) + ids_of(second)) == sorted(e["resource"]["id"] for e in got[:3])


def test_batch_search_entries_succeed_or_fail_on_their_own(client, written) -> None:  # type: ignore[no-untyped-def]
    batch = bundle(
        "batch",
        entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "b1"}]), full_url="urn:uuid:ok"),
        entry("POST", "Patient", patient(identifier=[{"system": MRN, "value": "b1"}], birthDate="nonsense")),
        entry("GET", f"Patient?identifier={MRN}|b1"),
        entry("GET", "Patient?_cursor=not-a-cursor"),
        entry("GET", "NoSuchType?name=x"),
        entry("GET", "Patient?no-such-parameter=1&identifier=" + MRN + "|b1"),
        entry("HEAD", "Patient"),
    )
    response = post_bundle(client, batch)
    assert response.status_code == 200, response.get_data(as_text=True)
    got = response.get_json()["entry"]
    assert [e["response"]["status"] for e in got] == ["201 Created", "422 Unprocessable Entity", "200 OK",
                                                      "400 Bad Request", "404 Not Found", "200 OK", "200 OK"]
    assert ids_of(got[2]["resource"]) == [got[0]["resource"]["id"]]
    assert got[3]["response"]["outcome"]["issue"][0]["expression"] == ["_cursor"]
    lenient = got[5]["resource"]
    assert ids_of(lenient) == [got[0]["resource"]["id"]]
    outcome = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "no-such-parameter" in outcome[0]["issue"][0]["diagnostics"]
    assert "resource" not in got[6]
    assert written() == 1


def test_a_malformed_search_fails_the_whole_transaction(client, written) -> None:  # type: ignore[no-untyped-def]
    tx = bundle("transaction", entry("POST", "Patient", patient(), full_url="urn:uuid:p"),
                entry("POST", "Condition", condition("urn:uuid:p")),
                entry("GET", "Condition?patient=urn:uuid:p&_cursor=not-a-cursor", full_url="urn:uuid:search"))
    issue = outcome_of(post_bundle(client, tx), 400)["issue"][0]
    assert issue["expression"][0] == "Bundle.entry[2]" and "Bundle.entry[2] (urn:uuid:search)" in issue["diagnostics"]
    unknown_type = bundle("transaction", entry("POST", "Patient", patient()), entry("GET", "NoSuchType?name=x"))
    assert outcome_of(post_bundle(client, unknown_type), 404)["issue"][0]["expression"][0] == "Bundle.entry[1]"
    assert written() == 0


def test_prefer_handling_strict_refuses_unknown_search_parameters(client, written) -> None:  # type: ignore[no-untyped-def]
    """Lenient (the default): the parameter is ignored and reported in the searchset; strict: 400."""
    def tx() -> dict[str, Any]:
        return bundle("transaction", entry("POST", "Patient", patient(gender="male")),
                      entry("GET", "Patient?gender=male&no-such-parameter=1"))

    lenient = post_bundle(client, tx(), Prefer="return=minimal")
    assert lenient.status_code == 200, lenient.get_data(as_text=True)
    got = lenient.get_json()["entry"]
    assert "resource" not in got[0]  # return=minimal leaves written resources out, never a search's Bundle
    modes = [e["search"]["mode"] for e in got[1]["resource"]["entry"]]
    assert modes == ["match", "outcome"]
    assert written() == 1

    issue = outcome_of(post_bundle(client, tx(), Prefer="handling=strict"), 400)["issue"][0]
    assert issue["expression"][0] == "Bundle.entry[1]" and "no-such-parameter" in issue["diagnostics"]
    assert written() == 1

    strict_batch = post_bundle(client, bundle("batch", *tx()["entry"]), Prefer="handling=strict").get_json()["entry"]
    assert [e["response"]["status"] for e in strict_batch] == ["201 Created", "400 Bad Request"]
    assert written() == 2


# -- batches --------------------------------------------------------------------------------

class FailOnMarker:
    """A write hook that fails after the row is written, for resources carrying a marker."""

    def on_write(self, conn, change) -> None:  # type: ignore[no-untyped-def]
        if change.resource and change.resource.get("language") == "x-fail":
            raise Unprocessable("refused by a write hook")


def test_batch_entries_are_independent(app, client, written) -> None:  # type: ignore[no-untyped-def]
    app.extensions["toh"].database.add_hook(FailOnMarker())
    post_bundle(client, bundle("batch", entry("PUT", "Patient/p", patient(id="p"))))
    assert written() == 1
    batch = bundle(
        "batch",
        entry("POST", "Patient", patient(gender="female"), full_url="urn:uuid:ok"),
        entry("POST", "Patient", patient(birthDate="nonsense")),
        entry("POST", "Condition", condition("urn:uuid:ok")),
        entry("PUT", "Patient/p", patient(id="p"), ifMatch='W/"7"'),
        entry("POST", "Patient", patient(language="x-fail"), full_url="urn:uuid:hooked"),
        entry("GET", "Patient/missing"),
        entry("PATCH", "Patient/p"),
        {"request": {"method": "GET"}},
        entry("POST", "Condition", condition("urn:uuid:hooked")),
        entry("DELETE", "Patient/p"),
    )
    response = post_bundle(client, batch)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["type"] == "batch-response"
    got = body["entry"]
    assert [e["response"]["status"] for e in got] == [
        "201 Created", "422 Unprocessable Entity", "201 Created", "412 Precondition Failed",
        "422 Unprocessable Entity", "404 Not Found", "405 Method Not Allowed", "400 Bad Request",
        "400 Bad Request", "204 No Content"]
    for failed in (1, 3, 4, 5, 6, 7, 8):
        assert got[failed]["response"]["outcome"]["resourceType"] == "OperationOutcome"
        assert "resource" not in got[failed]
    assert got[2]["resource"]["subject"]["reference"] == f"Patient/{got[0]['resource']['id']}"
    # the hooked entry was written, then rolled back to its savepoint; the others stayed
    assert written() == 1 + 3  # Patient/p, then the new Patient, its Condition and p's deletion
    assert client.get("/fhir/Patient/p").status_code == 410


def test_transaction_undoes_writes_of_write_hooks_too(app, client, written) -> None:  # type: ignore[no-untyped-def]
    app.extensions["toh"].database.add_hook(FailOnMarker())
    tx = bundle("transaction", *[entry("POST", "Patient", patient()) for _ in range(20)],
                entry("POST", "Patient", patient(language="x-fail"), full_url="urn:uuid:hooked"))
    assert "Bundle.entry[20] (urn:uuid:hooked)" in outcome_of(post_bundle(client, tx), 422)["issue"][0]["diagnostics"]
    assert written() == 0


# -- realistic bundles and the CapabilityStatement -------------------------------------------

def test_synthea_style_bundle_loads_whole(client, written) -> None:  # type: ignore[no-untyped-def]
    synthea = synthea_bundle(seed=7, encounters=4)
    response = post_bundle(client, synthea)
    assert response.status_code == 200, response.get_data(as_text=True)
    got = response.get_json()["entry"]
    assert len(got) == len(synthea["entry"]) and all(e["response"]["status"] == "201 Created" for e in got)
    stored = read_back(client, got)
    kinds = Counter(r["resourceType"] for r in stored)
    assert kinds == Counter(e["resource"]["resourceType"] for e in synthea["entry"])
    assert {"Claim", "ExplanationOfBenefit", "Procedure", "Encounter", "Immunization", "CarePlan"} <= set(kinds)
    assert assert_every_reference_resolves(client, stored) > 200
    loaded = written()
    assert loaded >= len(synthea["entry"])

    # The same patient's next export: Organization and Practitioner are matched, not duplicated.
    next_export = synthea_bundle(seed=7, encounters=2)
    again = post_bundle(client, next_export).get_json()["entry"]
    assert [e["response"]["status"] for e in again[:2]] == ["200 OK", "200 OK"]
    assert [e["fullUrl"] for e in again[:2]] == [e["fullUrl"] for e in got[:2]]
    assert all(e["response"]["status"] == "201 Created" for e in again[2:])
    assert written() >= loaded + len(next_export["entry"]) - 2
    assert_every_reference_resolves(client, read_back(client, again))


def test_capability_statement_lists_batch_and_transaction(client) -> None:  # type: ignore[no-untyped-def]
    statement = client.get("/fhir/metadata").get_json()
    codes = {i["code"] for i in statement["rest"][0]["interaction"]}
    assert {"batch", "transaction"} <= codes
