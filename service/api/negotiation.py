"""FHIR's HTTP conventions: media types, _format, Prefer, If-Match, and resource responses."""
from __future__ import annotations

from typing import Any

from flask import Response, json, request

from service.fhir.errors import BadRequest, Issue, NotAcceptable, UnsupportedMediaType, operation_outcome
from service.fhir.http import etag_version
from service.fhir.resources import parse_json
from service.store import StoredResource

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": FHIR_JSON, "application/fhir+json": FHIR_JSON,
                   "application/json+fhir": FHIR_JSON}


def check_accept() -> None:
    """Refuse a request that asks for a format other than JSON; raises NotAcceptable."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip() not in _FORMAT_ALIASES:
            raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks JSON only")
        return
    accept = request.accept_mimetypes
    if not accept or accept.provided is False:
        return
    if any(q > 0 and (value in JSON_TYPES or value in ("*/*", "application/*")) for value, q in accept):
        return
    raise NotAcceptable(f"Cannot produce {request.headers.get('Accept')}; this server speaks application/fhir+json")


def request_resource() -> dict[str, Any]:
    """The JSON body of a write; raises UnsupportedMediaType or BadRequest."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type '{mimetype}' is not supported; send application/fhir+json")
    body = request.get_data(cache=True)
    if not body:
        raise BadRequest("The request has no body", code="required")
    return parse_json(body)


def if_match() -> int | None:
    """The version in If-Match (W/"3" or "3"); raises BadRequest if malformed."""
    return etag_version(request.headers.get("If-Match"))


def prefer_return() -> str:
    """The client's Prefer: return= choice (minimal, representation or OperationOutcome)."""
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
                return value
    return "representation"


def prefer_strict() -> bool:
    """Whether the client sent Prefer: handling=strict."""
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def json_response(body: dict[str, Any] | str, status: int = 200) -> Response:
    """A FHIR JSON response from a dict or already-serialised JSON text."""
    text = body if isinstance(body, str) else json.dumps(body)
    return Response(text, status=status, mimetype=FHIR_JSON)


def resource_response(stored: StoredResource, status: int = 200, *, location: str | None = None,
                      honour_prefer: bool = False) -> Response:
    """Serve a stored version as stored (no re-serialisation), with ETag and Last-Modified."""
    choice = prefer_return() if honour_prefer else "representation"
    if choice == "minimal":
        response = Response(status=status)
    elif choice == "OperationOutcome":
        issue = Issue("information", "informational", f"{stored.reference} version {stored.version} stored")
        response = json_response(operation_outcome([issue]), status)
    else:
        response = json_response(stored.content or "", status)
    response.headers["ETag"] = stored.etag
    response.last_modified = stored.last_updated
    if location:
        response.headers["Location"] = location
    return response
