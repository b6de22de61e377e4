"""Recording every FHIR interaction in the audit trail, and the request log.

After each FHIR request (but the open ones) the edge describes what happened
(service.audit.events.Interaction) and appends its AuditEvent:
- a write that succeeded: in the write's own transaction (the unit of work appends it as it
  commits), so the change and its record land together or not at all;
- anything else (reads, searches, refused and failed requests): recorded before the response
  is sent, so nothing read goes unrecorded (Database.append_audit: on PostgreSQL committed in a
  short transaction of its own, on a SQLite file appended to its audit journal).

The log line of a request carries its request id (X-Request-ID, echoed), method, interaction,
resource type and id and status: never a query string, a body, or anything from a resource.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson
import uuid_utils
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from service.api.context import FHIR_PREFIX, services
from service.audit.events import Interaction, audit_event, event_json
from service.fhir.resources import new_id
from service.security import Principal

log = logging.getLogger("toh.requests")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNAUDITED = frozenset({f"{FHIR_PREFIX}/metadata", f"{FHIR_PREFIX}/.well-known/smart-configuration"})

# Flask endpoint -> the restful-interaction it is
_SUBTYPES = {
    "fhir_rest.create": "create", "fhir_rest.read": "read", "fhir_rest.vread": "vread",
    "fhir_rest.update": "update", "fhir_rest.conditional_update": "update", "fhir_rest.delete": "delete",
    "fhir_rest.history_instance": "history-instance", "fhir_rest.history_type": "history-type",
    "fhir_rest.history_system": "history-system", "fhir_search.search-type": "search-type",
    "fhir_search.search-type-post": "search-type", "fhir_search.search-compartment": "search-type",
    "audit_events.read": "read", "audit_events.search": "search-type", "audit_events.search-post": "search-type",
    "audit_events.refuse": "update", "audit_events.refuse-type": "create",
}
_PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")


def request_id() -> str:
    """This request's id: the client's X-Request-ID if well-formed, else a new one."""
    here = g._get_current_object()   # one context lookup, not one per use of g
    found: str | None = getattr(here, "toh_request_id", None)
    if found is None:
        given = request.environ.get("HTTP_X_REQUEST_ID", "")
        found = given if _REQUEST_ID.match(given) else uuid_utils.uuid4().hex   # no getrandom call, as uuid.uuid4's
        here.toh_request_id = found
    return found


_SITES: dict[tuple[Any, ...], str] = {}   # the WSGI environ's host keys -> the FHIR base on that host
_SITES_KEPT = 64


def _site() -> str:
    """The FHIR base URL on the host the request came to (from Host, or the server's name and
    port): request.host_url, whose IDNA and IRI decoding is the dearest part of describing a
    read, worked out once per host (a few entries; cleared if hostile Host headers fill it)."""
    environ = request.environ
    key = (environ.get("wsgi.url_scheme"), environ.get("HTTP_HOST"), environ.get("SERVER_NAME"),
           environ.get("SERVER_PORT"), environ.get("SCRIPT_NAME"))
    found = _SITES.get(key)
    if found is None:
        found = request.host_url.rstrip("/") + FHIR_PREFIX
        if len(_SITES) >= _SITES_KEPT:
            _SITES.clear()
        _SITES[key] = found
    return found


def _subtype() -> tuple[str, str | None]:
    endpoint = request.endpoint or ""
    if endpoint in _SUBTYPES:
        return _SUBTYPES[endpoint], None
    if endpoint == "fhir_rest.batch_or_transaction":
        body = g.get("toh_request_json")   # parsed by the view (negotiation.request_resource)
        if body is None:
            body = request.get_json(silent=True, cache=True)
        kind = body.get("type") if isinstance(body, dict) else None
        return ("transaction" if kind == "transaction" else "batch"), None
    match = re.search(r"/\$([A-Za-z][\w-]*)", request.path)
    return "operation", (match.group(1) if match else None)


def _patient_in(resource: Any) -> str | None:
    if not isinstance(resource, dict):
        return None
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id")) if resource.get("id") else None
    for element in _PATIENT_ELEMENTS:
        value = resource.get(element)
        text = value.get("reference") if isinstance(value, dict) else None
        if isinstance(text, str) and "Patient/" in text:
            return text.split("Patient/")[-1].split("/")[0]
    return None


def _search_patient(who: Principal | None) -> str | None:
    for name in ("patient", "subject"):
        value = request.args.get(name)
        if value:
            return value.split("Patient/")[-1].split("/")[0] if "Patient/" in value or name == "patient" else None
    return who.patient if who is not None else None


def _answer_json(response: Response) -> Any:
    """The answer's FHIR JSON parsed, or None when it is not FHIR JSON (or streamed, or not
    JSON). orjson reads it; the few texts orjson refuses that the json module reads (an escaped
    lone surrogate, NaN) are read by the json module."""
    if response.is_streamed or response.mimetype != "application/fhir+json":
        return None
    data = response.get_data()
    try:
        return orjson.loads(data)
    except ValueError:   # orjson.JSONDecodeError is one
        try:
            return json.loads(data)
        except ValueError:
            return None


def describe(response: Response) -> Interaction:
    """What this request did, for its AuditEvent."""
    who: Principal | None = g.get("toh_principal")
    subtype, operation = _subtype()
    args = request.view_args or {}
    res_type, res_id = args.get("res_type"), args.get("res_id")
    entity = f"{res_type}/{res_id}" if res_type and res_id else None
    patient = args.get("patient_id")
    query = None
    failed = response.status_code >= 400
    answer: Any = _answer_json(response) if failed or (
        response.status_code < 300 and subtype in ("read", "vread", "create", "update")) else None
    body = None if failed else answer
    if subtype == "create" and isinstance(body, dict) and body.get("id"):
        entity = f"{body.get('resourceType')}/{body['id']}"
    if entity and response.headers.get("ETag", "").startswith('W/"') and subtype != "delete":
        entity += "/_history/" + response.headers["ETag"][3:-1]
    if subtype.startswith("search"):
        query = request.query_string.decode(errors="replace")
        if request.method == "POST":
            try:
                form = request.form
            except HTTPException:   # a form the request was refused for (413): the audit records the URL
                form = None
            if form:
                query = "&".join(f"{k}={v}" for k, v in form.items(multi=True))
        patient = patient or _search_patient(who)
    if res_type == "Patient" and res_id:
        patient = res_id
    patient = patient or _patient_in(body)
    description = None
    if failed:
        try:
            description = str(answer["issue"][0].get("code"))
        except (KeyError, IndexError, TypeError, AttributeError):
            description = None
    return Interaction(subtype=subtype, status=response.status_code, principal=who,
                       address=request.remote_addr, entity=entity, query=query, patient=patient,
                       operation=operation, description=description, request_id=request_id(),
                       source=services().settings.base_url or _site(),
                       extra_entities=() if entity or not res_type else (str(res_type),))


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _column(value: str | None, size: int) -> str | None:
    """A value fit for an audit column: control characters (a NUL, which PostgreSQL text
    refuses, sent in a hostile URL) replaced, cut to the column's size."""
    return None if value is None else _CONTROL.sub("?", value)[:size]


def audit_row(what: Interaction) -> dict[str, Any]:
    """The audit table's row (columns and content) for an interaction, recorded now."""
    now = services().clock.now()
    event_id = new_id()
    event = audit_event(what, event_id, now)
    who = what.principal
    entity = what.entity.split("/_history/")[0] if what.entity else None
    return {"id": event_id, "recorded": now, "action": what.action, "subtype": what.subtype[:32],
            "outcome": what.outcome, "agent": _column(who.subject if who else None, 255),
            "agent_ref": _column(who.fhir_user if who else None, 255), "entity": _column(entity, 200),
            "patient": _column(what.patient, 64), "content": event_json(event)}


def audited() -> bool:
    """Whether this request is a FHIR interaction the trail records."""
    return request.path.startswith(FHIR_PREFIX) and request.path not in _UNAUDITED


def log_request(response: Response) -> None:
    """One log line per request: ids, type, status; never content or query values.

    The record is made and handled as log.info would, but for Logger.findCaller's walk up the
    stack (a fifth of the line's cost): it names this function instead, and no log format of
    the service shows the caller."""
    if not log.isEnabledFor(logging.INFO):
        return
    args = request.view_args or {}
    fields = {"method": request.method, "endpoint": request.endpoint or "-", "type": args.get("res_type", "-"),
              "id": args.get("res_id", args.get("patient_id", "-")), "status": response.status_code}
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request=%s %s %s type=%s id=%s status=%s",
                              (request_id(), fields["method"], fields["endpoint"], fields["type"], fields["id"],
                               fields["status"]), None, "log_request", fields))


def init_app(app: Flask) -> None:
    """Echo the request id on every response."""

    @app.after_request
    def _request_id(response: Response) -> Response:
        response.headers["X-Request-ID"] = request_id()
        log_request(response)
        return response
