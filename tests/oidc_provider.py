"""A small but real OpenID Connect provider for the tests, over HTTP on 127.0.0.1 (a threaded
http.server), speaking the authorization code flow with PKCE as a hospital's provider would:

    GET  /.well-known/openid-configuration   discovery (OpenID Connect Discovery 1.0)
    GET  /jwks                               its RSA public key
    GET  /authorize                          approves `user` at once (no login form) and
                                             redirects to redirect_uri with code and state,
                                             or with error=access_denied when `deny` is set
    POST /token                              checks the client's credentials (Basic or form,
                                             as `auth_methods` says), the code (once, this
                                             client, this redirect_uri) and the PKCE verifier
                                             (S256); answers an RS256 ID token and an RS256
                                             access token with the user's SMART scopes

What the tests vary: `deny`, `id_token_claims` (claims replaced in the ID token, e.g. nonce or
aud), `id_token_key` (sign the ID token with another key under the same kid), and they read
`token_requests` (each token request's form and Authorization header).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class User:
    """The person the provider signs in."""

    sub: str = "dr-osei"
    name: str = "Dr Ama Osei"
    scopes: tuple[str, ...] = ()


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str | None
    scope: str


@dataclass
class OidcProvider:
    """The provider (see module docstring); start() serves it, stop() ends it."""

    client_id: str = "toh-ui"
    client_secret: str = "toh-ui-secret-for-the-test-provider"
    audience: str = "toh-service"               # the access token's aud (the FHIR service)
    user: User = field(default_factory=User)
    auth_methods: tuple[str, ...] = ("client_secret_basic",)
    deny: bool = False
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    id_token_key: rsa.RSAPrivateKey | None = None
    kid: str = "test-idp-1"
    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- endpoints ---------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": list(self.auth_methods)}

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        if parts.path == "/.well-known/openid-configuration":
            return _json(handler, 200, self.discovery())
        if parts.path == "/jwks":
            return _json(handler, 200, self.jwks())
        if parts.path == "/authorize":
            return self._authorize(handler, {k: v[0] for k, v in parse_qs(parts.query).items()})
        return _json(handler, 404, {"error": "not_found"})

    def _authorize(self, handler: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        if query.get("client_id") != self.client_id or not query.get("redirect_uri"):
            return _json(handler, 400, {"error": "invalid_request"})   # never redirect to an unknown client
        back = query["redirect_uri"]
        answer: dict[str, str]
        if self.deny:
            answer = {"error": "access_denied", "error_description": "The user declined"}
        elif query.get("response_type") != "code" or query.get("code_challenge_method") != "S256" \
                or "openid" not in query.get("scope", "").split():
            answer = {"error": "invalid_request"}
        else:
            code = secrets.token_urlsafe(24)
            self.grants[code] = Grant(self.client_id, back, query.get("code_challenge", ""),
                                      query.get("nonce"), query.get("scope", ""))
            answer = {"code": code}
        if "state" in query:
            answer["state"] = query["state"]
        handler.send_response(302)
        handler.send_header("Location", back + ("&" if "?" in back else "?") + urlencode(answer))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        if urlsplit(handler.path).path != "/token":
            return _json(handler, 404, {"error": "not_found"})
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        authorization = handler.headers.get("Authorization") or ""
        self.token_requests.append({"form": dict(form), "authorization": authorization})
        if not self._client_authenticated(authorization, form):
            return _json(handler, 401, {"error": "invalid_client"})
        grant = self.grants.pop(form.get("code", ""), None)     # a code is good once
        if form.get("grant_type") != "authorization_code" or grant is None \
                or grant.redirect_uri != form.get("redirect_uri"):
            return _json(handler, 400, {"error": "invalid_grant"})
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or challenge != grant.challenge:
            return _json(handler, 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        return _json(handler, 200, self._tokens(grant))

    def _client_authenticated(self, authorization: str, form: dict[str, str]) -> bool:
        if authorization.startswith("Basic ") and "client_secret_basic" in self.auth_methods:
            pair = base64.b64decode(authorization[6:]).decode()
            client, _, secret = pair.partition(":")
            return unquote(client) == self.client_id and unquote(secret) == self.client_secret
        if "client_secret_post" in self.auth_methods:
            return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
        return False

    def _tokens(self, grant: Grant) -> dict[str, Any]:
        now = int(time.time())
        access = {"iss": self.issuer, "aud": self.audience, "sub": self.user.sub, "client_id": self.client_id,
                  "scope": " ".join(self.user.scopes), "iat": now, "exp": now + 600}
        identity: dict[str, Any] = {"iss": self.issuer, "aud": self.client_id, "sub": self.user.sub,
                                    "name": self.user.name, "iat": now, "exp": now + 600, "auth_time": now}
        if grant.nonce is not None:
            identity["nonce"] = grant.nonce
        identity.update(self.id_token_claims)
        headers = {"kid": self.kid}
        return {"token_type": "Bearer", "expires_in": 600, "scope": grant.scope,
                "access_token": jwt.encode(access, self.key, algorithm="RS256", headers=headers),
                "id_token": jwt.encode(identity, self.id_token_key or self.key, algorithm="RS256", headers=headers)}


def _json(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
