"""FHIR's HTTP conventions: media types, _format, Prefer, If-Match, and resource responses."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Response, g, json, request

from service.fhir.content import has_control_character
from service.fhir.errors import (BadRequest, Issue, NotAcceptable, PayloadTooLarge, UnsupportedMediaType,
                                 operation_outcome)
from service.fhir.http import etag_version
from service.fhir.resources import parse_json
from service.store import StoredResource

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_ACCEPTED = JSON_TYPES | {"*/*", "application/*"}   # Accept headers of one type (q=1) that JSON answers
_FORMAT_ALIASES = {"json": FHIR_JSON, "application/json": FHIR_JSON, "application/fhir+json": FHIR_JSON,
                   "application/json+fhir": FHIR_JSON}


def check_accept() -> None:
    """Refuse a request that asks for a format other than JSON; raises NotAcceptable."""
    fmt = request.args.get("_format")
    if fmt is not None:
        if fmt.split(";")[0].strip() not in _FORMAT_ALIASES:
            raise NotAcceptable(f"_format '{fmt}' is not supported; this server speaks JSON only")
        return
    header = request.environ.get("HTTP_ACCEPT")
    if not header or header in _ACCEPTED:   # most clients: no Accept, */* or FHIR JSON (no parsing)
        return
    accept = request.accept_mimetypes
    if not accept or accept.provided is False:
        return
    if any(q > 0 and (value in JSON_TYPES or value in ("*/*", "application/*")) for value, q in accept):
        return
    raise NotAcceptable(f"Cannot produce {request.headers.get('Accept')}; this server speaks application/fhir+json")


def check_url_text() -> None:
    """Refuse a control character (other than tab, CR, LF) in the path or in a query
    parameter's name or value: FHIR strings may not hold them and PostgreSQL cannot store NUL.
    Raises BadRequest naming the parameter."""
    if has_control_character(request.path):
        raise BadRequest("The URL's path holds a control character")
    check_params(request.args.items(multi=True))


def check_params(pairs: Iterable[tuple[str, str]]) -> None:
    """Refuse a parameter (name, value) holding a control character; raises BadRequest."""
    for name, value in pairs:
        if has_control_character(name) or has_control_character(value):
            shown = name.encode("unicode_escape").decode("ascii")
            raise BadRequest(f"The parameter '{shown}' holds a control character", expression=[shown])


def request_body() -> bytes:
    """The request body as read, whatever its framing; raises PayloadTooLarge (413) beyond
    MAX_CONTENT_LENGTH. Werkzeug cuts a chunked body (no Content-Length) at the limit without
    saying so; here a body that fills the limit and has more behind it is refused."""
    body = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(body) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge(f"The body is larger than {limit} bytes (TOH_MAX_PAYLOAD_BYTES)")
    return body


def request_resource() -> dict[str, Any]:
    """The JSON body of a write; raises UnsupportedMediaType, PayloadTooLarge or BadRequest."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type '{mimetype}' is not supported; send application/fhir+json")
    body = request_body()
    if not body:
        raise BadRequest("The request has no body", code="required")
    parsed = parse_json(body)
    g.toh_request_json = parsed   # for the audit record (service.api.audit), which would parse it again
    return parsed


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
