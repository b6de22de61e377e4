"""Access control over HTTP (Flask test client, SQLite and PostgreSQL): bearer tokens are
verified (RFC 6750 challenges), SMART scopes decide, the three roles of README get what README
says, and a patient/ token never sees another patient's data."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.security import ROLES
from tests.auth import make_token

FHIR = "application/fhir+json"


def send(client: Any, method: str, path: str, body: Any = None, **headers: str) -> Any:
    data = None if body is None else json.dumps(body)
    return client.open(path, method=method, data=data, headers={"Content-Type": FHIR, **headers})


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def condition(patient: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": ref(f"Patient/{patient}"), "code": {"text": text},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]}}


@pytest.fixture
def stored(client: Any) -> dict[str, str]:
    """Two patients, each with a Condition, an Observation, a CarePlan and a Task (written with
    the suite's system token)."""
    ids: dict[str, str] = {}
    for p in ("anna", "bob"):
        assert send(client, "PUT", f"/fhir/Patient/{p}", {"resourceType": "Patient", "id": p}).status_code == 201
        ids[f"cond-{p}"] = send(client, "POST", "/fhir/Condition", condition(p, f"hip pain {p}")).get_json()["id"]
        ids[f"plan-{p}"] = send(client, "POST", "/fhir/CarePlan", {
            "resourceType": "CarePlan", "status": "active", "intent": "plan",
            "subject": ref(f"Patient/{p}")}).get_json()["id"]
        ids[f"task-{p}"] = send(client, "POST", "/fhir/Task", {
            "resourceType": "Task", "status": "requested", "intent": "order", "for": ref(f"Patient/{p}"),
            "basedOn": [ref(f"CarePlan/{ids[f'plan-{p}']}")]}).get_json()["id"]
    # Anna's pain score points at Bob's Condition (a wrong link, as happens): it must not leak Bob's data
    ids["obs-anna"] = send(client, "POST", "/fhir/Observation", {
        "resourceType": "Observation", "status": "final", "code": {"text": "pain"},
        "subject": ref("Patient/anna"), "focus": [ref(f"Condition/{ids['cond-bob']}")],
        "valueQuantity": {"value": 6}}).get_json()["id"]
    ids["obs-bob"] = send(client, "POST", "/fhir/Observation", {
        "resourceType": "Observation", "status": "final", "code": {"text": "pain"},
        "subject": ref("Patient/bob"), "valueQuantity": {"value": 3}}).get_json()["id"]
    return ids


# --- tokens -------------------------------------------------------------------------------

def test_no_token_is_401_with_a_bearer_challenge(anonymous_client: Any) -> None:
    response = anonymous_client.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.get_json()["resourceType"] == "OperationOutcome"
    # RFC 6750 3.1: no error code when the request carried no credentials
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "error=" not in response.headers["WWW-Authenticate"]
    assert anonymous_client.get("/fhir/Patient", headers={"Authorization": "Basic dTpw"}).status_code == 401


def _tampered() -> str:
    head, body, sig = make_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "somebody-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{head}.{forged}.{sig}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned() -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    now = int(time.time())
    body = _b64(json.dumps({"iss": "toh-service", "aud": "toh-service", "sub": "x", "scope": "system/*.cruds",
                            "exp": now + 600}).encode())
    return f"{header}.{body}."


def _key_confusion() -> str:
    """HS256 signed with an RSA public key as the HMAC secret (the classic RS/HS confusion)."""
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    body = _b64(json.dumps({"iss": "toh-service", "aud": "toh-service", "sub": "x", "scope": "system/*.cruds",
                            "exp": now + 600}).encode())
    signature = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _rs256_unknown_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"iss": "toh-service", "aud": "toh-service", "sub": "x", "scope": "system/*.cruds",
                       "exp": now + 600}, key, algorithm="RS256")


@pytest.mark.parametrize("name, token", [
    ("expired", lambda: make_token(exp=int(time.time()) - 3600)),
    ("not yet valid", lambda: make_token(nbf=int(time.time()) + 3600)),
    ("tampered", _tampered),
    ("wrong issuer", lambda: make_token(issuer="https://evil.example")),
    ("wrong audience", lambda: make_token(audience="https://other-fhir.example/fhir")),
    ("wrong secret", lambda: make_token(secret="another-secret-that-is-long-enough-0123456789")),
    ("alg none", _unsigned),
    ("HS/RS key confusion", _key_confusion),
    ("RS256 with no JWKS configured", _rs256_unknown_key),
    ("no subject", lambda: make_token(sub=None)),
    ("garbage", lambda: "not.a.jwt"),
])
def test_bad_tokens_are_401(anonymous_client: Any, name: str, token: Any) -> None:
    response = anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token()}"})
    assert response.status_code == 401, name
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_small_clock_skew_is_tolerated(anonymous_client: Any) -> None:
    token = make_token(exp=int(time.time()) - 5)   # within the 60 s leeway
    assert anonymous_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_open_endpoints_need_no_token(anonymous_client: Any) -> None:
    assert anonymous_client.get("/healthz").status_code == 200
    metadata = anonymous_client.get("/fhir/metadata")
    assert metadata.status_code == 200
    security = metadata.get_json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    smart = anonymous_client.get("/fhir/.well-known/smart-configuration")
    assert smart.status_code == 200
    body = smart.get_json()
    assert body["issuer"] == "toh-service" and "permission-v2" in body["capabilities"]
    assert "user/CarePlan.rs" in body["scopes_supported"]


def test_insufficient_scope_is_403(anonymous_client: Any) -> None:
    token = make_token("user/CarePlan.rs")
    response = anonymous_client.get("/fhir/Condition", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.get_json()["issue"][0]["code"] == "forbidden"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


# --- roles (README: ehr, staff, auditor) ------------------------------------------------------

def interactions(ids: dict[str, str]) -> list[tuple[str, str, str, Any]]:
    """(name, method, path, body) of every interaction, on Anna's data."""
    cond, plan, task = ids["cond-anna"], ids["plan-anna"], ids["task-anna"]
    changed_task = {"resourceType": "Task", "id": task, "status": "completed", "intent": "order",
                    "for": ref("Patient/anna")}
    return [
        ("read", "GET", f"/fhir/Condition/{cond}", None),
        ("vread", "GET", f"/fhir/Condition/{cond}/_history/1", None),
        ("search", "GET", "/fhir/Condition?subject=Patient/anna", None),
        ("read plan", "GET", f"/fhir/CarePlan/{plan}", None),
        ("search plans", "GET", "/fhir/CarePlan?status=active", None),
        ("history-instance", "GET", f"/fhir/CarePlan/{plan}/_history", None),
        ("history-type", "GET", "/fhir/CarePlan/_history", None),
        ("history-system", "GET", "/fhir/_history", None),
        ("everything", "GET", "/fhir/Patient/anna/$everything", None),
        ("assessment", "GET", "/fhir/Patient/anna/$toh-assessment", None),
        ("create", "POST", "/fhir/Condition", condition("anna", "knee pain")),
        ("update task", "PUT", f"/fhir/Task/{task}", changed_task),
        ("update condition", "PUT", f"/fhir/Condition/{cond}", {**condition("anna", "left hip"), "id": cond}),
        ("delete", "DELETE", f"/fhir/Observation/{ids['obs-anna']}", None),
        ("transaction", "POST", "/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Condition"}, "resource": condition("anna", "back pain")}]}),
    ]


# What README promises each role (expected values from the role descriptions, not the code)
ALLOWED = {
    "ehr": {"read", "vread", "search", "read plan", "search plans", "history-instance", "history-type",
            "history-system", "everything", "assessment", "create", "update task", "update condition",
            "delete", "transaction"},
    "staff": {"read", "vread", "search", "read plan", "search plans", "history-instance", "history-type",
              "history-system", "everything", "assessment", "update task"},
    "auditor": {"read", "vread", "search", "read plan", "search plans", "history-instance", "history-type",
                "everything", "assessment"},
}


@pytest.mark.parametrize("role", ["ehr", "staff", "auditor"])
def test_every_role_against_every_interaction(app: Any, client: Any, stored: dict[str, str], role: str) -> None:
    as_role = app.test_client(token=make_token(ROLES[role], sub=f"a-{role}"))
    got = {}
    for name, method, path, body in interactions(stored):
        got[name] = send(as_role, method, path, body).status_code
    allowed = {name for name, status in got.items() if 200 <= status < 300}
    refused = {name for name, status in got.items() if status == 403}
    assert allowed == ALLOWED[role], got
    assert refused == set(got) - ALLOWED[role], got
    # every refusal is on the record: an AuditEvent with outcome 4 (minor failure) for this agent
    trail = client.get(f"/fhir/AuditEvent?agent=a-{role}&_count=100").get_json()
    outcomes = [e["resource"]["outcome"] for e in trail.get("entry", [])]
    assert outcomes.count("4") == len(refused) and outcomes.count("0") == len(allowed)


def test_a_refused_transaction_writes_nothing(app: Any, client: Any, stored: dict[str, str]) -> None:
    staff = app.test_client(token=make_token(ROLES["staff"]))
    before = client.get("/fhir/Condition?_summary=count").get_json()["total"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": f"Task/{stored['task-anna']}"},
         "resource": {"resourceType": "Task", "id": stored["task-anna"], "status": "completed",
                      "intent": "order", "for": ref("Patient/anna")}},
        {"request": {"method": "POST", "url": "Condition"}, "resource": condition("anna", "knee")}]}
    assert send(staff, "POST", "/fhir", bundle).status_code == 403
    assert client.get("/fhir/Condition?_summary=count").get_json()["total"] == before
    assert client.get(f"/fhir/Task/{stored['task-anna']}").get_json()["status"] == "requested"


# --- patient/ tokens ------------------------------------------------------------------------

@pytest.fixture
def anna(app: Any, stored: dict[str, str]) -> Any:
    """A client holding a patient/*.cruds token for Anna."""
    return app.test_client(token=make_token("patient/*.cruds", sub="anna-app", patient="anna"))


def ids_in(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] != "OperationOutcome"}


def test_patient_token_reads_only_its_patient(anna: Any, stored: dict[str, str]) -> None:
    assert anna.get(f"/fhir/Condition/{stored['cond-anna']}").status_code == 200
    assert anna.get(f"/fhir/Condition/{stored['cond-bob']}").status_code == 403
    assert anna.get(f"/fhir/Condition/{stored['cond-bob']}/_history/1").status_code == 403
    assert anna.get("/fhir/Patient/bob").status_code == 403
    assert anna.get("/fhir/Patient/anna").status_code == 200
    # Task is outside R4's Patient compartment: refused in a patient context
    assert anna.get(f"/fhir/Task/{stored['task-anna']}").status_code == 403


def test_patient_token_searches_only_its_compartment(anna: Any, stored: dict[str, str]) -> None:
    everyone = anna.get("/fhir/Condition").get_json()
    assert ids_in(everyone) == {f"Condition/{stored['cond-anna']}"}
    asked_for_bob = anna.get("/fhir/Condition?subject=Patient/bob").get_json()
    assert ids_in(asked_for_bob) == set()
    assert anna.get("/fhir/Patient/bob/Condition").status_code == 403
    patients = anna.get("/fhir/Patient?_revinclude=Condition:subject&_revinclude=Observation:subject").get_json()
    assert ids_in(patients) == {"Patient/anna", f"Condition/{stored['cond-anna']}",
                                f"Observation/{stored['obs-anna']}"}


def test_patient_token_includes_nothing_of_another_patient(anna: Any, stored: dict[str, str]) -> None:
    found = anna.get("/fhir/Observation?_include=Observation:focus&_include=Observation:subject").get_json()
    assert ids_in(found) == {f"Observation/{stored['obs-anna']}", "Patient/anna"}   # not Bob's Condition


def test_patient_token_everything_and_history(anna: Any, stored: dict[str, str]) -> None:
    everything = anna.get("/fhir/Patient/anna/$everything").get_json()
    assert not any("bob" in json.dumps(e["resource"]) and e["resource"]["resourceType"] != "Observation"
                   for e in everything["entry"])
    assert f"Condition/{stored['cond-bob']}" not in ids_in(everything)
    assert f"Observation/{stored['obs-bob']}" not in ids_in(everything)
    assert anna.get("/fhir/Patient/bob/$everything").status_code == 403
    assert anna.get(f"/fhir/Condition/{stored['cond-bob']}/_history").get_json().get("entry", []) == []
    mine = anna.get(f"/fhir/Condition/{stored['cond-anna']}/_history").get_json()
    assert len(mine["entry"]) == 1
    assert anna.get("/fhir/Condition/_history").status_code == 403
    assert anna.get("/fhir/_history").status_code == 403


def test_patient_token_bundles(anna: Any, stored: dict[str, str]) -> None:
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Condition/{stored['cond-bob']}"}},
        {"request": {"method": "GET", "url": f"Condition/{stored['cond-anna']}"}},
        {"request": {"method": "GET", "url": "Observation?_include=Observation:focus"}},
        {"request": {"method": "POST", "url": "Condition"}, "resource": condition("bob", "written for bob")},
    ]}
    response = send(anna, "POST", "/fhir", batch).get_json()["entry"]
    assert response[0]["response"]["status"].startswith("403")
    assert response[1]["response"]["status"].startswith("200")
    assert ids_in(response[2]["resource"]) == {f"Observation/{stored['obs-anna']}"}
    assert response[3]["response"]["status"].startswith("403")


def test_patient_token_writes_only_its_patient(anna: Any, stored: dict[str, str]) -> None:
    assert send(anna, "POST", "/fhir/Condition", condition("anna", "own")).status_code == 201
    assert send(anna, "POST", "/fhir/Condition", condition("bob", "other")).status_code == 403
    moved = {**condition("anna", "taken over"), "id": stored["cond-bob"]}
    assert send(anna, "PUT", f"/fhir/Condition/{stored['cond-bob']}", moved).status_code == 403
    assert send(anna, "DELETE", f"/fhir/Observation/{stored['obs-bob']}").status_code == 403
