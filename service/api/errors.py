"""Every error leaves the service as an OperationOutcome with the right HTTP status."""
from __future__ import annotations

import logging

from flask import Flask, Response, json
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from service.fhir.errors import FhirError, Issue, operation_outcome

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"

_HTTP_ISSUE_CODES = {400: "invalid", 404: "not-found", 405: "not-supported", 406: "not-supported",
                     409: "conflict", 412: "conflict", 413: "too-costly", 415: "not-supported",
                     422: "processing", 429: "throttled"}


def outcome_response(error: FhirError) -> Response:
    """The OperationOutcome response for a FhirError."""
    return Response(json.dumps(error.outcome()), status=error.status, mimetype=FHIR_JSON)


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    issue = Issue("error", _HTTP_ISSUE_CODES.get(code, "exception"), exc.description or exc.name)
    response = Response(json.dumps(operation_outcome([issue])), status=code, mimetype=FHIR_JSON)
    valid_methods = getattr(exc, "valid_methods", None)
    if valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, OperationalError):
        log.exception("database unavailable")
        issue = Issue("fatal", "transient", "The database is unavailable; try again")
        return Response(json.dumps(operation_outcome([issue])), status=503, mimetype=FHIR_JSON)
    log.exception("unhandled error")
    issue = Issue("fatal", "exception", f"Internal error: {type(exc).__name__}")
    return Response(json.dumps(operation_outcome([issue])), status=500, mimetype=FHIR_JSON)


def init_app(app: Flask) -> None:
    """Register the handlers that turn every error into an OperationOutcome."""
    app.register_error_handler(FhirError, outcome_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
