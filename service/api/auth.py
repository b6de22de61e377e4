"""Who is asking, decided once per request at the edge: `Authorization: Bearer <JWT>` is
verified (service.security.tokens), the principal and its AccessGuard are kept for the
request, and views ask `guard()`. Open without a token: GET [base]/metadata,
GET [base]/.well-known/smart-configuration and /healthz. No token, or one that cannot be
accepted: 401 with RFC 6750's WWW-Authenticate challenge; insufficient scope: 403 (raised by
the guard). Both leave as OperationOutcomes.
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, g, request

from service.api.context import FHIR_PREFIX, services
from service.api.negotiation import json_response
from service.fhir.errors import Unauthorized
from service.security import AccessGuard, InvalidToken, Principal
from service.security.scopes import ROLES

OPEN_PATHS = frozenset({"/healthz", f"{FHIR_PREFIX}/metadata", f"{FHIR_PREFIX}/.well-known/smart-configuration"})

bp = Blueprint("smart", __name__)


def bearer_token() -> str:
    """The request's bearer token; raises Unauthorized when there is none."""
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("This request needs an Authorization: Bearer token (see `toh token`)", error=None)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'", error="invalid_request")
    return token.strip()


def authenticate() -> Principal:
    """The request's principal from its verified token; raises Unauthorized."""
    try:
        claims = services().verifier.verify(bearer_token())
    except InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc
    return Principal.from_claims(claims)


def principal() -> Principal | None:
    """The request's principal, if it was authenticated."""
    return g.get("toh_principal")


def guard() -> AccessGuard:
    """The request's access guard (every FHIR view but the open ones has one)."""
    found: AccessGuard | None = g.get("toh_guard")
    if found is None:  # a view reached without the before-request check: refuse rather than open
        raise Unauthorized("This request needs an Authorization: Bearer token", error=None)
    return found


def _check_token() -> None:
    if not request.path.startswith(FHIR_PREFIX) or request.path in OPEN_PATHS:
        return
    who = authenticate()
    g.toh_principal = who
    search = services().search
    g.toh_guard = AccessGuard(who, search.compartment_owners, search.compartment_types())


@bp.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """GET [base]/.well-known/smart-configuration (SMART App Launch 2.0, from configuration)."""
    settings = services().settings
    body: dict[str, object] = {
        "issuer": settings.jwt_issuer,
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "grant_types_supported": ["client_credentials", "authorization_code"],
        "scopes_supported": sorted({s for scopes in ROLES.values() for s in scopes}
                                   | {"patient/*.rs", "user/*.cruds", "system/*.cruds", "launch/patient"}),
        "response_types_supported": ["code"],
        "capabilities": ["permission-v1", "permission-v2", "permission-patient", "permission-user",
                         "client-confidential-symmetric", "context-standalone-patient"],
        "code_challenge_methods_supported": ["S256"],
    }
    if settings.jwks_url:
        body["jwks_uri"] = settings.jwks_url
    if settings.token_endpoint:
        body["token_endpoint"] = settings.token_endpoint
    if settings.authorization_endpoint:
        body["authorization_endpoint"] = settings.authorization_endpoint
    return json_response(body)


def init_app(app: Flask) -> None:
    """Check the token of every FHIR request but the open ones, before anything else runs."""
    app.before_request(_check_token)
    app.register_blueprint(bp, url_prefix=FHIR_PREFIX)
