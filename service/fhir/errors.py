"""FHIR errors and OperationOutcome.

Every failure the service reports to a client leaves as an OperationOutcome. The tree:

    FhirError                 any error with an HTTP status and OperationOutcome issues
     +-- BadRequest            400 malformed JSON, bad parameter, wrong resourceType
     +-- Unauthorized          401 no bearer token, or one that cannot be accepted
     +-- Forbidden             403 the token's scopes or patient do not allow the request
     +-- NotFound              404 unknown type or id
     +-- Gone                  410 the resource was deleted
     +-- MethodNotAllowed      405
     +-- NotAcceptable         406 a response format other than JSON asked for
     +-- Conflict              409 id mismatch, duplicate, version conflict on create
     +-- PreconditionFailed    412 If-Match does not match the current version
     +-- PayloadTooLarge       413
     +-- UnsupportedMediaType  415
     +-- Unprocessable         422 content fails the FHIR model or a profile
     +-- ServiceUnavailable    503 the database is unreachable or gave up (deadlock): retry
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code (issue-type), text and FHIRPath locations."""

    severity: str = "error"
    code: str = "processing"
    diagnostics: str = ""
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        """Return the issue as a FHIR OperationOutcome.issue JSON object."""
        out: dict[str, Any] = {"severity": self.severity, "code": self.code}
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    """Build an OperationOutcome resource from issues (an informational one if none)."""
    if not issues:
        issues = [Issue(severity="information", code="informational", diagnostics="All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


class FhirError(Exception):
    """An error to be reported as an OperationOutcome with an HTTP status."""

    status: int = 500
    default_code: str = "exception"
    headers: dict[str, str] = {}   # extra response headers (WWW-Authenticate)

    def __init__(self, diagnostics: str = "", *, code: str | None = None,
                 expression: tuple[str, ...] | list[str] = (),
                 issues: list[Issue] | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issues: list[Issue] = list(issues) if issues else [
            Issue("error", code or self.default_code, diagnostics, tuple(expression))]

    def outcome(self) -> dict[str, Any]:
        """The OperationOutcome for this error."""
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status, default_code = 400, "invalid"


class Unauthorized(FhirError):
    """401 with RFC 6750's WWW-Authenticate: Bearer challenge (error only when a token was sent)."""

    status, default_code = 401, "login"

    def __init__(self, diagnostics: str, *, error: str | None = "invalid_token", realm: str = "toh") -> None:
        super().__init__(diagnostics)
        challenge = f'Bearer realm="{realm}"'
        if error:
            description = diagnostics.replace('"', "'")
            challenge += f', error="{error}", error_description="{description}"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(FhirError):
    """403: authenticated, but the scopes (or the patient context) do not allow this."""

    status, default_code = 403, "forbidden"

    def __init__(self, diagnostics: str, *, scope: str | None = None, realm: str = "toh") -> None:
        super().__init__(diagnostics)
        challenge = f'Bearer realm="{realm}", error="insufficient_scope"'
        if scope:
            challenge += f', scope="{scope}"'
        self.headers = {"WWW-Authenticate": challenge}


class NotFound(FhirError):
    status, default_code = 404, "not-found"


class MethodNotAllowed(FhirError):
    status, default_code = 405, "not-supported"


class NotAcceptable(FhirError):
    status, default_code = 406, "not-supported"


class Conflict(FhirError):
    status, default_code = 409, "conflict"


class Gone(FhirError):
    status, default_code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, default_code = 412, "conflict"


class PayloadTooLarge(FhirError):
    status, default_code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, default_code = 415, "not-supported"


class Unprocessable(FhirError):
    status, default_code = 422, "processing"


class ServiceUnavailable(FhirError):
    status, default_code = 503, "transient"
