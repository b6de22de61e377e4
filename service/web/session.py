"""Signing in to the pages: a bearer token (e.g. `toh token --role staff`) given once in the
login form, or the access token of the OpenID Connect provider once the sign-in through it has
completed (views.oidc_callback, service.security.oidc), verified by the same TokenVerifier as
the REST API, and kept in Flask's signed session cookie: HttpOnly, SameSite=Lax, path /ui,
Secure when the request came over TLS (or through a proxy that says so with
X-Forwarded-Proto, or TOH_BASE_URL is https). Every page
request verifies the token again, so an expired or no longer trusted token ends the session.
The cookie is signed with TOH_UI_SECRET, else a key derived from the token secret (HMAC), else
one made in the data folder (service.security.secret).
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface

from service.config import Settings
from service.security import AccessGuard, InvalidToken, Principal, TokenVerifier
from service.security.secret import check_strength, data_folder_secret

TOKEN_KEY = "token"
COOKIE_NAME = "toh_ui_session"
COOKIE_PATH = "/ui"


def session_key(settings: Settings, verifier: TokenVerifier) -> str:
    """The key the session cookie is signed with (see module docstring). Raises WeakSecret for
    a weak TOH_UI_SECRET and OSError if the data folder cannot be written."""
    if settings.ui_secret:
        return check_strength(settings.ui_secret)
    if verifier.settings.secret:
        return hmac.new(verifier.settings.secret.encode(), b"toh-ui-session", hashlib.sha256).hexdigest()
    return data_folder_secret(settings.data_dir, "ui-secret")


def is_https(req: Request, settings: Settings) -> bool:
    """Whether the browser reached us over TLS: the request itself, a proxy's
    X-Forwarded-Proto, or a configured https TOH_BASE_URL."""
    forwarded = req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return req.is_secure or forwarded == "https" or (settings.base_url or "").startswith("https://")


class UiSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the Secure flag decided per request, for the pages
    only: outside COOKIE_PATH (the REST API, CDS Hooks...) no browser sends the cookie, and the
    request gets Flask's null session without building a signing serializer (about 5% of a
    read by id's time in its worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open_session(self, app: Flask, req: Request) -> Any:
        """The session of a page request; the null session (read-only, never saved) elsewhere."""
        if req.path != COOKIE_PATH and not req.path.startswith(COOKIE_PATH + "/"):
            return self.make_null_session(app)
        return super().open_session(app, req)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or is_https(request, self.settings)


def configure(app: Flask, settings: Settings, verifier: TokenVerifier) -> None:
    """Set the session cookie's key and flags on the application."""
    app.secret_key = session_key(settings, verifier)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_PATH=COOKIE_PATH,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = UiSessionInterface(settings)


def sign_in(verifier: TokenVerifier, token: str) -> Principal:
    """Verify token and start a new session holding it (anything in the old one is dropped, so
    a session cannot be fixed in advance). Raises InvalidToken."""
    principal = Principal.from_claims(verifier.verify(token.strip()))
    session.clear()
    session[TOKEN_KEY] = token.strip()
    return principal


def sign_out() -> None:
    """End the session (the cookie is emptied)."""
    session.clear()


def signed_in(verifier: TokenVerifier, owners: Any, compartment_types: Any) -> tuple[Principal, AccessGuard] | None:
    """The principal of this session's token and its guard, or None when there is no session
    or its token is no longer valid (the session is then ended)."""
    token = session.get(TOKEN_KEY)
    if not isinstance(token, str):
        return None
    try:
        principal = Principal.from_claims(verifier.verify(token))
    except InvalidToken:
        session.clear()
        return None
    return principal, AccessGuard(principal, owners, compartment_types)
