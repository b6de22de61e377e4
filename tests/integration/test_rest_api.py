"""The FHIR REST interactions over HTTP (Flask test client), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

FHIR = "application/fhir+json"


def post(client, path: str, body: Any, **headers: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, headers={"Content-Type": FHIR, **headers})


def put(client, path: str, body: Any, **headers: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.put(path, data=data, headers={"Content-Type": FHIR, **headers})


def guide_size(client) -> int:  # type: ignore[no-untyped-def]
    """How many resources of the TOH guide the service installed at start-up."""
    return len(client.application.extensions["toh"].conformance.resources)


def count_resources(client) -> int:  # type: ignore[no-untyped-def]
    """Versions written by clients (the system history less the installed guide and the
    Provenance the service records of every write)."""
    provenance = client.get("/fhir/Provenance/_history").get_json()["total"]
    return client.get("/fhir/_history").get_json()["total"] - guide_size(client) - provenance


def assert_outcome(response, status: int, code: str | None = None) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == FHIR
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    if code:
        assert body["issue"][0]["code"] == code
    return body


CONDITION = {
    "resourceType": "Condition",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                   "code": "active"}]},
    "code": {"text": "Transient osteoporosis of the left hip"},
    "subject": {"reference": "Patient/p1"},
    "onsetDateTime": "2026-01-02",
}


def test_create_read_update_delete_cycle(client) -> None:  # type: ignore[no-untyped-def]
    created = post(client, "/fhir/Condition", CONDITION)
    assert created.status_code == 201
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Last-Modified"]
    body = created.get_json()
    assert created.headers["Location"] == f"http://toh.test/fhir/Condition/{body['id']}/_history/1"
    assert body["meta"]["versionId"] == "1"

    read = client.get(f"/fhir/Condition/{body['id']}")
    assert read.status_code == 200 and read.get_json() == body and read.mimetype == FHIR

    changed = dict(body, onsetDateTime="2026-01-01")
    updated = put(client, f"/fhir/Condition/{body['id']}", changed, **{"If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.headers["ETag"] == 'W/"2"'
    assert client.get(f"/fhir/Condition/{body['id']}/_history/1").get_json()["onsetDateTime"] == "2026-01-02"
    assert client.get(f"/fhir/Condition/{body['id']}/_history/2").get_json()["onsetDateTime"] == "2026-01-01"

    history = client.get(f"/fhir/Condition/{body['id']}/_history").get_json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']

    assert client.delete(f"/fhir/Condition/{body['id']}").status_code == 204
    assert_outcome(client.get(f"/fhir/Condition/{body['id']}"), 410, "deleted")
    history = client.get(f"/fhir/Condition/{body['id']}/_history").get_json()
    assert history["total"] == 3 and history["entry"][0]["request"]["method"] == "DELETE"


def test_put_to_new_id_creates(client) -> None:  # type: ignore[no-untyped-def]
    response = put(client, "/fhir/Patient/pat-42", {"resourceType": "Patient", "id": "pat-42"})
    assert response.status_code == 201 and response.headers["ETag"] == 'W/"1"'
    assert client.get("/fhir/Patient/pat-42").status_code == 200


def test_stale_if_match_is_412_and_changes_nothing(client) -> None:  # type: ignore[no-untyped-def]
    put(client, "/fhir/Patient/p", {"resourceType": "Patient", "id": "p", "gender": "male"})
    put(client, "/fhir/Patient/p", {"resourceType": "Patient", "id": "p", "gender": "female"})
    stale = put(client, "/fhir/Patient/p", {"resourceType": "Patient", "id": "p", "gender": "other"},
                **{"If-Match": 'W/"1"'})
    assert_outcome(stale, 412)
    assert_outcome(client.delete("/fhir/Patient/p", headers={"If-Match": 'W/"1"'}), 412)
    current = client.get("/fhir/Patient/p")
    assert current.headers["ETag"] == 'W/"2"' and current.get_json()["gender"] == "female"


def test_history_type_and_system_with_paging(client, clock) -> None:  # type: ignore[no-untyped-def]
    for n in range(5):
        clock.advance(timedelta(minutes=1))
        put(client, f"/fhir/Patient/p{n}", {"resourceType": "Patient", "id": f"p{n}"})
    post(client, "/fhir/Condition", CONDITION)
    page = client.get("/fhir/Patient/_history?_count=2").get_json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    assert [e["resource"]["id"] for e in page["entry"]] == ["p4", "p3"]
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    page2 = client.get(nxt.replace("http://localhost", "")).get_json()
    assert [e["resource"]["id"] for e in page2["entry"]] == ["p2", "p1"]
    assert count_resources(client) == 6
    since = client.get("/fhir/Patient/_history?_since=2026-01-05T09:03:30Z").get_json()
    assert sorted(e["resource"]["id"] for e in since["entry"]) == ["p3", "p4"]


@pytest.mark.parametrize("prefer, status, has_body, kind", [
    ("return=minimal", 201, False, None),
    ("return=representation", 201, True, "Patient"),
    ("return=OperationOutcome", 201, True, "OperationOutcome"),
])
def test_prefer_return(client, prefer, status, has_body, kind) -> None:  # type: ignore[no-untyped-def]
    response = post(client, "/fhir/Patient", {"resourceType": "Patient"}, Prefer=prefer)
    assert response.status_code == status and response.headers["Location"]
    assert bool(response.get_data()) == has_body
    if kind:
        assert response.get_json()["resourceType"] == kind


def test_conditional_create_by_id(client) -> None:  # type: ignore[no-untyped-def]
    put(client, "/fhir/Patient/known", {"resourceType": "Patient", "id": "known"})
    again = post(client, "/fhir/Patient", {"resourceType": "Patient"}, **{"If-None-Exist": "_id=known"})
    assert again.status_code == 200 and again.get_json()["id"] == "known"
    fresh = post(client, "/fhir/Patient", {"resourceType": "Patient"}, **{"If-None-Exist": "_id=other"})
    assert fresh.status_code == 201


def test_conditional_create_by_criteria_with_one_and_several_matches(client) -> None:  # type: ignore[no-untyped-def]
    """R4 3.1.0.8.1 (conditional create): no match creates (201), one match returns it (200)
    and creates nothing, several matches are a 412 that creates nothing."""
    ident = {"system": "urn:mrn", "value": "X1"}
    first = post(client, "/fhir/Patient", {"resourceType": "Patient", "identifier": [ident]},
                 **{"If-None-Exist": "identifier=urn:mrn|X1"})
    assert first.status_code == 201
    same = post(client, "/fhir/Patient", {"resourceType": "Patient", "identifier": [ident], "gender": "male"},
                **{"If-None-Exist": "identifier=urn:mrn|X1"})
    assert same.status_code == 200 and same.get_json()["id"] == first.get_json()["id"]
    assert "gender" not in same.get_json() and count_resources(client) == 1
    post(client, "/fhir/Patient", {"resourceType": "Patient", "identifier": [ident]})   # a second match
    assert count_resources(client) == 2
    outcome = assert_outcome(post(client, "/fhir/Patient", {"resourceType": "Patient", "identifier": [ident]},
                                  **{"If-None-Exist": "identifier=urn:mrn|X1"}), 412)
    assert "If-None-Exist" in outcome["issue"][0]["diagnostics"]       # the error names what was too wide
    assert count_resources(client) == 2


@pytest.mark.parametrize("media", ["application/fhir+json", "application/json",
                                   "application/fhir+json; charset=utf-8"])
def test_json_media_types_accepted(client, media) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}),
                           headers={"Content-Type": media, "Accept": media.split(";")[0]})
    assert response.status_code == 201


def test_format_parameter(client) -> None:  # type: ignore[no-untyped-def]
    put(client, "/fhir/Patient/f", {"resourceType": "Patient", "id": "f", "gender": "female"})
    for fmt in ("json", "application/json", "application/fhir%2Bjson"):
        # R4 3.1.0.1.10 (_format): the JSON resource, in FHIR's JSON media type
        response = client.get(f"/fhir/Patient/f?_format={fmt}", headers={"Accept": "application/fhir+xml"})
        assert response.status_code == 200, fmt
        assert response.mimetype == FHIR, fmt
        body = response.get_json()
        assert (body["resourceType"], body["id"], body["gender"]) == ("Patient", "f", "female")
    assert_outcome(client.get("/fhir/Patient/f?_format=xml"), 406)
    assert_outcome(client.get("/fhir/Patient/f", headers={"Accept": "application/fhir+xml"}), 406)


BAD_WRITES = [
    # (method, path, body, content type, status, issue code)
    ("POST", "/fhir/Patient", "{not json", FHIR, 400, "structure"),
    ("POST", "/fhir/Patient", "[1, 2]", FHIR, 400, "structure"),
    ("POST", "/fhir/Patient", "", FHIR, 400, "required"),
    ("POST", "/fhir/Patient", {"resourceType": "Observation"}, FHIR, 400, "invalid"),
    ("POST", "/fhir/Patient", {"gender": "male"}, FHIR, 400, "invalid"),
    ("POST", "/fhir/Unicorn", {"resourceType": "Unicorn"}, FHIR, 404, "not-supported"),
    ("POST", "/fhir/Patient", {"resourceType": "Patient", "birthDate": "not-a-date"}, FHIR, 422, "value"),
    ("POST", "/fhir/Patient", {"resourceType": "Patient", "unknownElement": 1}, FHIR, 422, "structure"),
    ("POST", "/fhir/Observation", {"resourceType": "Observation", "status": "final"}, FHIR, 422, "value"),
    ("POST", "/fhir/Patient", {"resourceType": "Patient", "gender": "banana"}, FHIR, 422, "code-invalid"),
    ("POST", "/fhir/Patient", "<Patient/>", "application/fhir+xml", 415, "not-supported"),
    ("POST", "/fhir/Patient", "resourceType=Patient", "text/plain", 415, "not-supported"),
    ("PUT", "/fhir/Patient/a", {"resourceType": "Patient", "id": "b"}, FHIR, 400, "invalid"),
    ("PUT", "/fhir/Patient/a", {"resourceType": "Patient"}, FHIR, 400, "invalid"),
    ("PUT", "/fhir/Patient/a", {"resourceType": "Condition", "id": "a"}, FHIR, 400, "invalid"),
    ("PUT", "/fhir/Patient/bad_id!", {"resourceType": "Patient", "id": "bad_id!"}, FHIR, 400, "invalid"),
    ("PATCH", "/fhir/Patient/a", {"resourceType": "Patient", "id": "a"}, FHIR, 405, "not-supported"),
]


@pytest.mark.parametrize("method, path, body, ctype, status, code", BAD_WRITES)
def test_bad_writes_get_outcome_and_store_nothing(client, method, path, body, ctype, status, code) -> None:  # type: ignore[no-untyped-def]
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.open(path, method=method, data=data, headers={"Content-Type": ctype})
    outcome = assert_outcome(response, status, code)
    assert outcome["issue"][0]["severity"] in ("error", "fatal")
    assert count_resources(client) == 0


def test_validation_issues_carry_fhirpath_locations(client) -> None:  # type: ignore[no-untyped-def]
    body = {"resourceType": "Patient", "birthDate": "1990-13-45", "name": [{"family": 7}]}
    outcome = assert_outcome(post(client, "/fhir/Patient", body), 422)
    locations = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert {"Patient.birthDate", "Patient.name[0].family"} <= locations


def test_payload_over_limit_is_413(client) -> None:  # type: ignore[no-untyped-def]
    big = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>" + "x" * 3_000_000 + "</div>"}}
    assert_outcome(post(client, "/fhir/Patient", big), 413, "too-costly")
    assert count_resources(client) == 0


def test_reads_of_unknown_things(client) -> None:  # type: ignore[no-untyped-def]
    assert_outcome(client.get("/fhir/Patient/nobody"), 404, "not-found")
    assert_outcome(client.get("/fhir/Unicorn/1"), 404, "not-supported")
    put(client, "/fhir/Patient/v", {"resourceType": "Patient", "id": "v"})
    assert_outcome(client.get("/fhir/Patient/v/_history/9"), 404)
    assert_outcome(client.get("/fhir/Patient/v/_history/x"), 400)
    assert_outcome(client.get("/fhir/Patient/nobody/_history"), 404)
    assert_outcome(client.get("/nowhere"), 404)


def test_server_maintains_meta(client) -> None:  # type: ignore[no-untyped-def]
    body = {"resourceType": "Patient", "id": "m",
            "meta": {"versionId": "77", "lastUpdated": "1999-01-01T00:00:00Z",
                     "profile": ["http://example.org/p"], "tag": [{"code": "t"}]}}
    stored = put(client, "/fhir/Patient/m", body).get_json()
    assert stored["meta"]["versionId"] == "1"
    assert stored["meta"]["lastUpdated"].startswith("2026-01-05T09:00:00")
    assert stored["meta"]["profile"] == ["http://example.org/p"] and stored["meta"]["tag"] == [{"code": "t"}]


def test_types_beyond_the_clinical_ones_can_be_stored(client) -> None:  # type: ignore[no-untyped-def]
    """Every R4 type: tests/integration/test_r4_examples.py."""
    body = {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    assert post(client, "/fhir/Encounter", body).status_code == 201
    assert post(client, "/fhir/Practitioner", {"resourceType": "Practitioner"}).status_code == 201
    # an R4 type that R4B replaced still stores (checked against its R4 StructureDefinition,
    # which requires a name)
    body = {"resourceType": "MedicinalProduct", "name": [{"productName": "Alendronate 70 mg"}]}
    assert post(client, "/fhir/MedicinalProduct", body).status_code == 201


def test_capability_statement_reflects_implementation(client) -> None:  # type: ignore[no-untyped-def]
    cs = client.get("/fhir/metadata").get_json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert len(by_type) == 146
    codes = {i["code"] for i in by_type["CarePlan"]["interaction"]}
    assert {"create", "read", "vread", "update", "delete", "history-instance", "history-type"} <= codes
    assert "patch" not in codes


def test_healthz(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_conditional_update(client) -> None:  # type: ignore[no-untyped-def]
    ident = {"system": "urn:mrn", "value": "123"}
    first = put(client, "/fhir/Patient?identifier=urn:mrn|123",
                {"resourceType": "Patient", "identifier": [ident], "gender": "male"})
    assert first.status_code == 201
    pid = first.get_json()["id"]
    second = put(client, "/fhir/Patient?identifier=urn:mrn|123",
                 {"resourceType": "Patient", "identifier": [ident], "gender": "female"})
    assert second.status_code == 200 and second.get_json()["id"] == pid and second.headers["ETag"] == 'W/"2"'
    assert_outcome(put(client, "/fhir/Patient?identifier=urn:mrn|123",
                       {"resourceType": "Patient", "id": "other", "identifier": [ident]}), 400)
    post(client, "/fhir/Patient", {"resourceType": "Patient", "identifier": [ident]})
    assert_outcome(put(client, "/fhir/Patient?identifier=urn:mrn|123",
                       {"resourceType": "Patient", "identifier": [ident]}), 412)
    assert_outcome(put(client, "/fhir/Patient", {"resourceType": "Patient"}), 400)
    cs = client.get("/fhir/metadata").get_json()
    assert cs["rest"][0]["resource"][0]["conditionalUpdate"] is True


def test_conditional_requests_need_real_criteria(client) -> None:  # type: ignore[no-untyped-def]
    put(client, "/fhir/Patient/only", {"resourceType": "Patient", "id": "only", "gender": "male"})
    assert_outcome(put(client, "/fhir/Patient?_pretty=true", {"resourceType": "Patient", "gender": "female"}), 400)
    assert_outcome(post(client, "/fhir/Patient", {"resourceType": "Patient"}, **{"If-None-Exist": "_count=5"}), 400)
    assert client.get("/fhir/Patient/only").get_json()["gender"] == "male"
    assert count_resources(client) == 1


def test_history_links_use_the_public_base(client) -> None:  # type: ignore[no-untyped-def]
    for n in range(3):
        put(client, f"/fhir/Patient/h{n}", {"resourceType": "Patient", "id": f"h{n}"})
    page = client.get("/fhir/Patient/_history?_count=1").get_json()
    assert all(link["url"].startswith("http://toh.test/fhir/Patient/_history?") for link in page["link"])


def test_a_database_that_gives_up_is_a_503_outcome(app, client) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.exc import OperationalError

    def deadlock_victim(uow) -> None:  # type: ignore[no-untyped-def]
        raise OperationalError("COMMIT", {}, Exception("deadlock detected"))

    app.extensions["toh"].database.add_before_commit(deadlock_victim)
    outcome = assert_outcome(post(client, "/fhir/Patient", {"resourceType": "Patient"}), 503, "transient")
    assert "try again" in outcome["issue"][0]["diagnostics"]
    app.extensions["toh"].database.before_commit.remove(deadlock_victim)
    assert count_resources(client) == 0
