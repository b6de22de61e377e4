"""The FHIR RESTful interactions on resources (https://hl7.org/fhir/R4/http.html).

Each interaction is a short view over the repository; INTERACTIONS is the table the
routes are registered from, and the CapabilityStatement is generated from it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, request

from service.api.auth import guard
from service.api.bundles import batch_or_transaction
from service.api.context import FHIR_PREFIX, base_url, current_uow, read_current, request_url, services
from service.api.negotiation import if_match, json_response, request_resource, resource_response
from service.fhir.errors import BadRequest
from service.fhir.errors import Forbidden
from service.fhir.http import bounded_int, conditional_criteria
from service.fhir.resources import check_id, check_type
from service.fhir.search.values import date_range
from service.security import Reach
from service.store import Repository, StoredResource
from service.store.repository import format_instant

bp = Blueprint("fhir_rest", __name__)


def _location(stored: StoredResource) -> str:
    return f"{base_url()}/{stored.reference}/_history/{stored.version}"


def _body(res_type: str) -> dict[str, Any]:
    """The request's resource, which must be of the URL's type; raises BadRequest otherwise."""
    check_type(res_type)
    resource = request_resource()
    if resource.get("resourceType") != res_type:
        raise BadRequest(f"resourceType '{resource.get('resourceType')}' does not match the URL's type '{res_type}'")
    return resource


def create(res_type: str) -> Response:
    """POST [base]/[type]: create with a server-assigned id (conditional with If-None-Exist)."""
    resource = _body(res_type)
    guard().claim(res_type, resource)
    guard().check("c", res_type, resource)
    condition = request.headers.get("If-None-Exist")
    criteria = None if condition is None else conditional_criteria(condition, "If-None-Exist")
    stored, created = current_uow().repo.create(resource, if_none_exist=criteria)
    return resource_response(stored, 201 if created else 200, location=_location(stored), honour_prefer=True)


def read(res_type: str, res_id: str) -> Response:
    """GET [base]/[type]/[id]: the current version; 404 if unknown, 410 if deleted."""
    check_type(res_type)
    check_id(res_id)
    guard().require("r", res_type)
    stored = read_current(res_type, res_id)
    guard().check("r", res_type, stored.resource)
    return resource_response(stored)


def vread(res_type: str, res_id: str, version: str) -> Response:
    """GET [base]/[type]/[id]/_history/[vid]: one version."""
    check_type(res_type)
    check_id(res_id)
    number = bounded_int(version, "The version", low=1)
    guard().require("r", res_type)
    stored = current_uow().repo.vread(res_type, res_id, number)
    guard().check("r", res_type, stored.resource)
    return resource_response(stored)


def update(res_type: str, res_id: str) -> Response:
    """PUT [base]/[type]/[id]: a new version, or create with this id; If-Match honoured."""
    resource = _body(res_type)
    _check_write("u", res_type, res_id, resource, current_uow().repo)
    stored, created = current_uow().repo.update(res_type, res_id, resource, if_match=if_match())
    return resource_response(stored, 201 if created else 200, location=_location(stored), honour_prefer=True)


def conditional_update(res_type: str) -> Response:
    """PUT [base]/[type]?[criteria]: update the one match, or create when none matches.

    Raises PreconditionFailed when several match and BadRequest without criteria or when
    the body's id differs from the match.
    """
    criteria = conditional_criteria(request.query_string.decode(), "A conditional update (PUT [type]?[criteria])")
    resource = _body(res_type)
    repo = current_uow().repo
    guard().require("u", res_type)
    resource["id"] = repo.conditional_target(res_type, criteria, resource.get("id"))
    _check_write("u", res_type, resource["id"], resource, repo)
    stored, created = repo.update(res_type, resource["id"], resource, if_match=if_match())
    return resource_response(stored, 201 if created else 200, location=_location(stored), honour_prefer=True)


def delete(res_type: str, res_id: str) -> Response:
    """DELETE [base]/[type]/[id]: later reads give 410 Gone; If-Match honoured. 204 also when
    the resource was already deleted or never existed (R4 http.html#delete)."""
    check_type(res_type)
    check_id(res_id)
    _check_write("d", res_type, res_id, None, current_uow().repo)
    stored = current_uow().repo.delete(res_type, res_id, if_match=if_match())
    response = Response(status=204)
    if stored is not None:
        response.headers["ETag"] = stored.etag
    return response


def _check_write(action: str, res_type: str, res_id: str, resource: dict[str, Any] | None,
                 repo: Repository) -> None:
    """Raise Forbidden unless the principal may write this: the type's scope, and in a patient
    context both the new content and the version it replaces in the patient's compartment."""
    check_type(res_type)
    if resource is not None:
        guard().claim(res_type, resource)
        guard().check(action, res_type, resource)
    if guard().checks_existing(action, res_type):
        found = repo.current(res_type, res_id)
        if found is not None and not found[1].deleted:
            guard().check(action, res_type, found[1].resource)


def _history_access(res_type: str | None, res_id: str | None) -> Reach:
    """The principal's reach for this history; raises Forbidden where a patient context
    would span other patients (type and system history)."""
    if res_type is None:
        guard().require_everything("r")
        return Reach.ALL
    reach = guard().require("r", res_type)
    if reach is Reach.PATIENT and res_id is None:
        raise Forbidden("A patient/ scope cannot read the history of a whole type; read an instance's")
    if res_id is not None and not guard().owns(res_type, {"resourceType": res_type}):
        found = current_uow().repo.current(res_type, res_id)
        if found is not None and not found[1].deleted:
            guard().check("r", res_type, found[1].resource)
    return reach


def _history(res_type: str | None = None, res_id: str | None = None) -> Response:
    if res_type is not None:
        check_type(res_type)
    if res_id is not None:
        check_id(res_id)
    reach = _history_access(res_type, res_id)
    settings = services().settings
    args = request.args
    count = min(bounded_int(args.get("_count", str(settings.default_page_size)), "_count"), settings.max_page_size)
    offset = bounded_int(args.get("_offset", "0"), "_offset")
    since = _history_time(args, "_since")
    at = _history_time(args, "_at")
    versions, total = current_uow().repo.history(res_type, res_id, since=since[0] if since else None, at=at,
                                                 count=count, offset=offset)
    if reach is Reach.PATIENT:  # only the versions that were in the patient's compartment
        assert res_type is not None
        kept = [v for v in versions if not v.deleted and guard().visible(res_type, v.resource())]
        total -= len(versions) - len(kept)
        versions = kept
    elif res_id is None:   # others' versions of owned types (Subscriptions) are left out
        kept = [v for v in versions if guard().owns(v.res_type, None if v.deleted else v.resource())]
        total -= len(versions) - len(kept)
        versions = kept
    return json_response(history_bundle(versions, total, count, offset))


def _history_time(args: Any, name: str) -> tuple[datetime, datetime] | None:
    """The UTC range [low, high) of _since or _at, by its precision (R4 http.html#history: _at is
    a date(Time), so '2026' and '2026-11-30' are valid); None if absent. Raises BadRequest
    when it is repeated, is not a FHIR date, or gives a time without a zone."""
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} may be given only once", expression=[name])
    text = values[0].replace(" ", "+")   # '+' arrives as ' ' in a query string
    try:
        low, high = date_range(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}", expression=[name]) from exc
    if "T" in text and not (text.endswith("Z") or "+" in text[10:] or "-" in text[10:]):
        raise BadRequest(f"{name}: a time needs a time zone", expression=[name])
    return low, high


def history_bundle(versions: list[StoredResource], total: int, count: int, offset: int) -> dict[str, Any]:
    """A history Bundle with request/response per entry and paging links."""
    base = base_url()
    path = request_url()
    kept = [(k, v) for k, v in request.args.items(multi=True) if k not in ("_offset", "_count")]

    def page(at: int) -> str:
        return f"{path}?{urlencode(kept + [('_count', str(count)), ('_offset', str(at))])}"

    links = [{"relation": "self", "url": page(offset)}]
    if offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page(max(offset - count, 0))})
    entries = []
    for v in versions:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{v.reference}"}
        if v.deleted:
            entry["request"] = {"method": "DELETE", "url": v.reference}
            entry["response"] = {"status": "204", "etag": v.etag, "lastModified": format_instant(v.last_updated)}
        else:
            entry["resource"] = v.resource()
            url = v.res_type if v.method == "POST" else v.reference
            entry["request"] = {"method": v.method or "PUT", "url": url}
            entry["response"] = {"status": "201" if v.version == 1 else "200", "etag": v.etag,
                                 "lastModified": format_instant(v.last_updated)}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "history", "total": total, "link": links, "entry": entries}


def history_instance(res_type: str, res_id: str) -> Response:
    """GET [base]/[type]/[id]/_history: every version of one resource, newest first."""
    return _history(res_type, res_id)


def history_type(res_type: str) -> Response:
    """GET [base]/[type]/_history: every version of every resource of a type."""
    return _history(res_type)


def history_system() -> Response:
    """GET [base]/_history: every version of everything."""
    return _history()


@dataclass(frozen=True)
class Interaction:
    """One FHIR interaction: its CapabilityStatement code, URL rule, HTTP method and view."""

    code: str
    rule: str
    method: str
    view: Callable[..., Response]
    level: str = "type"   # 'type' (listed per resource) or 'system'


INTERACTIONS: tuple[Interaction, ...] = (
    Interaction("create", "/<res_type>", "POST", create),
    Interaction("read", "/<res_type>/<res_id>", "GET", read),
    Interaction("vread", "/<res_type>/<res_id>/_history/<version>", "GET", vread),
    Interaction("update", "/<res_type>/<res_id>", "PUT", update),
    Interaction("update", "/<res_type>", "PUT", conditional_update),
    Interaction("delete", "/<res_type>/<res_id>", "DELETE", delete),
    Interaction("history-instance", "/<res_type>/<res_id>/_history", "GET", history_instance),
    Interaction("history-type", "/<res_type>/_history", "GET", history_type),
    Interaction("history-system", "/_history", "GET", history_system, level="system"),
    Interaction("batch", "", "POST", batch_or_transaction, level="system"),
    Interaction("transaction", "", "POST", batch_or_transaction, level="system"),
)

_routed: set[tuple[str, str]] = set()
for _interaction in INTERACTIONS:
    if (_interaction.rule, _interaction.method) in _routed:
        continue  # batch and transaction share POST [base]; the Bundle's type tells them apart
    _routed.add((_interaction.rule, _interaction.method))
    # [base] answers with or without a trailing slash (fhirpy and fhirclient post to [base]/)
    bp.add_url_rule(_interaction.rule, _interaction.view.__name__, _interaction.view, methods=[_interaction.method],
                    strict_slashes=_interaction.rule != "")


def init_app(app: Flask, url_prefix: str = FHIR_PREFIX) -> None:
    """Register the REST interactions under the FHIR base path."""
    app.register_blueprint(bp, url_prefix=url_prefix)
