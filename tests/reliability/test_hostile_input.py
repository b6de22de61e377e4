"""Hostile and malformed requests, one or more per kind of fault of issue 10, on SQLite and
PostgreSQL: each gets an OperationOutcome with a 4xx status and changes no row; valid content
at the calendar's edges is stored and searched (never a 500)."""
from __future__ import annotations

import io
import json
from typing import Any

import pytest

from tests.reliability.hostile import FHIR, assert_everything_reads_back, assert_outcome, row_counts

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Hip"}]}


def _nested_extension(levels: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "a"}
    for _ in range(levels - 1):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    return {"resourceType": "Patient", "extension": [ext]}


def _text(body: Any) -> str:
    return body if isinstance(body, str) else json.dumps(body)


# (label, method, path, body or None, extra headers, statuses, issue code or None)
REFUSED: list[tuple[str, str, str, Any, dict[str, str], tuple[int, ...], str | None]] = [
    # 1. search cost
    ("250 repeated parameters", "GET", "/fhir/Patient?" + "&".join(["name=x"] * 250), None, {}, (400,), "too-costly"),
    ("499 values of one parameter", "GET", "/fhir/Patient?name=" + ",".join(["x"] * 499), None, {}, (400,), "too-costly"),
    ("a chain of 4 links", "GET", "/fhir/Observation?subject:Patient.organization.partof.partof.name=x",
     None, {}, (400,), "too-costly"),
    # 3. depth
    ("JSON 1,000 levels deep", "POST", "/fhir/Patient", '{"resourceType":"Patient","extension":' + "[" * 1000
     + "]" * 1000 + "}", {}, (400,), "too-costly"),
    ("extensions 140 deep", "POST", "/fhir/Patient", _nested_extension(140), {}, (400,), "too-costly"),
    ("extensions 140 deep, $validate", "POST", "/fhir/Patient/$validate", _nested_extension(140), {}, (400,), None),
    # 5. integers
    ("_offset beyond 64 bits", "GET", "/fhir/_history?_offset=9223372036854775808", None, {}, (400,), "invalid"),
    ("a version of 20 digits", "GET", "/fhir/Patient/p1/_history/99999999999999999999", None, {}, (400,), "invalid"),
    ("a version in other digits", "GET", "/fhir/Patient/p1/_history/\u0663", None, {}, (400,), "invalid"),
    ("If-Match of 4,301 digits", "PUT", "/fhir/Patient/p1", {**PATIENT, "gender": "male"},
     {"If-Match": 'W/"' + "9" * 4301 + '"'}, (400,), "invalid"),
    ("probabilityDecimal of 400 digits", "POST", "/fhir/RiskAssessment",
     '{"resourceType":"RiskAssessment","status":"final","subject":{"reference":"Patient/p1"},'
     '"prediction":[{"probabilityDecimal":' + "9" * 400 + "}]}", {}, (422,), "value"),
    ("a decimal of 1e400", "POST", "/fhir/Observation",
     '{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e400}}',
     {}, (422,), "value"),
    ("a cursor with a huge row id", "GET", "/fhir/Patient?_cursor=eyJzIjo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OX0",
     None, {}, (400,), "invalid"),
    # 6. NaN, Infinity, unknown elements, on a type R4B dropped too
    ("NaN in Evidence", "POST", "/fhir/Evidence", '{"resourceType":"Evidence","status":"active","x":NaN}',
     {}, (400,), "structure"),
    ("Infinity in Patient", "POST", "/fhir/Patient", '{"resourceType":"Patient","multipleBirthInteger":Infinity}',
     {}, (400,), "structure"),
    ("-Infinity in a Bundle entry", "POST", "/fhir", '{"resourceType":"Bundle","type":"batch","entry":[{"resource":'
     '{"resourceType":"Observation","valueQuantity":{"value":-Infinity}},"request":{"method":"POST",'
     '"url":"Observation"}}]}', {}, (400,), "structure"),
    ("an unknown element in Evidence", "POST", "/fhir/Evidence", {"resourceType": "Evidence", "status": "active",
     "exposureBackground": {"reference": "EvidenceVariable/e"}, "colour": "red"}, {}, (422,), "structure"),
    ("an unknown element in MedicinalProduct", "POST", "/fhir/MedicinalProduct", {"resourceType": "MedicinalProduct",
     "name": [{"productName": "x", "strength": "1 mg"}]}, {}, (422,), "structure"),
    ("a lone surrogate in Evidence", "POST", "/fhir/Evidence", '{"resourceType":"Evidence","status":"active",'
     '"name":"\\ud800"}', {}, (400,), "structure"),
    # 7. control characters
    ("NUL in a name", "POST", "/fhir/Patient", {"resourceType": "Patient", "name": [{"family": "a\u0000b"}]},
     {}, (422,), "value"),
    ("a form feed in a key", "POST", "/fhir/Patient", '{"resourceType":"Patient","\\f":1}', {}, (422,), "value"),
    ("NUL in a search value", "GET", "/fhir/Patient?name=%00", None, {}, (400,), "invalid"),
    ("NUL in a parameter name", "GET", "/fhir/Patient?na%00me=x", None, {}, (400,), "invalid"),
    ("NUL in a history id", "GET", "/fhir/Patient/%00/_history", None, {}, (400,), "invalid"),
    ("NUL in a vread id", "GET", "/fhir/Patient/%00/_history/1", None, {}, (400,), "invalid"),
    ("a bad history id", "GET", "/fhir/Patient/a!b/_history", None, {}, (400,), "invalid"),
    ("NUL in an _since", "GET", "/fhir/_history?_since=%00", None, {}, (400,), "invalid"),
    # 8. a lone surrogate in a nested resourceType
    ("a nested lone surrogate", "POST", "/fhir/Patient",
     '{"resourceType":"Patient","maritalStatus":{"resourceType":"\\ud800"}}', {}, (400,), "structure"),
    ("a nested lone surrogate, $validate", "POST", "/fhir/Patient/$validate",
     '{"resourceType":"Patient","maritalStatus":{"resourceType":"\\ud800"}}', {}, (400,), "structure"),
    # 11. '.' and '..'
    ("id '.'", "PUT", "/fhir/Patient/.", {"resourceType": "Patient", "id": "."}, {}, (400, 404, 405), None),
    ("id '..' in a transaction", "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": ".."}, "request": {"method": "PUT", "url": "Patient/.."}}]},
     {}, (400,), None),
]


@pytest.fixture
def seeded(client, database_url):  # type: ignore[no-untyped-def]
    """The client over a store holding Patient/p1; returns (client, database_url)."""
    response = client.put("/fhir/Patient/p1", data=json.dumps(PATIENT), headers={"Content-Type": FHIR})
    assert response.status_code == 201
    return client, database_url


@pytest.mark.parametrize("label, method, path, body, headers, statuses, code", REFUSED, ids=[r[0] for r in REFUSED])
def test_hostile_request_is_refused_and_changes_nothing(seeded, label, method, path, body, headers, statuses,
                                                       code) -> None:  # type: ignore[no-untyped-def]
    client, url = seeded
    before = row_counts(url)
    data = None if body is None else _text(body)
    response = client.open(path, method=method, data=data, headers={"Content-Type": FHIR, **headers})
    assert_outcome(response, statuses, code)
    assert row_counts(url) == before


def test_the_limits_are_named(seeded) -> None:  # type: ignore[no-untyped-def]
    client, _ = seeded
    text = client.get("/fhir/Patient?" + "&".join(["name=x"] * 65)).get_data(as_text=True)
    assert "TOH_SEARCH_MAX_PARAMS" in text and "64" in text
    text = client.get("/fhir/Patient?name=" + ",".join(["x"] * 101)).get_data(as_text=True)
    assert "TOH_SEARCH_MAX_VALUES" in text and "100" in text


def test_a_dot_id_cannot_be_created_by_put(seeded) -> None:  # type: ignore[no-untyped-def]
    client, url = seeded
    before = row_counts(url)
    for bad in (".", ".."):
        response = client.put(f"/fhir/Patient/x{bad}", data=json.dumps({"resourceType": "Patient", "id": bad}),
                              headers={"Content-Type": FHIR})
        assert_outcome(response, 400)
    assert row_counts(url) == before


# 4. Valid FHIR dates at the calendar's edges: answered, never a 500.
EDGE_SEARCHES = ["/fhir/Patient?birthdate=ap9999-12-31", "/fhir/Patient?birthdate=ap0001-01-01",
                 "/fhir/Patient?birthdate=gt9999-12-31", "/fhir/Patient?birthdate=lt0001",
                 "/fhir/Patient?_lastUpdated=ap9999-12-31T23:59:59Z",
                 "/fhir/Observation?date=ap0001-01-01T00:00:00%2B01:00"]


@pytest.mark.parametrize("path", EDGE_SEARCHES)
def test_searches_at_the_calendars_edges_are_answered(seeded, path) -> None:  # type: ignore[no-untyped-def]
    client, _ = seeded
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["type"] == "searchset"


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00%2B01:00", "9999-12-31T23:59:59-02:00"])
def test_history_since_at_the_calendars_edges(seeded, since) -> None:  # type: ignore[no-untyped-def]
    client, _ = seeded
    response = client.get(f"/fhir/_history?_since={since}")
    assert response.status_code == 200, response.get_data(as_text=True)
    # _since 0001 (clamped to the calendar's start) includes everything; 9999 nothing
    assert response.get_json()["total"] == (0 if since.startswith("9999") else response.get_json()["total"])
    if since.startswith("0001"):
        assert any(e["resource"]["id"] == "p1" for e in response.get_json()["entry"])


def test_a_datetime_before_the_calendars_start_in_utc_is_stored_and_found(seeded) -> None:  # type: ignore[no-untyped-def]
    """0001-01-01T00:00:00+01:00 is a valid dateTime whose UTC time is before year 1: it is
    indexed clamped to the calendar's start, so a search for year 1 finds it."""
    client, url = seeded
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "effectiveDateTime": "0001-01-01T00:00:00+01:00"}
    response = client.post("/fhir/Observation", data=json.dumps(obs), headers={"Content-Type": FHIR})
    assert response.status_code == 201, response.get_data(as_text=True)
    found = client.get("/fhir/Observation?date=le0001-01-01").get_json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [response.get_json()["id"]]
    assert assert_everything_reads_back(url) >= 2


def test_chunked_body_beyond_the_limit_is_413(seeded) -> None:  # type: ignore[no-untyped-def]
    """A valid Patient followed by spaces and garbage past the payload limit (2 MiB in the
    tests), sent without Content-Length (as chunked framing arrives): 413, nothing stored."""
    client, url = seeded
    before = row_counts(url)
    body = json.dumps({"resourceType": "Patient"}).encode() + b" " * (3 * 1024 * 1024) + b"garbage"
    response = client.post("/fhir/Patient", input_stream=io.BytesIO(body),
                           headers={"Content-Type": FHIR, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert_outcome(response, 413, "too-costly")
    assert row_counts(url) == before


def test_chunked_body_under_the_limit_is_stored(seeded) -> None:  # type: ignore[no-untyped-def]
    client, _ = seeded
    body = json.dumps({"resourceType": "Patient", "gender": "female"}).encode()
    response = client.post("/fhir/Patient", input_stream=io.BytesIO(body),
                           headers={"Content-Type": FHIR, "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 201, response.get_data(as_text=True)


def test_extensions_nested_within_the_limit_are_stored(seeded) -> None:  # type: ignore[no-untyped-def]
    """30 nested extensions are 61 JSON levels: under the documented limit of 64."""
    client, _ = seeded
    response = client.post("/fhir/Patient", data=json.dumps(_nested_extension(30)), headers={"Content-Type": FHIR})
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_surrogate_pair_is_a_character(seeded) -> None:  # type: ignore[no-untyped-def]
    client, url = seeded
    response = client.post("/fhir/Patient", data='{"resourceType":"Patient","name":[{"family":"\\ud83e\\uddb4"}]}',
                           headers={"Content-Type": FHIR})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["name"][0]["family"] == "\U0001f9b4"
    assert assert_everything_reads_back(url) >= 2


def test_a_repeated_parameter_is_one_join_and_keeps_its_meaning(seeded) -> None:  # type: ignore[no-untyped-def]
    """name=a&name=b: both must hold, each on any of the resource's names (R4 search.html#combining);
    :not repeated excludes every value. Also past the pre-filter (more than 100 values)."""
    client, _ = seeded
    for pid, families in (("ab", ["Alder", "Birch"]), ("a", ["Alder"]), ("b", ["Birch"]), ("c", ["Cedar"])):
        body = {"resourceType": "Patient", "id": pid, "name": [{"family": f} for f in families]}
        assert client.put(f"/fhir/Patient/{pid}", data=json.dumps(body), headers={"Content-Type": FHIR}).status_code == 201

    def ids(query: str) -> set[str]:
        response = client.get(f"/fhir/Patient?{query}&_count=100")
        assert response.status_code == 200, response.get_data(as_text=True)
        return {e["resource"]["id"] for e in response.get_json().get("entry", [])}

    assert ids("name=alder&name=birch") == {"ab"}
    assert ids("name=alder&name=birch&name=alder") == {"ab"}
    assert ids("name=alder&name:exact=Birch") == {"ab"}
    assert ids("name=alder,cedar&name=birch,cedar") == {"ab", "c"}
    padding = ",".join(f"zz{i}" for i in range(60))
    assert ids(f"name=alder,{padding}&name=birch,{padding}") == {"ab"}
    assert ids("gender:not=male&gender:not=female") == {"ab", "a", "b", "c", "p1"}
    client.put("/fhir/Patient/a", data=json.dumps({"resourceType": "Patient", "id": "a", "gender": "male"}),
               headers={"Content-Type": FHIR})
    assert ids("gender:not=male&gender:not=female") == {"ab", "b", "c", "p1"}
