"""FHIR search over HTTP (https://hl7.org/fhir/R4/http.html#search):

    GET  [base]/[type]?params            search-type
    POST [base]/[type]/_search           the same, parameters in a form body
    GET  [base]/Patient/[id]/[type]      Patient compartment search
    GET  [base]/Patient/[id]/$everything everything in the patient's compartment

Each returns a searchset Bundle: matches (search.mode=match), _include/_revinclude results
(include), and an OperationOutcome entry (outcome) listing ignored parameters — or 400 under
``Prefer: handling=strict``. Links carry an opaque _cursor for stable keyset paging. The
views are thin: service.store.search.searchset parses, runs and renders (batch and
transaction bundles search through it too).
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, request
from werkzeug.routing import BaseConverter

from service.api.auth import guard
from service.api.context import base_url, current_uow, services
from service.api.negotiation import FHIR_JSON, check_params, prefer_strict
from service.fhir.resources import check_id, check_type
from service.security.guard import OWNED_TYPES
from service.store.notifications import Outbox
from service.store.search import SearchEngine
from service.workflows.notifications import owners_filter
from service.store.search.searchset import searchset_json

bp = Blueprint("fhir_search", __name__)
RECORD_TYPES = frozenset({"Provenance", "AuditEvent"})   # left out of $everything unless _type names them


class ResourceTypeConverter(BaseConverter):
    """A URL segment that looks like a resource type (so '_history', '$op' go elsewhere)."""

    regex = r"[A-Z][A-Za-z]{1,63}"


def engine() -> SearchEngine:
    """The application's search engine."""
    return services().search


def _params() -> list[tuple[str, str]]:
    pairs = list(request.args.items(multi=True))
    if request.method == "POST":
        form = list(request.form.items(multi=True))
        check_params(form)
        pairs += form
    return pairs


def _run(res_type: str | None, path: str, *, compartment: tuple[str, str] | None = None) -> Response:
    """One search answered with its searchset Bundle, kept to what the asker may see; raises
    BadRequest (strict, or a bad cursor) and Forbidden (scopes, another patient's compartment)."""
    uow = current_uow()
    access = guard()
    compartment = access.search_compartment(res_type, compartment)
    types = None
    if res_type is None:   # $everything: the record, not the records about it, unless _type asks
        types = access.readable_types(engine().compartment_types())
        if not any(name == "_type" for name, _ in _params()):
            types = tuple(t for t in types if t not in RECORD_TYPES)
    text = searchset_json(engine(), uow.conn, res_type, owned_only(res_type, _params()), base_url=base_url(),
                          now=uow.clock.now(),
                          strict=prefer_strict(), path=path, compartment=compartment, types=types,
                          visible=access.visible)
    return Response(text, mimetype=FHIR_JSON)


def owned_only(res_type: str | None, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The search's parameters, kept to the asker's own resources of an owned type (a
    Subscription search by one who is not an administrator gets `_id` = the ones it owns)."""
    access = guard()
    if res_type not in OWNED_TYPES or access.administers(res_type):
        return params
    return [*params, owners_filter(Outbox(current_uow().conn).owned_by(access.principal.subject))]


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
    guard().check("r", "Patient", current_uow().repo.read("Patient", patient_id).resource)
    return _run(None, f"Patient/{patient_id}/$everything", compartment=("Patient", patient_id))


def init_app(app: Flask, url_prefix: str = "/fhir") -> None:
    """Register the search routes (create_app made the engine and hooked it into the store)."""
    app.url_map.converters.setdefault("fhirtype", ResourceTypeConverter)
    app.register_blueprint(bp, url_prefix=url_prefix)


bp.add_url_rule("/<fhirtype:res_type>", "search-type", search_type, methods=["GET"])
bp.add_url_rule("/<fhirtype:res_type>/_search", "search-type-post", search_type, methods=["POST"])
bp.add_url_rule("/Patient/<patient_id>/$everything", "patient-everything", everything, methods=["GET"])
bp.add_url_rule("/Patient/<patient_id>/<fhirtype:res_type>", "search-compartment", search_compartment,
                methods=["GET"])
