"""Signing in to the staff pages through an OpenID Connect provider, on SQLite and PostgreSQL:
the app (Flask's test client) against a real provider process over HTTP on 127.0.0.1
(tests/oidc_provider.py), the browser's redirects followed by hand: login -> provider ->
callback -> worklist. Refusals (state, nonce, another key, another audience, the provider's
error) sign nobody in and say why; every attempt, and every token-form sign-in, is audited."""
from __future__ import annotations

import base64
import html
import json
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from service.security.scopes import ROLES
from tests.auth import make_token
from tests.integration.test_ui import csrf_of, text_of
from tests.oidc_provider import OidcProvider, User, new_key

STAFF = ROLES["staff"]


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    idp = OidcProvider(user=User(sub="dr-osei", scopes=STAFF)).start()
    yield idp
    idp.stop()


@pytest.fixture
def oidc_app(database_url: str, clock: Any, provider: OidcProvider) -> Iterator[Any]:
    """The service with the provider configured: its access tokens are the bearer tokens
    (TOH_JWT_ISSUER its issuer, TOH_JWKS_URL its JWKS), staff sign in through it."""
    from service import create_app
    application = create_app({
        "database_url": database_url, "base_url": "http://toh.test/fhir",
        "jwt_issuer": provider.issuer, "jwks_url": f"{provider.issuer}/jwks",
        "oidc_issuer": provider.issuer, "oidc_client_id": provider.client_id,
        "oidc_client_secret": provider.client_secret, "oidc_provider_name": "Test IdP"}, clock=clock)
    application.config["TESTING"] = True
    yield application
    application.extensions["toh"].database.dispose()


def to_provider(ui: Any, next_path: str = "/ui/worklist") -> str:
    """Press "Sign in with ..." on the login page; the provider's authorization URL."""
    page = ui.get("/ui/login")
    link = re.search(r'id="oidc-sign-in" href="([^"]+)"', page.get_data(as_text=True))
    assert link and urlsplit(html.unescape(link.group(1))).path == "/ui/login/oidc", "the page offers the provider"
    started = ui.get("/ui/login/oidc", query_string={"next": next_path})
    assert started.status_code == 302, started.get_data(as_text=True)
    return str(started.headers["Location"])


def at_provider(url: str) -> str:
    """The browser at the provider's authorization endpoint: where it is sent back to."""
    answer = requests.get(url, allow_redirects=False, timeout=10, headers={"Authorization": None})
    assert answer.status_code == 302, answer.text
    return str(answer.headers["Location"])


def callback(ui: Any, url: str) -> Any:
    """The browser back at the service's callback (the provider's redirect)."""
    parts = urlsplit(url)
    assert parts.path == "/ui/oidc/callback"
    return ui.get(parts.path, query_string=parts.query)


def login_events(app: Any, issuer: str, outcome: str) -> list[dict[str, Any]]:
    """The sign-in AuditEvents of this outcome (0 accepted, 4 refused), read over REST."""
    reader = app.test_client(token=make_token(issuer=issuer))
    found = reader.get("/fhir/AuditEvent", query_string={"subtype": "login", "outcome": outcome})
    assert found.status_code == 200, found.get_data(as_text=True)
    return [e["resource"] for e in found.get_json().get("entry", [])]


def session_of(app: Any, ui: Any) -> dict[str, Any]:
    cookie = ui.get_cookie("toh_ui_session", path="/ui")
    assert cookie is not None
    return dict(app.session_interface.get_signing_serializer(app).loads(cookie.value))


def assert_refused(app: Any, ui: Any, response: Any, why: str, provider: OidcProvider) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert why in text_of(response)
    assert ui.get("/ui/worklist").headers["Location"].startswith("/ui/login"), "nobody is signed in"
    (event,) = login_events(app, provider.issuer, "4")
    assert why in event["outcomeDesc"]
    assert event["agent"][0]["who"]["display"].startswith("anonymous")


# -- the happy path ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_sign_in_through_the_provider_end_to_end(oidc_app: Any, provider: OidcProvider, method: str) -> None:
    provider.auth_methods = (method,)
    ui = oidc_app.test_client(token=None)
    assert "Sign in with Test IdP" in text_of(ui.get("/ui/login"))

    authorize = to_provider(ui, "/ui/patients")
    request = urlsplit(authorize)
    assert f"{request.scheme}://{request.netloc}{request.path}" == f"{provider.issuer}/authorize"
    asked = {k: v[0] for k, v in parse_qs(request.query).items()}
    assert asked["response_type"] == "code" and asked["client_id"] == provider.client_id
    assert asked["code_challenge_method"] == "S256" and asked["state"] and asked["nonce"]
    assert asked["redirect_uri"] == "http://localhost/ui/oidc/callback"
    assert set(STAFF) <= set(asked["scope"].split()) and "openid" in asked["scope"].split()

    back = callback(ui, at_provider(authorize))
    assert back.status_code == 302 and back.headers["Location"] == "/ui/patients"

    # the code was exchanged with the client's credentials as the provider asks, and the verifier
    (exchange,) = provider.token_requests
    if method == "client_secret_basic":
        assert exchange["authorization"] == "Basic " + base64.b64encode(
            f"{provider.client_id}:{provider.client_secret}".encode()).decode()
        assert "client_secret" not in exchange["form"]
    else:
        assert exchange["form"]["client_secret"] == provider.client_secret
        assert not exchange["authorization"].startswith("Basic")
    assert exchange["form"]["code_verifier"]

    # the session is the token form's: the bearer token alone, here the provider's access token
    kept = session_of(oidc_app, ui)
    assert set(kept) - {"csrf_token", "_flashes"} == {"token"}
    assert kept["token"].count(".") == 2
    page = ui.get("/ui/worklist")
    assert page.status_code == 200 and "Signed in as dr-osei" in text_of(page)

    (event,) = login_events(oidc_app, provider.issuer, "0")
    assert event["subtype"][0]["code"] == "110122" and event["type"]["code"] == "110114"
    assert event["agent"][0]["who"]["identifier"]["value"] == "dr-osei"
    assert event["entity"][0]["what"]["identifier"]["value"] == f"oidc {provider.issuer}"


def test_a_callback_cannot_be_replayed(oidc_app: Any, provider: OidcProvider) -> None:
    ui = oidc_app.test_client(token=None)
    back_url = at_provider(to_provider(ui))
    assert callback(ui, back_url).status_code == 302
    other = oidc_app.test_client(token=None)      # another browser given the same answer
    assert_refused(oidc_app, other, callback(other, back_url), "not started from this browser", provider)


# -- refusals ---------------------------------------------------------------------------------
def test_state_mismatch_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    ui = oidc_app.test_client(token=None)
    back = urlsplit(at_provider(to_provider(ui)))
    query = {k: v[0] for k, v in parse_qs(back.query).items()}
    query["state"] = "forged-" + query["state"]
    response = ui.get(back.path, query_string=urlencode(query))
    assert_refused(oidc_app, ui, response, "state mismatch", provider)
    assert provider.token_requests == [], "the code is not exchanged"


def test_nonce_mismatch_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.id_token_claims = {"nonce": "a-nonce-of-another-sign-in"}
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "nonce mismatch", provider)


def test_an_id_token_signed_by_another_key_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.id_token_key = new_key()           # same kid, another key
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "signature does not verify", provider)


def test_an_id_token_for_another_client_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.id_token_claims = {"aud": "another-client"}
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "meant for another client", provider)


def test_the_providers_error_is_shown(oidc_app: Any, provider: OidcProvider) -> None:
    provider.deny = True
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "refused the sign-in: access_denied (The user declined)", provider)


def test_an_access_token_without_the_services_audience_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.audience = "another-api"
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "access token cannot be accepted here", provider)


def test_a_failed_exchange_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.client_secret = "the-provider-now-expects-another-secret"
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "did not exchange the authorization code (HTTP 401, invalid_client)",
                   provider)


def test_an_expired_id_token_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.id_token_claims = {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "The ID token has expired", provider)


def test_an_id_token_for_another_user_than_the_access_token_is_refused(oidc_app: Any, provider: OidcProvider) -> None:
    provider.id_token_claims = {"sub": "someone-else"}
    ui = oidc_app.test_client(token=None)
    response = callback(ui, at_provider(to_provider(ui)))
    assert_refused(oidc_app, ui, response, "names another user than its ID token", provider)


def test_an_unreachable_provider_is_said_so(database_url: str, clock: Any) -> None:
    from service import create_app
    gone = OidcProvider().start()
    gone.stop()                                   # nothing listens there any more
    app = create_app({"database_url": database_url, "oidc_issuer": gone.issuer, "oidc_client_id": "toh-ui"},
                     clock=clock)
    try:
        response = app.test_client(token=None).get("/ui/login/oidc")
        assert response.status_code == 502 and "cannot be fetched" in text_of(response)
    finally:
        app.extensions["toh"].database.dispose()


# -- without a provider -----------------------------------------------------------------------
def test_without_a_provider_there_is_no_oidc_sign_in(app: Any) -> None:
    ui = app.test_client(token=None)
    page = ui.get("/ui/login")
    assert page.status_code == 200 and "Sign in with" not in text_of(page) and "oidc" not in page.get_data(as_text=True)
    assert ui.get("/ui/login/oidc").status_code == 404
    assert ui.get("/ui/oidc/callback?code=x&state=y").status_code == 404


def test_token_sign_in_attempts_are_audited(app: Any) -> None:
    ui = app.test_client(token=None)
    csrf = csrf_of(ui.get("/ui/login").get_data(as_text=True))
    assert ui.post("/ui/login", data={"token": "not-a-token", "csrf_token": csrf}).status_code == 401
    token = make_token(STAFF, sub="nurse-kim")
    assert ui.post("/ui/login", data={"token": token, "csrf_token": csrf}).status_code == 302
    (accepted,), (refused,) = login_events(app, "toh-service", "0"), login_events(app, "toh-service", "4")
    assert accepted["agent"][0]["who"]["display"] == "nurse-kim"
    assert accepted["entity"][0]["what"]["identifier"]["value"] == "token"
    assert "not a well-formed JWT" in refused["outcomeDesc"]
    assert json.dumps(refused).find("not-a-token") == -1, "the token itself is not recorded"
