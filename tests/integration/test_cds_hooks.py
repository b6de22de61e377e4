"""CDS Hooks 2.0 through the app (SQLite and PostgreSQL): the protocol client of tests/cds_client.py
discovers the services and calls them with recorded requests shaped like the spec's examples
(tests/data/cds_hooks/), signed with keys made here; the JWT rules; reading from this store when
fhirServer is this server; feedback as AuditEvents; CORS. The app's clock is 2026-01-05."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import create_engine, func, select

from service import create_app
from service.fhir.canonical import TOH_CODES
from service.store.schema import audit_events, cds_jti, resources
from tests.auth import make_token
from tests.cds_client import CdsClient, EhrKeys, check_card, flask_transport

DATA = Path(__file__).resolve().parents[1] / "data" / "cds_hooks"
ROOT = "http://toh.test"
FHIR = "application/fhir+json"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.fixture
def keys(tmp_path: Path) -> EhrKeys:
    return EhrKeys.generate(tmp_path)


def make_app(database_url: str, clock: Any, keys: EhrKeys, **settings: Any) -> Any:
    app = create_app({"database_url": database_url, "base_url": f"{ROOT}/fhir", "cds_issuers": keys.setting(),
                      **settings}, clock=clock)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def cds_app(database_url: str, clock: Any, keys: EhrKeys) -> Iterator[Any]:
    app = make_app(database_url, clock, keys)
    yield app
    app.extensions["toh"].database.dispose()


@pytest.fixture
def ehr(cds_app: Any, keys: EhrKeys) -> CdsClient:
    return CdsClient(flask_transport(cds_app.test_client(token=None)), ROOT, keys)


def rows(database_url: str, table: Any) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


def test_discovery_lists_the_three_services(ehr: CdsClient) -> None:
    services = {s["id"]: s for s in ehr.discover()}
    assert {k: s["hook"] for k, s in services.items()} == {
        "toh-patient-view": "patient-view", "toh-order-sign": "order-sign", "toh-order-select": "order-select"}
    assert services["toh-order-sign"]["prefetch"]["observations"] == "Observation?patient={{context.patientId}}"


def test_patient_view_with_prefetch_gives_a_critical_card_for_avn_features(ehr: CdsClient, database_url: str) -> None:
    before = rows(database_url, resources)
    cards = ehr.call("toh-patient-view", recorded("patient-view-avn"))
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "avn-features"
    assert "Double-line sign at the left hip" in card["summary"]
    assert "`Observation/mri-2`" in card["detail"] and "focal" in card["detail"]
    assert card["links"] == [{"label": "TOH timeline of the patient", "url": f"{ROOT}/ui/patients/1288992",
                              "type": "absolute"}]
    assert rows(database_url, resources) == before          # a hook stores nothing


def test_a_pregnant_patients_draft_alendronate_gives_one_critical_card(ehr: CdsClient) -> None:
    cards = ehr.call("toh-order-sign", recorded("order-sign-alendronate-pregnant"))
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "bisphosphonate-in-pregnancy"
    assert "avoided in pregnancy and breastfeeding" in card["detail"]
    assert card["selectionBehavior"] == "at-most-one"
    [action] = card["suggestions"][0]["actions"]
    assert action == {"type": "delete", "resourceId": "MedicationRequest/smart-MedicationRequest-103",
                      "description": "Remove the draft order MedicationRequest/smart-MedicationRequest-103"}
    assert {r["code"] for r in card["overrideReasons"]} >= {"status-out-of-date"}
    # the same call again (an EHR retry) names the card by the same uuid
    again = ehr.call("toh-order-sign", recorded("order-sign-alendronate-pregnant"))
    assert again[0]["uuid"] == card["uuid"]


def test_the_same_order_a_month_after_breastfeeding_stopped_gives_none(ehr: CdsClient) -> None:
    request = recorded("order-sign-alendronate-weaned")
    assert ehr.call("toh-order-sign", request) == []
    still_feeding = copy.deepcopy(request)       # the control: without the "not breastfeeding" status
    entries = still_feeding["prefetch"]["observations"]["entry"]
    still_feeding["prefetch"]["observations"]["entry"] = [e for e in entries if e["resource"]["id"] != "bf-2"]
    [card] = ehr.call("toh-order-sign", still_feeding)
    assert card["indicator"] == "critical"


def test_order_select_judges_only_the_selected_orders(ehr: CdsClient) -> None:
    request = recorded("order-sign-alendronate-pregnant")
    request["hook"] = "order-select"
    request["context"]["selections"] = ["MedicationRequest/smart-MedicationRequest-103"]
    [card] = ehr.call("toh-order-select", request)
    assert card["source"]["topic"]["code"] == "bisphosphonate-in-pregnancy"
    request["context"]["selections"] = ["MedicationRequest/another"]
    assert ehr.call("toh-order-select", request) == []


@pytest.mark.parametrize("alg", ["ES384", "RS256"])
def test_es384_and_rs256_tokens_are_accepted(ehr: CdsClient, alg: str) -> None:
    assert len(ehr.call("toh-order-sign", recorded("order-sign-alendronate-pregnant"), alg=alg)) == 1


def refusal(ehr: CdsClient, token: str, path: str = "/toh-order-sign") -> tuple[int, Any]:
    status, headers, body = ehr.request("POST", path, recorded("order-sign-alendronate-pregnant"), token=token)
    assert headers["Access-Control-Allow-Origin"] == "*"
    return status, body


def test_tokens_that_cannot_be_trusted_are_refused(ehr: CdsClient, keys: EhrKeys, tmp_path: Path) -> None:
    url = ehr.url("/toh-order-sign")
    other = EhrKeys.generate(tmp_path)
    def signed(claims: dict[str, Any], **header: str) -> str:
        body = {"iss": keys.issuer, "aud": url, "exp": 2**31, "iat": 0, "jti": "j1"} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not None}, keys.rsa, algorithm="RS384",
                          headers={"kid": "rsa-1", **header})

    cases = {   # name: (token, why it is refused)
        "bad signature": (other.token(url, issuer=keys.issuer), "signature does not verify"),  # kid rsa-1, other key
        "wrong aud": (keys.token(ehr.url("/toh-patient-view")), "another aud than this endpoint"),
        "expired": (keys.token(url, ttl=-3600), "expired"),
        "unknown issuer": (other.token(url, issuer="https://evil.example.org"), "does not trust"),
        "HS256": (jwt.encode({"iss": keys.issuer, "aud": url, "exp": 2**31, "iat": 0, "jti": "x"},
                             "a-shared-secret-is-not-allowed-here", algorithm="HS256"), "'HS256' are not accepted"),
        "no jti": (signed({"jti": None}), "lacks the 'jti'"),
        "no iat": (signed({"iat": None}), "lacks the 'iat'"),
        "foreign jku": (signed({}, jku="https://evil.example.org/jwks"), "jku is not the key set"),
        "unknown kid": (signed({}, kid="rsa-2"), "No key 'rsa-2'"),
    }
    for name, (token, why) in cases.items():
        status, body = refusal(ehr, token)
        assert status == 401, (name, body)
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "login", name
        assert why in body["issue"][0]["diagnostics"], (name, body)
    status, _, body = ehr.request("POST", "/toh-order-sign", recorded("order-sign-alendronate-pregnant"), token="")
    assert status == 401 and body["resourceType"] == "OperationOutcome"


def test_a_replayed_jti_is_refused_by_every_host_sharing_the_database(
        ehr: CdsClient, keys: EhrKeys, database_url: str, clock: Any) -> None:
    url = ehr.url("/toh-order-sign")
    token = keys.token(url)
    assert refusal(ehr, token)[0] == 200
    status, body = refusal(ehr, token)
    assert status == 401 and "replay" in body["issue"][0]["diagnostics"]
    second_host = make_app(database_url, clock, keys)          # another process, same database
    try:
        other = CdsClient(flask_transport(second_host.test_client(token=None)), ROOT, keys)
        assert refusal(other, token)[0] == 401
        assert refusal(other, keys.token(url))[0] == 200       # a fresh jti passes there
    finally:
        second_host.extensions["toh"].database.dispose()
    assert rows(database_url, cds_jti) == 2


def test_without_prefetch_or_fhir_server_the_answer_is_412(ehr: CdsClient) -> None:
    request = recorded("patient-view-avn")
    for key in ("prefetch", "fhirServer", "fhirAuthorization"):
        request.pop(key)
    status, _, body = ehr.request("POST", "/toh-patient-view", request)
    assert status == 412 and body["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("change, where", [
    ({"hook": "order-sign"}, "hook"), ({"context": {"patientId": "a b"}}, "context.patientId"),
    ({"fhirServer": None, "prefetch": {}}, "fhirAuthorization"), ({"prefetch": {"conditions": [1]}}, "prefetch"),
])
def test_a_malformed_call_is_400_naming_the_field(ehr: CdsClient, change: dict[str, Any], where: str) -> None:
    request = recorded("patient-view-avn") | change
    status, _, body = ehr.request("POST", "/toh-patient-view", request)
    assert status == 400 and body["issue"][0]["expression"] == [where]


def test_an_unknown_service_is_404(ehr: CdsClient) -> None:
    status, _, body = ehr.request("POST", "/no-such-service", recorded("patient-view-avn"))
    assert status == 404 and body["resourceType"] == "OperationOutcome"


def test_cors_preflight_needs_no_token(cds_app: Any) -> None:
    anonymous = cds_app.test_client(token=None)
    for path in ("/cds-services", "/cds-services/toh-order-sign", "/cds-services/toh-order-sign/feedback"):
        response = anonymous.open(path, method="OPTIONS", headers={
            "Origin": "https://ehr.example.org", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert response.status_code == 200, path
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    refused = anonymous.get("/cds-services")
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"


# -- fhirServer is this server: read from the store ------------------------------------------
def fhir_authorization(token: str) -> dict[str, Any]:
    return {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": "system/*.rs",
            "subject": "toh-cds"}


def put(client: Any, resource: dict[str, Any]) -> None:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource,
                          headers={"Content-Type": FHIR})
    assert response.status_code in (200, 201), response.get_data(as_text=True)


def test_reading_this_store_full_weight_bearing_on_active_oedema(cds_app: Any, ehr: CdsClient,
                                                                 database_url: str) -> None:
    """No prefetch, fhirServer = this server: the rules read the stored record. A draft order
    for full weight-bearing while the hip's oedema is active gives a critical card suggesting
    protected weight-bearing instead; nothing is written by the hook."""
    staff = cds_app.test_client()          # the suite's FHIR token, to store the record
    request = recorded("patient-view-avn")
    observations = request["prefetch"]["observations"]["entry"]
    put(staff, {"resourceType": "Patient", "id": "1288992"})
    put(staff, request["prefetch"]["conditions"]["entry"][0]["resource"])
    put(staff, observations[0]["resource"])                         # MRI: oedema, no AVN feature
    stored = rows(database_url, resources)
    order = {"resourceType": "ServiceRequest", "id": "wb-1", "status": "draft", "intent": "order",
             "subject": {"reference": "Patient/1288992"},
             "code": {"coding": [{"system": TOH_CODES, "code": "full-weight-bearing"}],
                      "text": "Full weight-bearing as tolerated"}}
    drafts = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}
    call = {"hook": "order-sign", "hookInstance": "5d0b8c1e-0d7a-4a6e-8f8e-0c7f6b8f0a01",
            "fhirServer": f"{ROOT}/fhir", "fhirAuthorization": fhir_authorization(make_token()),
            "context": {"userId": "Practitioner/1", "patientId": "1288992", "draftOrders": drafts}}
    [card] = ehr.call("toh-order-sign", call)
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "full-weight-bearing-active-oedema"
    [action] = card["suggestions"][0]["actions"]
    assert action["type"] == "update" and action["resource"]["id"] == "wb-1"
    assert action["resource"]["code"]["coding"][0]["code"] == "partial-weight-bearing"
    assert ehr.call("toh-patient-view", {**call, "hook": "patient-view"}) == []   # no flag holds yet
    # the suggested order, judged in turn, is fine
    call["context"]["draftOrders"]["entry"] = [{"resource": action["resource"]}]
    assert ehr.call("toh-order-sign", call) == []
    assert rows(database_url, resources) == stored
    # the store is read only with a token this server accepts, reaching the patient's data
    for refused in (None, fhir_authorization("not-a-token"),
                    fhir_authorization(make_token("patient/*.rs", patient="someone-else")),
                    fhir_authorization(make_token("user/Patient.rs"))):
        status, _, body = ehr.request("POST", "/toh-order-sign", {k: v for k, v in call.items()
                                                                  if k != "fhirAuthorization"}
                                      | ({"fhirAuthorization": refused} if refused else {}))
        assert status == 412 and body["resourceType"] == "OperationOutcome", refused
    mine = fhir_authorization(make_token("patient/*.rs", patient="1288992"))
    call["context"]["draftOrders"]["entry"] = [{"resource": order}]
    assert len(ehr.call("toh-order-sign", call | {"fhirAuthorization": mine})) == 1


# -- feedback ---------------------------------------------------------------------------------
def test_feedback_is_recorded_as_audit_events(cds_app: Any, ehr: CdsClient, database_url: str) -> None:
    [card] = ehr.call("toh-order-sign", recorded("order-sign-alendronate-pregnant"))
    suggestion = card["suggestions"][0]["uuid"]
    items = [{"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
              "outcomeTimestamp": "2026-01-05T09:01:00Z"},
             {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-05T09:02:00Z",
              "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "Delivered last week"}}]
    assert ehr.feedback("toh-order-sign", items) == 200
    auditor = cds_app.test_client()
    bundle = auditor.get("/fhir/AuditEvent?subtype=cds-feedback").get_json()
    found = sorted((e["resource"] for e in bundle["entry"]), key=lambda e: e["subtype"][0]["code"])
    assert [e["subtype"][0]["code"] for e in found] == ["accepted", "overridden"]
    details = {d["type"]: d["valueString"] for d in found[1]["entity"][0]["detail"]}
    assert json.loads(details["overrideReason"])["code"] == "status-out-of-date"
    assert details["userComment"] == "Delivered last week"
    assert found[0]["entity"][0]["what"]["identifier"]["value"] == f"urn:uuid:{card['uuid']}"
    assert found[0]["agent"][0]["who"]["identifier"]["value"] == "https://ehr.example.org"
    before = rows(database_url, audit_events)
    for bad in ([{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-01-05T09:01:00Z"}],
                [{"card": card["uuid"], "outcome": "maybe", "outcomeTimestamp": "2026-01-05T09:01:00Z"}],
                [{"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "yesterday"}]):
        assert ehr.feedback("toh-order-sign", bad) == 400
    assert rows(database_url, audit_events) == before


def test_every_card_of_the_recorded_requests_has_the_spec_shape(ehr: CdsClient) -> None:
    for name, service in (("patient-view-avn", "toh-patient-view"),
                          ("order-sign-alendronate-pregnant", "toh-order-sign")):
        for card in ehr.call(service, recorded(name)):
            check_card(card)


def test_expired_jtis_are_forgotten_and_live_ones_kept(database: Any) -> None:
    from datetime import datetime, timedelta, timezone
    from service.store.cds_jti import remember_jti
    now = datetime.now(timezone.utc)
    assert remember_jti(database, "iss", "old", now - timedelta(minutes=1), now - timedelta(hours=1))
    assert remember_jti(database, "iss", "live", now + timedelta(minutes=5), now, purge=False)
    assert not remember_jti(database, "iss", "old", now + timedelta(minutes=5), now, purge=False)
    assert remember_jti(database, "other-iss", "live", now + timedelta(minutes=5), now, purge=True)  # per issuer
    assert remember_jti(database, "iss", "old", now + timedelta(minutes=5), now)   # purged, then new again
    assert not remember_jti(database, "iss", "live", now + timedelta(minutes=5), now)
