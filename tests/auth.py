"""Tokens for the test suite, made like any client makes them.

The suite signs with one strong test secret (TOH_JWT_SECRET, set for the whole test run in
tests/conftest.py, so in-process apps and every `toh serve` a test starts accept it).
By default every client sends DEFAULT_TOKEN, a `system/*.cruds` token that may do anything
an EHR may, plus read the audit trail:

- the Flask test client (`client` fixture, and any `app.test_client()`);
- `requests` (and the FHIR clients built on it, fhirpy and fhirclient) towards a loopback
  server (127.0.0.1, localhost), unless the request names its own Authorization header.

A test about refusals asks for no token explicitly: `app.test_client(token=None)` (or the
`anonymous_client` fixture), `headers={"Authorization": None}` with requests, or its own
token from `make_token(...)`.
"""
from __future__ import annotations

import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from flask.testing import FlaskClient

TEST_SECRET = "toh-test-suite-secret-5f0c8a7e2b4d4f61a9e3c2d1b0a98765"
ISSUER = AUDIENCE = "toh-service"
DEFAULT_SCOPES = ("system/*.cruds", "system/AuditEvent.rs")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def make_token(scopes: tuple[str, ...] | list[str] | str = DEFAULT_SCOPES, *, sub: str | None = "test-suite",
               patient: str | None = None, ttl: int = 86400, secret: str = TEST_SECRET,
               issuer: str = ISSUER, audience: str = AUDIENCE, algorithm: str = "HS256",
               headers: dict[str, Any] | None = None, **claims: Any) -> str:
    """A signed token; claims override or add to the standard ones (exp=..., nbf=...)."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": issuer, "aud": audience, "client_id": "toh-tests",
                            "scope": scopes if isinstance(scopes, str) else " ".join(scopes),
                            "iat": now, "nbf": now, "exp": now + ttl}
    if sub is not None:
        body["sub"] = sub
    if patient is not None:
        body["patient"] = patient
    body.update(claims)
    return jwt.encode(body, secret, algorithm=algorithm, headers=headers)


@lru_cache(maxsize=1)
def default_token() -> str:
    """The token every test client sends unless told otherwise (one per test process)."""
    return make_token()


def bearer(token: str | None = None) -> dict[str, str]:
    """{'Authorization': 'Bearer <token>'} (the default token if none given)."""
    return {"Authorization": f"Bearer {token or default_token()}"}


class _Default:
    pass


DEFAULT = _Default()


class TokenClient(FlaskClient):
    """Flask's test client, sending a bearer token unless made with token=None."""

    def __init__(self, *args: Any, token: str | None | _Default = DEFAULT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        chosen = default_token() if isinstance(token, _Default) else token
        if chosen:
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {chosen}"


_send = requests.Session.request


def _request_with_token(self: requests.Session, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
    """requests.Session.request, adding the default token towards a loopback server when the
    caller (or the session) names no Authorization header of its own."""
    headers = kwargs.get("headers") or {}
    named = any(str(k).lower() == "authorization" for k in list(headers) + list(self.headers))
    if not named and urlsplit(str(url)).hostname in LOOPBACK:
        kwargs["headers"] = {**headers, **bearer()}
    return _send(self, method, url, *args, **kwargs)


def install(monkeypatch: Any) -> None:
    """Make every test client carry the default token (see module docstring)."""
    from flask import Flask
    monkeypatch.setenv("TOH_JWT_SECRET", TEST_SECRET)
    monkeypatch.setattr(Flask, "test_client_class", TokenClient)
    monkeypatch.setattr(requests.Session, "request", _request_with_token)
