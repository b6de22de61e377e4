"""CDS Hooks 2.0 endpoints (https://cds-hooks.hl7.org/2.0/), over service.cds and
service.workflows.cds:

    GET     /cds-services                    the discovery document
    POST    /cds-services/{id}               a hook call -> {"cards": [...]}
    POST    /cds-services/{id}/feedback      what the clinician did with cards -> AuditEvents
    OPTIONS on each                          CORS preflight (no token needed)

Every call but a preflight needs `Authorization: Bearer <JWT>` signed by an EHR named in
TOH_CDS_ISSUERS, whose `aud` is the URL of the endpoint called (the public root, from
TOH_BASE_URL without its /fhir when set, else the request's own, plus the path); refusals
are 401 OperationOutcomes (service.security.cds_clients). Other errors are OperationOutcomes
too: 400 for a malformed call, 404 for an unknown service, 412 when the patient's data cannot
be read. CORS: any origin may call (the bearer JWT, not a cookie, is the credential), with
the Authorization and Content-Type headers.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Flask, Response, current_app, json, request

from service.api.context import FHIR_PREFIX, services
from service.api.negotiation import request_resource
from service.audit.events import cds_feedback_event, event_json
from service.cds import SERVICES, CdsService, Feedback, discovery, parse_feedback, parse_hook_request
from service.config import PATIENT_PAGE, site_root
from service.fhir.errors import NotFound, PreconditionFailed, Unauthorized
from service.fhir.resources import new_id
from service.security import AccessGuard, Principal
from service.security.cds_clients import CdsClientVerifier, ReplayCheck
from service.security.tokens import InvalidToken
from service.store.cds_jti import remember_jti
from service.workflows.cds import Sources, answer_hook

PREFIX = "/cds-services"
PURGE_EVERY_SECONDS = 60         # expired jtis are deleted about this often per process
EXTENSION = "toh_cds"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept",
    "Access-Control-Expose-Headers": "WWW-Authenticate, X-Request-ID",
    "Access-Control-Max-Age": "600",
}

bp = Blueprint("cds_hooks", __name__)


def public_root() -> str:
    """The service's public root URL (no trailing slash): TOH_BASE_URL without /fhir, else the
    request's host URL."""
    configured = services().settings.base_url
    if configured:
        return site_root(configured)
    return request.url_root.rstrip("/")


def _authenticate() -> dict[str, Any]:
    """The claims of the call's JWT, checked for this endpoint's URL; raises Unauthorized."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A CDS Hooks call needs Authorization: Bearer <JWT signed by the EHR>",
                           error=None if not header else "invalid_request", realm="toh-cds")
    verifier: CdsClientVerifier = current_app.extensions[EXTENSION]
    try:
        return verifier.verify(token.strip(), audience=public_root() + request.path)
    except InvalidToken as exc:
        raise Unauthorized(str(exc), realm="toh-cds") from exc


def _service(service_id: str) -> CdsService:
    found = SERVICES.get(service_id)
    if found is None:
        raise NotFound(f"No CDS service {service_id!r}; GET {PREFIX} lists them")
    return found


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), mimetype="application/json")


@bp.get("")
def discover() -> Response:
    """The discovery document (CDS Hooks 2.0, "Discovery"). Raises Unauthorized."""
    _authenticate()
    return _json(discovery())


@bp.post("/<service_id>")
def call(service_id: str) -> Response:
    """A hook call: the cards of the service (CDS Hooks 2.0, "Calling a CDS Service").

    Raises NotFound, Unauthorized, BadRequest (a malformed call), PreconditionFailed (the
    patient's data cannot be read)."""
    service = _service(service_id)
    _authenticate()
    hook = parse_hook_request(request_resource(), service)
    svc = services()
    own = (svc.settings.base_url or "", request.url_root.rstrip("/") + FHIR_PREFIX)
    sources = Sources(svc.database, svc.clinical.terminology, tuple(u for u in own if u), _guard_for)
    timeline = PATIENT_PAGE.format(root=public_root(), id=hook.patient_id)
    return _json(answer_hook(service, hook, sources, svc.clock.now().date(), timeline))


def _guard_for(access_token: str | None) -> AccessGuard:
    """The access guard of a fhirAuthorization token for this server's own store: the token
    must be one the FHIR API accepts (service.security.tokens). Raises PreconditionFailed."""
    svc = services()
    if not access_token:
        raise PreconditionFailed("fhirServer is this server: send fhirAuthorization with a token it accepts, "
                                 "or the prefetch")
    try:
        who = Principal.from_claims(svc.verifier.verify(access_token))
    except InvalidToken as exc:
        raise PreconditionFailed(f"The fhirAuthorization token is not accepted by this server: {exc}") from exc
    return AccessGuard(who, svc.search.compartment_owners, svc.search.compartment_types())


@bp.post("/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """Feedback on cards (CDS Hooks 2.0, "Feedback"): one AuditEvent per item, durable before
    the answer (200, {}). Raises NotFound, Unauthorized, BadRequest."""
    service = _service(service_id)
    claims = _authenticate()
    items = parse_feedback(request_resource())
    svc = services()
    now = svc.clock.now()
    rows = [_feedback_row(service, item, claims, now) for item in items]
    svc.database.append_audit(rows)
    return _json({})


def _feedback_row(service: CdsService, item: Feedback, claims: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The audit table's row (columns and the AuditEvent's JSON) of one feedback item."""
    event_id = new_id()
    subject = claims.get("sub")
    event = cds_feedback_event(
        service.id, item.card, item.outcome, item.outcome_timestamp, event_id, now, issuer=str(claims["iss"]),
        subject=subject if isinstance(subject, str) else None, accepted_suggestions=item.accepted_suggestions,
        reason=item.reason, user_comment=item.user_comment, address=request.remote_addr,
        source=public_root() + PREFIX)
    return {"id": event_id, "recorded": now, "action": "E", "subtype": "cds-feedback", "outcome": "0",
            "agent": str(claims["iss"])[:255], "agent_ref": None, "entity": f"urn:uuid:{item.card}"[:200],
            "patient": None, "content": event_json(event)}


@bp.after_request
def _cors(response: Response) -> Response:
    """CORS headers on every answer of the CDS endpoints, preflights included."""
    response.headers.update(CORS_HEADERS)
    return response


def _replay_check(app: Flask, leeway_seconds: int) -> ReplayCheck:
    """(issuer, jti, exp) -> first use?, kept in the database table cds_jti (every worker and
    host sharing it agrees); expired rows are purged about once a minute per process."""
    database = app.extensions["toh"].database
    last_purge = [float("-inf")]     # monotonic time of this process's last purge of expired jtis

    def first_use(issuer: str, jti: str, exp: int) -> bool:
        purge = time.monotonic() - last_purge[0] > PURGE_EVERY_SECONDS
        if purge:
            last_purge[0] = time.monotonic()
        # Token lifetimes are wall-clock time (PyJWT checks exp against it), not the clinical clock.
        # A jti is kept while its token could still pass (exp plus the leeway).
        return remember_jti(database, issuer, jti, datetime.fromtimestamp(exp + leeway_seconds, timezone.utc),
                            datetime.now(timezone.utc), purge=purge)
    return first_use


def init_app(app: Flask) -> None:
    """Register the CDS endpoints and the verifier of TOH_CDS_ISSUERS (raises ValueError for a
    malformed setting or an unreadable JWKS file, so a bad configuration stops the start)."""
    settings = app.extensions["toh"].settings
    leeway = settings.jwt_leeway_seconds
    app.extensions[EXTENSION] = CdsClientVerifier(settings.cds_issuer_map(), _replay_check(app, leeway),
                                                  leeway_seconds=leeway,
                                                  refresh_cooldown=settings.jwks_refresh_cooldown_seconds)
    app.register_blueprint(bp, url_prefix=PREFIX)
