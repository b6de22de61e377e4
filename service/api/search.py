"""FHIR search over HTTP (https://hl7.org/fhir/R4/http.html#search):

    GET  [base]/[type]?params            search-type
    POST [base]/[type]/_search           the same, parameters in a form body
    GET  [base]/Patient/[id]/[type]      Patient compartment search
    GET  [base]/Patient/[id]/$everything everything in the patient's compartment

Each returns a searchset Bundle: matches (search.mode=match), _include/_revinclude results
(include), and an OperationOutcome entry (outcome) listing ignored parameters — or 400 under
``Prefer: handling=strict``. Links carry an opaque _cursor for stable keyset paging.
Resources are spliced into the Bundle as stored, not re-serialised.
"""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, request
from werkzeug.routing import BaseConverter

from service.api.context import base_url, current_uow, services
from service.api.negotiation import FHIR_JSON, prefer_strict
from service.fhir.errors import Issue, operation_outcome
from service.fhir.resources import check_id, check_type
from service.fhir.search.query import CURSOR, SearchQuery
from service.store.repository import format_instant
from service.store.search import SearchEngine, SearchResult

bp = Blueprint("fhir_search", __name__)
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS_KEPT = ("resourceType", "id", "meta")


class ResourceTypeConverter(BaseConverter):
    """A URL segment that looks like a resource type (so '_history', '$op' go elsewhere)."""

    regex = r"[A-Z][A-Za-z]{1,63}"


def engine() -> SearchEngine:
    """The application's search engine."""
    return services().search


def _params() -> list[tuple[str, str]]:
    pairs = list(request.args.items(multi=True))
    if request.method == "POST":
        pairs += list(request.form.items(multi=True))
    return pairs


def _run(res_type: str | None, path: str, *, compartment: tuple[str, str] | None = None,
         params: list[tuple[str, str]] | None = None) -> Response:
    """Parse, run and render one search; raises BadRequest (strict, or a bad cursor)."""
    eng = engine()
    base = base_url()
    query = eng.parse(res_type, _params() if params is None else params, compartment=compartment,
                      base_urls=(base,))
    query.raise_if_strict(prefer_strict())
    uow = current_uow()
    result = eng.search(uow.conn, query, now=uow.clock.now())
    return Response(render_bundle(query, result, base, path, uow.clock.now()), mimetype=FHIR_JSON)


def search_type(res_type: str) -> Response:
    """GET/POST [base]/[type]: search one type; 404 for an unknown type."""
    check_type(res_type)
    return _run(res_type, res_type)


def search_compartment(patient_id: str, res_type: str) -> Response:
    """GET [base]/Patient/[id]/[type]: res_type resources in the patient's compartment."""
    check_id(patient_id)
    check_type(res_type)
    return _run(res_type, f"Patient/{patient_id}/{res_type}", compartment=("Patient", patient_id))


def everything(patient_id: str) -> Response:
    """GET [base]/Patient/[id]/$everything: the patient and every resource in its compartment
    (paged; _type, _count and _elements honoured). 404/410 if the patient is unknown/deleted."""
    check_id(patient_id)
    current_uow().repo.read("Patient", patient_id)
    return _run(None, f"Patient/{patient_id}/$everything", compartment=("Patient", patient_id))


def render_bundle(query: SearchQuery, result: SearchResult, base: str, path: str, now: Any) -> str:
    """The searchset Bundle as JSON text, with stored resources spliced in unchanged."""
    def link(cursor: str | None) -> str:
        pairs = list(query.used) + ([(CURSOR, cursor)] if cursor else [])
        return f"{base}/{path}" + (f"?{urlencode(pairs)}" if pairs else "")

    links = [{"relation": "self", "url": link(query.cursor)}]
    if result.next_cursor:
        links.append({"relation": "next", "url": link(result.next_cursor)})
    if result.previous_cursor:
        links.append({"relation": "previous", "url": link(result.previous_cursor)})
    head: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                            "meta": {"lastUpdated": format_instant(now)}, "type": "searchset"}
    if result.total is not None:
        head["total"] = result.total
    head["link"] = links
    entries = [_entry(base, f, "match", query.elements) for f in result.matches]
    entries += [_entry(base, f, "include", query.elements) for f in result.includes]
    if result.issues:
        outcome = operation_outcome([Issue(i.severity, i.code, i.diagnostics, i.expression)
                                     for i in result.issues])
        entries.append(json.dumps({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": outcome,
                                   "search": {"mode": "outcome"}}))
    text = json.dumps(head, separators=(",", ":"))
    if not entries:
        return text
    return text[:-1] + ',"entry":[' + ",".join(entries) + "]}"


def _entry(base: str, found: Any, mode: str, elements: tuple[str, ...] | None) -> str:
    content = found.content if elements is None else _subset(found.content, elements)
    full_url = json.dumps(f"{base}/{found.res_type}/{found.res_id}")
    return f'{{"fullUrl":{full_url},"resource":{content},"search":{{"mode":"{mode}"}}}}'


def _subset(content: str, elements: tuple[str, ...]) -> str:
    """The resource with only the _elements asked for (plus id/meta), tagged SUBSETTED."""
    resource = json.loads(content)
    kept = {k: v for k, v in resource.items() if k in _ALWAYS_KEPT or k in elements}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = list(meta.get("tag") or []) + [SUBSETTED]
    kept["meta"] = meta
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def init_app(app: Flask, url_prefix: str = "/fhir") -> None:
    """Register the search routes (create_app made the engine and hooked it into the store)."""
    app.url_map.converters.setdefault("fhirtype", ResourceTypeConverter)
    app.register_blueprint(bp, url_prefix=url_prefix)


bp.add_url_rule("/<fhirtype:res_type>", "search-type", search_type, methods=["GET"])
bp.add_url_rule("/<fhirtype:res_type>/_search", "search-type-post", search_type, methods=["POST"])
bp.add_url_rule("/Patient/<patient_id>/$everything", "patient-everything", everything, methods=["GET"])
bp.add_url_rule("/Patient/<patient_id>/<fhirtype:res_type>", "search-compartment", search_compartment,
                methods=["GET"])
