"""Signing in to the staff pages through an OpenID Connect provider: the authorization code
flow with PKCE, state and nonce (OpenID Connect Core 1.0 §3.1, RFC 7636), as a relying party.

    client = OidcClient(OidcSettings(issuer=..., client_id=..., client_secret=...))
    start = client.start(redirect_uri)        # -> Start: the provider URL to send the browser
                                              #    to, and what to keep until it comes back
    signed = client.finish(start.pending, callback_query)   # -> SignedIn (raises SignInRefused)

The provider is found by discovery (`{issuer}/.well-known/openid-configuration`, OpenID
Connect Discovery 1.0; its `issuer` must be the configured one). `finish` checks `state`,
exchanges the code at the token endpoint (client_secret_basic, or client_secret_post when the
provider offers only that, or no client authentication without a secret: PKCE alone), and
validates the ID token (§3.1.3.7): its signature against the provider's JWKS (asymmetric
algorithms only), `iss`, `aud` (the client id; `azp` when several audiences), `exp`, `iat`
and `nonce`.

Who the user is to the FHIR service is decided by the provider's *access token*, not the ID
token: it is the bearer token the session keeps, checked by the same TokenVerifier as every
REST request (TOH_JWT_ISSUER the provider's issuer, TOH_JWKS_URL its JWKS, TOH_JWT_AUDIENCE
its `aud`), so there is one authorization path and the scopes come from the provider. The
caller verifies it so, and requires it to name the same `sub` as the ID token.

No web framework here; HTTP calls go through `requests` with timeouts and no redirects.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

import jwt
import requests

from service.security.tokens import why_refused

# Asymmetric algorithms only: an HMAC-signed ID token (keyed with the client secret) or
# `alg: none` is refused.
ID_TOKEN_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
DISCOVERY_PATH = "/.well-known/openid-configuration"
DISCOVERY_SECONDS = 3600.0          # discovery answers are kept this long
TIMEOUT = (3.05, 10.0)              # connect, read seconds of every call to the provider
PENDING_SECONDS = 600               # a sign-in must come back from the provider within this time


class SignInRefused(Exception):
    """A sign-in that cannot be completed; str() says why in words fit for the login page
    (no secrets, no token content)."""


class ProviderUnavailable(SignInRefused):
    """The provider could not be reached or answered something unusable (not the user's fault)."""


@dataclass(frozen=True)
class OidcSettings:
    """The relying party's registration with one provider."""

    issuer: str                     # e.g. https://login.hospital.example/realms/staff
    client_id: str
    client_secret: str | None = None
    scopes: str = "openid"          # space-separated; must contain openid
    name: str = "the identity provider"   # shown as "Sign in with <name>"
    leeway_seconds: int = 60

    def __post_init__(self) -> None:
        if not _trusted_url(self.issuer):
            raise ValueError(f"TOH_OIDC_ISSUER must be an https URL (http only on loopback), got {self.issuer!r}")
        if not self.client_id:
            raise ValueError("TOH_OIDC_CLIENT_ID is required with TOH_OIDC_ISSUER")
        if "openid" not in self.scopes.split():
            raise ValueError("TOH_OIDC_SCOPES must contain openid")


@dataclass(frozen=True)
class Start:
    """Where to send the browser, and what to keep (in the session) until it comes back."""

    url: str
    pending: dict[str, Any]         # state, nonce, code_verifier, redirect_uri, started (epoch s)


@dataclass(frozen=True)
class SignedIn:
    """A completed sign-in: the access token (the bearer token for the service) and the ID
    token's verified claims."""

    access_token: str
    id_claims: dict[str, Any]


def _trusted_url(url: str) -> bool:
    """https, or http to a loopback address (a provider on the same machine, or in tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class OidcClient:
    """The relying party of one provider (see module docstring); one per application,
    thread-safe. `session` is the HTTP seam (a requests.Session)."""

    def __init__(self, settings: OidcSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._http = session or requests.Session()
        self._lock = threading.Lock()
        self._discovery: tuple[dict[str, Any], float] | None = None      # (document, fetched at)
        self._jwks: jwt.PyJWKClient | None = None

    # -- discovery ---------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        """The provider's metadata (cached DISCOVERY_SECONDS). Raises ProviderUnavailable when it
        cannot be fetched, is not JSON, names another issuer or lacks an endpoint."""
        with self._lock:
            if self._discovery is not None and time.monotonic() - self._discovery[1] < DISCOVERY_SECONDS:
                return self._discovery[0]
        url = self.settings.issuer.rstrip("/") + DISCOVERY_PATH
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != self.settings.issuer:
            raise ProviderUnavailable("The identity provider's discovery document names another issuer")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(document.get(name), str) or not _trusted_url(document[name]):
                raise ProviderUnavailable(f"The identity provider's discovery document has no usable {name}")
        with self._lock:
            self._discovery = (document, time.monotonic())
            if self._jwks is None or self._jwks.uri != document["jwks_uri"]:
                self._jwks = jwt.PyJWKClient(document["jwks_uri"], cache_keys=True, lifespan=300, timeout=5)
        return document

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, timeout=TIMEOUT, allow_redirects=False,
                                      headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"The identity provider's {what} cannot be fetched "
                                      f"({type(exc).__name__})") from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"The identity provider's {what} is not a JSON object")
        return document

    # -- the flow ----------------------------------------------------------------------------
    def start(self, redirect_uri: str, now: float | None = None) -> Start:
        """A new authorization request (§3.1.2.1) with fresh state, nonce and PKCE verifier.
        Raises ProviderUnavailable (discovery)."""
        endpoint = self.discovery()["authorization_endpoint"]
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
        query = urlencode({"response_type": "code", "client_id": self.settings.client_id,
                           "redirect_uri": redirect_uri, "scope": self.settings.scopes, "state": state,
                           "nonce": nonce, "code_challenge": pkce_challenge(verifier),
                           "code_challenge_method": "S256"})
        separator = "&" if urlsplit(endpoint).query else "?"
        pending = {"state": state, "nonce": nonce, "code_verifier": verifier, "redirect_uri": redirect_uri,
                   "started": int(now if now is not None else time.time())}
        return Start(url=f"{endpoint}{separator}{query}", pending=pending)

    def finish(self, pending: Mapping[str, Any] | None, query: Mapping[str, str],
               now: float | None = None) -> SignedIn:
        """Complete the sign-in from the provider's redirect (the callback's query parameters)
        and what start() asked to keep. Raises SignInRefused (an error from the provider, a
        missing, stale or mismatched state, an ID token that does not validate, an access token
        for someone else) or ProviderUnavailable (the token endpoint failed)."""
        if not isinstance(pending, Mapping) or not isinstance(pending.get("state"), str):
            raise SignInRefused("This sign-in was not started from this browser, or was already used; "
                                "start again")
        if not hmac.compare_digest(str(query.get("state", "")).encode(), pending["state"].encode()):
            raise SignInRefused("The identity provider's answer does not belong to this sign-in (state "
                                "mismatch); start again")
        if query.get("error"):
            description = str(query.get("error_description", ""))[:200]
            raise SignInRefused(f"The identity provider refused the sign-in: {str(query['error'])[:64]}"
                                + (f" ({description})" if description else ""))
        clock = now if now is not None else time.time()
        if clock - float(pending.get("started", 0)) > PENDING_SECONDS:
            raise SignInRefused("The sign-in took too long; start again")
        code = query.get("code")
        if not code:
            raise SignInRefused("The identity provider's answer carries no authorization code")
        tokens = self._exchange(str(code), pending)
        claims = self.validate_id_token(tokens["id_token"], str(pending.get("nonce", "")), now=clock)
        return SignedIn(access_token=tokens["access_token"], id_claims=claims)

    def _exchange(self, code: str, pending: Mapping[str, Any]) -> dict[str, str]:
        """The token request (§3.1.3.1) with the PKCE verifier and the client's credentials."""
        document = self.discovery()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": str(pending.get("redirect_uri")),
                "code_verifier": str(pending.get("code_verifier"))}
        headers = {"Accept": "application/json"}
        secret = self.settings.client_secret
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if secret and ("client_secret_basic" in methods or "client_secret_post" not in methods):
            # RFC 6749 §2.3.1: id and secret form-urlencoded before the Basic encoding
            pair = f"{quote(self.settings.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.settings.client_id
            if secret:
                form["client_secret"] = secret
        try:
            response = self._http.post(document["token_endpoint"], data=form, headers=headers,
                                       timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"The identity provider's token endpoint cannot be reached "
                                      f"({type(exc).__name__})") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise SignInRefused("The identity provider did not exchange the authorization code "
                                f"(HTTP {response.status_code}" + (f", {str(error)[:64]}" if error else "") + ")")
        if str(body.get("token_type", "")).lower() != "bearer" or \
                not isinstance(body.get("access_token"), str) or not isinstance(body.get("id_token"), str):
            raise SignInRefused("The identity provider's token response lacks a bearer access token "
                                "or an ID token")
        return {"access_token": body["access_token"], "id_token": body["id_token"]}

    def validate_id_token(self, id_token: str, nonce: str, now: float | None = None) -> dict[str, Any]:
        """The claims of an ID token that passes §3.1.3.7 (see module docstring). Raises
        SignInRefused saying which check failed."""
        document = self.discovery()
        offered = document.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in ID_TOKEN_ALGORITHMS if a in offered]
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise SignInRefused("The ID token is not a well-formed JWT") from exc
        if header.get("alg") not in algorithms:
            raise SignInRefused(f"ID tokens signed with {header.get('alg')!r} are not accepted")
        assert self._jwks is not None      # made by discovery()
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token)
        except (jwt.PyJWKClientError, jwt.PyJWTError) as exc:
            raise SignInRefused(f"The ID token's key {header.get('kid')!r} is not in the identity "
                                "provider's JWKS") from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key, algorithms=algorithms, audience=self.settings.client_id,
                issuer=self.settings.issuer, leeway=self.settings.leeway_seconds,
                options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_iat": True})
        except jwt.PyJWTError as exc:
            raise SignInRefused(why_refused(exc, "The ID token", audience="is meant for another client (aud)",
                                            issuer="comes from another issuer")) from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self.settings.client_id:
            raise SignInRefused("The ID token was issued to another client (azp)")
        if not nonce or not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SignInRefused("The ID token does not belong to this sign-in (nonce mismatch)")
        return claims
