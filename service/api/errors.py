"""Every error leaves the service as an OperationOutcome with the right HTTP status."""
from __future__ import annotations

import logging

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from service.api.negotiation import FHIR_JSON
from service.fhir.errors import (BadRequest, Conflict, FhirError, Gone, MethodNotAllowed, NotAcceptable,
                                 NotFound, PayloadTooLarge, PreconditionFailed, ServiceUnavailable,
                                 UnsupportedMediaType, Unprocessable)
from service.api.context import READ_METHODS
from service.store import TRANSIENT_ERRORS, is_too_costly

log = logging.getLogger(__name__)

_ERROR_FOR_STATUS: dict[int, type[FhirError]] = {cls.status: cls for cls in (
    BadRequest, NotFound, MethodNotAllowed, NotAcceptable, Conflict, Gone, PreconditionFailed,
    PayloadTooLarge, UnsupportedMediaType, Unprocessable, ServiceUnavailable)}


def outcome_response(error: FhirError) -> Response:
    """The OperationOutcome response for a FhirError."""
    response = Response(json.dumps(error.outcome()), status=error.status, mimetype=FHIR_JSON)
    response.headers.update(error.headers)
    return response


def _http_error(exc: HTTPException) -> Response:
    """Werkzeug's errors (unknown route, method not allowed, body too large...) as FHIR ones."""
    status = exc.code or 500
    error = _ERROR_FOR_STATUS.get(status, FhirError)(exc.description or exc.name)
    error.status = status
    response = outcome_response(error)
    valid_methods = getattr(exc, "valid_methods", None)
    if valid_methods:
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if is_too_costly(exc) and request.method in READ_METHODS:
        log.warning("a read stopped for its cost: %s", exc)
        return outcome_response(BadRequest(
            "The request was stopped because it costs too much (a statement timeout, TOH_STATEMENT_TIMEOUT, "
            "or a database limit); narrow it", code="too-costly"))
    if isinstance(exc, TRANSIENT_ERRORS):
        log.exception("database unavailable")
        return outcome_response(ServiceUnavailable("The database is unavailable; try again"))
    log.exception("unhandled error")
    return outcome_response(FhirError(f"Internal error: {type(exc).__name__}"))


def init_app(app: Flask) -> None:
    """Register the handlers that turn every error into an OperationOutcome."""
    app.register_error_handler(FhirError, outcome_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
