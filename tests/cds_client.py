"""A small CDS Hooks 2.0 client, as an EHR speaks the protocol (https://cds-hooks.hl7.org/2.0/):
discovery, then hook calls and feedback, each with a JWT signed by the EHR's own key, and
checks of every answer against the shapes the specification gives.

    keys = EhrKeys.generate(tmp_path, issuer="https://ehr.example.org")   # RSA + EC P-384, JWKS file
    client = CdsClient(transport, "http://toh.test", keys)
    services = client.discover()                 # checked: {"services": [...]}
    cards = client.call("toh-order-sign", body)  # checked: {"cards": [...]}

The transport is a function (method, url, headers, json) -> (status, headers, body), over
Flask's test client (`flask_transport`) or requests (`requests_transport`).
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

Transport = Callable[[str, str, Mapping[str, str], Any], tuple[int, Mapping[str, str], Any]]
HOOKS = {"patient-view", "order-sign", "order-select"}
INDICATORS = {"info", "warning", "critical"}


@dataclass
class EhrKeys:
    """An EHR's signing keys (RS384/RS256 with RSA, ES384 with EC P-384) and its JWKS file."""

    issuer: str
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    jwks_path: Path

    @classmethod
    def generate(cls, folder: Path, issuer: str = "https://ehr.example.org") -> EhrKeys:
        keys = cls(issuer, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                   ec.generate_private_key(ec.SECP384R1()), folder / f"jwks-{uuid.uuid4().hex[:8]}.json")
        keys.jwks_path.write_text(json.dumps(keys.jwks()))
        return keys

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (kids "rsa-1" and "ec-1")."""
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {"keys": [rsa_jwk | {"kid": "rsa-1", "use": "sig"}, ec_jwk | {"kid": "ec-1", "use": "sig", "alg": "ES384"}]}

    def setting(self) -> str:
        """This EHR's TOH_CDS_ISSUERS pair."""
        return f"{self.issuer}={self.jwks_path}"

    def token(self, audience: str, *, alg: str = "RS384", ttl: int = 300, issuer: str | None = None,
              jti: str | None = None, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        """A CDS client JWT for `audience` (the endpoint's URL), as the spec's example: header
        alg, typ JWT, kid; payload iss, aud, exp, iat, jti (claims override or add)."""
        now = int(time.time())
        body = {"iss": issuer or self.issuer, "aud": audience, "exp": now + ttl, "iat": now,
                "jti": jti or str(uuid.uuid4()), "tenant": "toh-tests"} | claims
        signer = key or (self.ec if alg.startswith("ES") else self.rsa)
        return jwt.encode(body, signer, algorithm=alg,
                          headers={"typ": "JWT", "kid": kid or ("ec-1" if alg.startswith("ES") else "rsa-1")})


def flask_transport(client: Any) -> Transport:
    """Send through Flask's test client (made with token=None, so only our JWT is sent)."""
    def send(method: str, url: str, headers: Mapping[str, str], body: Any) -> tuple[int, Mapping[str, str], Any]:
        parts = urlsplit(url)
        response = client.open(parts.path, method=method, headers=dict(headers), json=body,
                               base_url=f"{parts.scheme}://{parts.netloc}")
        return response.status_code, response.headers, response.get_json(silent=True)
    return send


def requests_transport(method: str, url: str, headers: Mapping[str, str], body: Any) -> tuple[int, Mapping[str, str], Any]:
    """Send over HTTP with requests (the Authorization header given, never the suite's default)."""
    response = requests.request(method, url, headers={"Authorization": None, **headers}, json=body, timeout=30)
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return response.status_code, response.headers, parsed


class CdsClient:
    """The EHR side of the protocol (see module docstring)."""

    def __init__(self, transport: Transport, root: str, keys: EhrKeys) -> None:
        self.send, self.root, self.keys = transport, root.rstrip("/"), keys

    def url(self, path: str) -> str:
        return f"{self.root}/cds-services{path}"

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                alg: str = "RS384") -> tuple[int, Mapping[str, str], Any]:
        """One call with a fresh JWT for its URL (or the token given)."""
        url = self.url(path)
        headers = {"Authorization": f"Bearer {self.keys.token(url, alg=alg) if token is None else token}"}
        return self.send(method, url, headers, body)

    def discover(self) -> list[dict[str, Any]]:
        """GET /cds-services, checked against the spec's discovery shape."""
        status, headers, body = self.request("GET", "")
        assert status == 200, body
        assert headers["Access-Control-Allow-Origin"]
        check_discovery(body)
        return list(body["services"])

    def call(self, service_id: str, request_body: dict[str, Any], *, alg: str = "RS384") -> list[dict[str, Any]]:
        """POST /cds-services/{id}: the cards, each checked against the spec's card shape."""
        status, _, body = self.request("POST", f"/{service_id}", request_body, alg=alg)
        assert status == 200, body
        check_response(body)
        return list(body["cards"])

    def feedback(self, service_id: str, items: list[dict[str, Any]]) -> int:
        status, _, _ = self.request("POST", f"/{service_id}/feedback", {"feedback": items})
        return status


# -- the spec's JSON shapes -------------------------------------------------------------------
def _coding(value: Any, *, display: bool = False) -> None:
    assert isinstance(value, dict) and set(value) <= {"system", "code", "display"}, value
    assert all(isinstance(v, str) for v in value.values())
    if display:
        assert value.get("display"), "override reasons must carry a display"


def check_discovery(body: Any) -> None:
    """CDS Hooks 2.0 "Discovery": services with hook, description, id (required), title and
    prefetch (optional; prefetch values are FHIR query templates)."""
    assert isinstance(body, dict) and isinstance(body.get("services"), list)
    for service in body["services"]:
        assert isinstance(service.get("hook"), str) and isinstance(service.get("description"), str)
        assert isinstance(service.get("id"), str) and service["id"]
        assert isinstance(service.get("title", ""), str)
        for key, query in (service.get("prefetch") or {}).items():
            assert isinstance(key, str) and isinstance(query, str) and "{{context.patientId}}" in query


def check_card(card: Any) -> None:
    """CDS Hooks 2.0 "Card Attributes" (and Source, Suggestion, Action, Link)."""
    assert isinstance(card, dict)
    assert set(card) <= {"uuid", "summary", "detail", "indicator", "source", "suggestions", "selectionBehavior",
                         "overrideReasons", "links"}, set(card)
    uuid.UUID(card["uuid"])
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
    assert card["indicator"] in INDICATORS
    assert isinstance(card.get("detail", ""), str)
    source = card["source"]
    assert isinstance(source.get("label"), str) and source["label"]
    if "url" in source:
        assert urlsplit(source["url"]).scheme in ("http", "https")
    if "topic" in source:
        _coding(source["topic"])
    if "suggestions" in card:
        assert card.get("selectionBehavior") in ("at-most-one", "any")
        if card["selectionBehavior"] == "at-most-one":
            assert len(card["suggestions"]) >= 1
        for suggestion in card["suggestions"]:
            assert isinstance(suggestion["label"], str) and suggestion["label"]
            uuid.UUID(suggestion["uuid"])
            for action in suggestion.get("actions", ()):
                assert action["type"] in ("create", "update", "delete") and isinstance(action["description"], str)
                if action["type"] in ("create", "update"):
                    assert isinstance(action["resource"].get("resourceType"), str)
                else:
                    assert "/" in action["resourceId"]
    for reason in card.get("overrideReasons", ()):
        _coding(reason, display=True)
    for link in card.get("links", ()):
        assert isinstance(link["label"], str) and link["type"] in ("absolute", "smart")
        assert urlsplit(link["url"]).scheme in ("http", "https")


def check_response(body: Any) -> None:
    """CDS Hooks 2.0 "HTTP Response": {"cards": [Card...]} (and optional systemActions)."""
    assert isinstance(body, dict) and isinstance(body.get("cards"), list), body
    assert set(body) <= {"cards", "systemActions"}
    for card in body["cards"]:
        check_card(card)
