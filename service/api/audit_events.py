"""The audit trail over FHIR: GET [base]/AuditEvent/[id] and GET|POST [base]/AuditEvent[/_search]
(date, agent, entity, patient, action, subtype, outcome; service.store.audit). Creating,
changing or deleting an AuditEvent is 405: the trail is append-only and written by the service.
On SQLite the reads' AuditEvents wait in the audit journal until a drain: a read or a search
here drains it first, so it sees every AuditEvent recorded before it (a 503 if it cannot)."""
from __future__ import annotations

import json
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from service.api.auth import guard
from service.api.context import base_url, current_uow, services
from service.api.negotiation import FHIR_JSON
from service.fhir.errors import MethodNotAllowed
from service.fhir.resources import check_id
from service.store.audit import read_event, search_events

bp = Blueprint("audit_events", __name__)


@bp.get("/AuditEvent/<event_id>")
def read(event_id: str) -> Response:
    """One AuditEvent; raises NotFound, Forbidden."""
    check_id(event_id)
    guard().require("r", "AuditEvent")
    services().database.settle_audit()   # the audit journal's events first (service.store.audit_journal)
    content = read_event(current_uow().conn, event_id)
    guard().check("r", "AuditEvent", lambda: json.loads(content))
    return Response(content, mimetype=FHIR_JSON)


def search() -> Response:
    """AuditEvents matching the parameters, newest first (paged by _count/_offset)."""
    params = list(request.args.items(multi=True))
    if request.method == "POST":
        params += list(request.form.items(multi=True))
    compartment = guard().search_compartment("AuditEvent", None)
    if compartment is not None:
        params.append(("patient", compartment[1]))
    settings = services().settings
    services().database.settle_audit()   # the audit journal's events first (service.store.audit_journal)
    page = search_events(current_uow().conn, params, default_count=settings.default_page_size,
                         max_count=settings.max_page_size)
    base = base_url()
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]

    def link(offset: int) -> str:
        return f"{base}/AuditEvent?" + urlencode(kept + [("_count", str(page.count)), ("_offset", str(offset))])

    links = [{"relation": "self", "url": link(page.offset)}]
    if page.offset + page.count < page.total:
        links.append({"relation": "next", "url": link(page.offset + page.count)})
    if page.offset > 0:
        links.append({"relation": "previous", "url": link(max(page.offset - page.count, 0))})
    head = json.dumps({"resourceType": "Bundle", "type": "searchset", "total": page.total, "link": links})
    entries = [f'{{"fullUrl":{json.dumps(base + "/AuditEvent/" + json.loads(c)["id"])},"resource":{c},'
               '"search":{"mode":"match"}}' for c in page.contents]
    text = head if not entries else head[:-1] + ',"entry":[' + ",".join(entries) + "]}"
    return Response(text, mimetype=FHIR_JSON)


def refuse(event_id: str | None = None) -> Response:
    """Any write of an AuditEvent: 405 (append-only)."""
    error = MethodNotAllowed("AuditEvent is append-only: the service records every interaction itself, "
                             "and no one may create, change or delete its records")
    error.headers = {"Allow": "GET"}
    raise error


bp.add_url_rule("/AuditEvent", "search", search, methods=["GET"])
bp.add_url_rule("/AuditEvent/_search", "search-post", search, methods=["POST"])
bp.add_url_rule("/AuditEvent", "refuse-type", refuse, methods=["POST", "PUT", "DELETE", "PATCH"])
bp.add_url_rule("/AuditEvent/<event_id>", "refuse", refuse, methods=["PUT", "DELETE", "PATCH"])
