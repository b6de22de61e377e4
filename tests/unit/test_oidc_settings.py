"""The OpenID Connect sign-in's settings and its PKCE challenge (no provider needed; the flow
itself runs against a real provider in tests/integration/test_ui_oidc.py)."""
from __future__ import annotations

import pytest

from service.config import Settings
from service.security.oidc import pkce_challenge
from service.security.scopes import ROLES


def test_pkce_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636, Appendix B
    assert pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_no_issuer_means_no_oidc_sign_in() -> None:
    assert Settings.from_env({}).oidc_settings() is None


def test_default_scopes_ask_for_the_staff_role() -> None:
    oidc = Settings.from_env({"TOH_OIDC_ISSUER": "https://idp.example/realms/staff",
                              "TOH_OIDC_CLIENT_ID": "toh-ui"}).oidc_settings()
    assert oidc is not None and oidc.client_secret is None
    assert oidc.scopes.split() == ["openid", "profile", "fhirUser", *ROLES["staff"]]


@pytest.mark.parametrize("env, why", [
    ({"TOH_OIDC_ISSUER": "http://idp.example", "TOH_OIDC_CLIENT_ID": "c"}, "https"),
    ({"TOH_OIDC_ISSUER": "https://idp.example"}, "TOH_OIDC_CLIENT_ID"),
    ({"TOH_OIDC_ISSUER": "https://idp.example", "TOH_OIDC_CLIENT_ID": "c", "TOH_OIDC_SCOPES": "profile"}, "openid"),
])
def test_incomplete_settings_stop_the_start(env: dict[str, str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Settings.from_env(env).oidc_settings()


def test_http_is_allowed_on_loopback_only() -> None:
    for issuer in ("http://127.0.0.1:9000", "http://localhost:9000/realm", "http://[::1]:9000"):
        assert Settings.from_env({"TOH_OIDC_ISSUER": issuer, "TOH_OIDC_CLIENT_ID": "c"}).oidc_settings()
