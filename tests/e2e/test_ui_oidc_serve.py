"""Signing in through an OpenID Connect provider against a real `toh serve` (gunicorn, two
workers: the pending sign-in lives in the session cookie, so it does not matter which worker
answers the callback) and the test provider process, over HTTP on 127.0.0.1, with a requests
session as the browser following every redirect and keeping the cookie."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from service.security.scopes import ROLES
from tests.conftest import LiveServer
from tests.oidc_provider import OidcProvider, User


def test_sign_in_through_the_provider_on_toh_serve(database_url: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    provider = OidcProvider(user=User(sub="dr-osei", scopes=ROLES["staff"])).start()
    for name, value in {"TOH_JWT_ISSUER": provider.issuer, "TOH_JWKS_URL": f"{provider.issuer}/jwks",
                        "TOH_OIDC_ISSUER": provider.issuer, "TOH_OIDC_CLIENT_ID": provider.client_id,
                        "TOH_OIDC_CLIENT_SECRET": provider.client_secret,
                        "TOH_OIDC_PROVIDER_NAME": "Test IdP"}.items():
        monkeypatch.setenv(name, value)
    server = LiveServer(database_url, tmp_path)
    try:
        site = server.base[:-len("/fhir")]
        browser = requests.Session()
        browser.headers["Authorization"] = None     # type: ignore[assignment]  # a browser: no bearer token
        login: Any = browser.get(f"{site}/ui/login", timeout=30)
        assert "Sign in with Test IdP" in login.text
        page = browser.get(f"{site}/ui/login/oidc", params={"next": "/ui/patients"}, timeout=30)
        assert page.status_code == 200 and page.url == f"{site}/ui/patients", page.text[:2000]
        assert [r.status_code for r in page.history] == [302, 302, 302]   # service, provider, callback
        assert "Signed in as <strong>dr-osei</strong>" in page.text
        assert len(provider.token_requests) == 1
        assert browser.get(f"{site}/ui/worklist", timeout=30).status_code == 200
    finally:
        server.stop()
        provider.stop()
