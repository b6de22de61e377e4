"""[base]/[type]/$validate and [base]/[type]/[id]/$validate: check a resource against R4 and
the TOH profiles and return the OperationOutcome; nothing is stored
(https://hl7.org/fhir/R4/resource-operation-validate.html)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from service.api.auth import guard
from service.api.context import current_uow, services
from service.api.negotiation import json_response, request_resource
from service.fhir.errors import BadRequest, FhirError, Issue, operation_outcome
from service.fhir.resources import check_id, check_type
from service.fhir.resources import validate as validate_r4
from service.security import Reach

bp = Blueprint("validate", __name__)


def _resource_and_profile(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Unwrap a Parameters body (resource, profile) or take the body as the resource."""
    profile = request.args.get("profile")
    if body.get("resourceType") != "Parameters":
        return body, profile
    resource = None
    for parameter in body.get("parameter") or []:
        if parameter.get("name") == "resource":
            resource = parameter.get("resource")
        elif parameter.get("name") == "profile":
            profile = parameter.get("valueUri") or parameter.get("valueCanonical") or profile
    return resource, profile


def validation_issues(resource: dict[str, Any], res_type: str, profile: str | None) -> list[Issue]:
    """Every problem with resource: R4 structure first, then the profile(s)."""
    try:
        validate_r4(resource, res_type)
    except FhirError as exc:
        return list(exc.issues)
    conformance = services().conformance
    if profile:
        return conformance.validate(resource, profile)
    return conformance.validate(resource, unknown_profile="warning")


def _respond(resource: dict[str, Any] | None, res_type: str, profile: str | None) -> Response:
    if resource is None:
        raise BadRequest("Nothing to validate: send the resource, or Parameters with a 'resource'")
    return json_response(operation_outcome(validation_issues(resource, res_type, profile)))


@bp.post("/<res_type>/$validate")
def validate_type(res_type: str) -> Response:
    """Validate the posted resource (or Parameters.resource) against R4 and a profile."""
    check_type(res_type)
    if not any(guard().reach(action, res_type) is not Reach.NONE for action in "cur"):
        guard().require("c", res_type)  # raises Forbidden
    resource, profile = _resource_and_profile(request_resource())
    return _respond(resource, res_type, profile)


@bp.route("/<res_type>/<res_id>/$validate", methods=["GET", "POST"])
def validate_instance(res_type: str, res_id: str) -> Response:
    """Validate the posted resource, or the stored one when nothing is posted."""
    check_type(res_type)
    check_id(res_id)
    guard().require("r", res_type)
    if request.method == "POST" and request.get_data():
        resource, profile = _resource_and_profile(request_resource())
    else:
        resource, profile = current_uow().repo.read(res_type, res_id).resource(), request.args.get("profile")
        guard().check("r", res_type, resource)
    return _respond(resource, res_type, profile)
