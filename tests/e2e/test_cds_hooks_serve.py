"""CDS Hooks end to end against real servers: `toh serve` as the CDS service (trusting an EHR
through TOH_CDS_ISSUERS with a JWKS file), and a second `toh serve` on loopback as the EHR's
FHIR server, which the CDS service reads with the fhirAuthorization token when the EHR sends
no prefetch. The protocol client (tests/cds_client.py) discovers the services and calls
each hook over HTTP with a signed JWT."""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import create_engine, select

from service.store.db import Database
from service.store.schema import audit_events, cds_jti, resources

from tests.auth import default_token
from tests.cds_client import CdsClient, EhrKeys, requests_transport
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow
FHIR = "application/fhir+json"
IG = "https://fhir.toh-service.org"
SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"


@pytest.fixture
def servers(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, LiveServer, EhrKeys]]:
    """(the EHR's FHIR server over the test's database, the CDS service over its own SQLite, the EHR's keys)."""
    keys = EhrKeys.generate(tmp_path)
    (tmp_path / "ehr").mkdir()
    (tmp_path / "cds").mkdir()
    ehr_fhir = LiveServer(database_url, tmp_path / "ehr", workers=1)
    try:
        monkeypatch.setenv("TOH_CDS_ISSUERS", keys.setting())
        cds = LiveServer(f"sqlite:///{tmp_path / 'cds' / 'toh.db'}", tmp_path / "cds", workers=2)
        try:
            yield ehr_fhir, cds, keys
        finally:
            cds.stop()
    finally:
        ehr_fhir.stop()


def ago(days: int) -> str:
    """A date `days` before today (the servers run on the wall clock)."""
    return (datetime.now(timezone.utc).date() - timedelta(days=days)).isoformat()


def put(base: str, resource: dict[str, Any]) -> None:
    response = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource,
                            headers={"Content-Type": FHIR}, timeout=30)
    assert response.status_code in (200, 201), response.text


def store_record(base: str) -> str:
    """A pregnant patient's TOH hip with an AVN feature on the MRI, on the FHIR server at base;
    the Patient reference."""
    patient = "Patient/p-e2e"
    put(base, {"resourceType": "Patient", "id": "p-e2e"})
    put(base, {
        "resourceType": "Condition", "id": "toh-e2e", "subject": {"reference": patient},
        "code": {"coding": [{"system": f"{IG}/CodeSystem/toh", "code": "transient-osteoporosis-hip"}]},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "bodySite": [{"coding": [{"system": SNOMED, "code": "24136001"}], "text": "left hip"}],
        "onsetDateTime": ago(90)})
    put(base, {
        "resourceType": "Observation", "id": "mri-e2e", "status": "final", "subject": {"reference": patient},
        "code": {"coding": [{"system": LOINC, "code": "36020-6"}]}, "effectiveDateTime": ago(80),
        "component": [{"code": {"coding": [{"system": f"{IG}/CodeSystem/toh", "code": "crescent-sign"}]},
                       "valueBoolean": True}]})
    put(base, {
        "resourceType": "Observation", "id": "preg-e2e", "status": "final", "subject": {"reference": patient},
        "code": {"coding": [{"system": LOINC, "code": "82810-3"}]}, "effectiveDateTime": ago(60),
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "77386006", "display": "Pregnant"}]}})
    return patient


def test_discovery_and_the_three_hooks_against_toh_serve(servers: tuple[LiveServer, LiveServer, EhrKeys]) -> None:
    ehr_fhir, cds, keys = servers
    patient = store_record(ehr_fhir.base)

    client = CdsClient(requests_transport, f"http://127.0.0.1:{cds.port}", keys)
    assert {s["id"] for s in client.discover()} == {"toh-patient-view", "toh-order-sign", "toh-order-select"}
    call = {"hookInstance": "0f9c7e0a-7f51-4a7e-9a0c-2f6f1c0b5e11", "fhirServer": ehr_fhir.base,
            "fhirAuthorization": {"access_token": default_token(), "token_type": "Bearer", "expires_in": 300,
                                  "scope": "system/*.rs", "subject": "toh-cds"},
            "hook": "patient-view", "context": {"userId": "Practitioner/1", "patientId": "p-e2e"}}
    [card] = client.call("toh-patient-view", call)          # read from the other server: no prefetch
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "avn-features"
    assert card["links"][0]["url"] == f"http://127.0.0.1:{cds.port}/ui/patients/p-e2e"

    draft = {"resourceType": "MedicationRequest", "id": "alendronate-draft", "status": "draft", "intent": "order",
             "subject": {"reference": patient}, "medicationCodeableConcept": {"text": "Alendronate 70 mg weekly"}}
    orders = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}
    sign = call | {"hook": "order-sign", "hookInstance": "1f9c7e0a-7f51-4a7e-9a0c-2f6f1c0b5e12",
                   "context": call["context"] | {"draftOrders": orders}}
    [card] = client.call("toh-order-sign", sign, alg="ES384")
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "bisphosphonate-in-pregnancy"
    select = sign | {"hook": "order-select", "context": sign["context"] | {
        "selections": ["MedicationRequest/alendronate-draft"]}}
    [card] = client.call("toh-order-select", select)
    assert card["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/alendronate-draft"
    assert client.feedback("toh-order-select", [{"card": card["uuid"], "outcome": "overridden",
                                                 "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]) == 200

    # the EHR's FHIR server refusing the token the EHR passed: 412, the data cannot be read
    refused = call | {"fhirAuthorization": call["fhirAuthorization"] | {"access_token": "not-a-token"}}
    status, _, body = client.request("POST", "/toh-patient-view", refused)
    assert status == 412 and body["resourceType"] == "OperationOutcome"
    # an expired JWT is refused over HTTP too
    status, _, body = client.request("POST", "/toh-patient-view", call,
                                     token=keys.token(client.url("/toh-patient-view"), ttl=-600))
    assert status == 401 and body["issue"][0]["code"] == "login"


def table_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the audit trail, the remembered jtis and the stored resources of a database
    (on SQLite, the servers' audit journal drained into the table first, as an auditor's read
    would: service.store.audit_journal)."""
    database = Database(url)
    database.settle_audit()
    database.dispose()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: sorted(tuple(map(str, r)) for r in conn.execute(select(t)))
                    for t in (audit_events, cds_jti, resources)}
    finally:
        engine.dispose()


def test_a_bad_signature_a_wrong_aud_an_unknown_issuer_or_an_expired_token_is_401(
        servers: tuple[LiveServer, LiveServer, EhrKeys], database_url: str, tmp_path: Path) -> None:
    """Each refused JWT gets 401 with an OperationOutcome and a Bearer challenge, on a hook call
    and on feedback, and changes nothing: no AuditEvent or jti on the CDS service, no read of the
    EHR's FHIR server (whose reads are audited), and the refused token's jti is not used up."""
    ehr_fhir, cds, keys = servers
    store_record(ehr_fhir.base)
    client = CdsClient(requests_transport, f"http://127.0.0.1:{cds.port}", keys)
    call = {"hookInstance": "2f9c7e0a-7f51-4a7e-9a0c-2f6f1c0b5e13", "fhirServer": ehr_fhir.base,
            "fhirAuthorization": {"access_token": default_token(), "token_type": "Bearer", "expires_in": 300,
                                  "scope": "system/*.rs", "subject": "toh-cds"},
            "hook": "patient-view", "context": {"userId": "Practitioner/1", "patientId": "p-e2e"}}
    feedback = {"feedback": [{"card": "9b1d3e8a-0c4f-4d7e-b5a2-6f1e2d3c4b5a", "outcome": "overridden",
                              "outcomeTimestamp": datetime.now(timezone.utc).isoformat()}]}
    impostor = EhrKeys.generate(tmp_path, issuer=keys.issuer)          # the same iss and kids, other keys
    stranger = EhrKeys.generate(tmp_path, issuer="https://unknown-ehr.example.org")   # not in TOH_CDS_ISSUERS
    elsewhere = "https://cds.other-vendor.example"

    def tampered(url: str, jti: str) -> str:
        """A genuine token whose payload was changed after signing (the signature no longer fits)."""
        header, _, signature = keys.token(url, jti=jti).split(".")
        payload = base64.urlsafe_b64encode(json.dumps(
            {"iss": keys.issuer, "aud": url, "exp": int(time.time()) + 300, "iat": int(time.time()), "jti": jti,
             "tenant": "someone-else"}).encode()).rstrip(b"=").decode()
        return f"{header}.{payload}.{signature}"

    refused: dict[str, Callable[[str, str], str]] = {
        "bad signature (another key, same kid)": lambda url, jti: impostor.token(url, jti=jti),
        "bad signature (payload changed)": tampered,
        "bad signature (ES384 key, RS384 kid)": lambda url, jti: keys.token(url, jti=jti, alg="ES384", kid="rsa-1"),
        "wrong aud (another host)": lambda url, jti: keys.token(elsewhere + urlsplit(url).path, jti=jti),
        "wrong aud (another service)": lambda url, jti: keys.token(url.replace("patient-view", "order-sign"), jti=jti),
        "unknown issuer": lambda url, jti: stranger.token(url, jti=jti),
        "expired": lambda url, jti: keys.token(url, jti=jti, ttl=-600),
    }
    cds_url = f"sqlite:///{tmp_path / 'cds' / 'toh.db'}"
    before = table_rows(cds_url), table_rows(database_url)
    jtis = []
    for why, forge in refused.items():
        for path, body in (("/toh-patient-view", call), ("/toh-patient-view/feedback", feedback)):
            jti = str(uuid.uuid4())
            jtis.append((path, body, jti))
            status, headers, answer = client.request("POST", path, body, token=forge(client.url(path), jti))
            assert status == 401, (why, path, status, answer)
            assert answer["resourceType"] == "OperationOutcome" and answer["issue"][0]["code"] == "login", why
            assert headers["WWW-Authenticate"].startswith('Bearer realm="toh-cds", error="invalid_token"'), why
            assert headers["Access-Control-Allow-Origin"] == "*"
    assert (table_rows(cds_url), table_rows(database_url)) == before, "a refused call changed something"

    # the jtis of the refused tokens are not used up: the genuine EHR may still send them (once)
    path, body, jti = jtis[0]
    status, _, answer = client.request("POST", path, body, token=keys.token(client.url(path), jti=jti))
    assert status == 200 and [c["source"]["topic"]["code"] for c in answer["cards"]] == ["avn-features"]
    after = table_rows(cds_url), table_rows(database_url)
    assert after[0]["cds_jti"] != before[0]["cds_jti"]                  # the checks above could see a change:
    assert after[1]["audit_events"] != before[1]["audit_events"]        # a jti kept, the EHR's reads audited
    status, _, answer = client.request("POST", path, body, token=keys.token(client.url(path), jti=jti))
    assert status == 401 and answer["resourceType"] == "OperationOutcome"           # a replay is not
