"""[base]/PlanDefinition/[id]/$apply?subject=Patient/X: the CarePlan the follow-up protocol
would create for the patient's TOH episode, its Tasks contained; nothing is stored
(https://hl7.org/fhir/R4/plandefinition-operation-apply.html). Besides the R4 parameters
subject, encounter and practitioner, `condition=Condition/Y` picks the episode (default: the
patient's latest active episode)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from service.api.context import current_uow, services
from service.api.negotiation import json_response, request_resource
from service.fhir.errors import BadRequest
from service.fhir.references import parse_reference
from service.fhir.resources import check_id

bp = Blueprint("plan_apply", __name__)


def _parameters() -> dict[str, list[str]]:
    """The operation's parameters from the query and, on POST, a Parameters body."""
    found: dict[str, list[str]] = {}
    for name, value in request.args.items(multi=True):
        found.setdefault(name, []).append(value)
    if request.method == "POST" and request.get_data():
        body = request_resource()
        if body.get("resourceType") != "Parameters":
            raise BadRequest("$apply takes a Parameters resource", expression=["Parameters"])
        for parameter in body.get("parameter") or []:
            given: Any = next((v for k, v in parameter.items() if k.startswith("value")), None)
            if isinstance(given, dict):
                given = given.get("reference")
            if isinstance(given, str):
                found.setdefault(str(parameter.get("name")), []).append(given)
    return found


def _reference(params: dict[str, list[str]], name: str, res_type: str, required: bool = False) -> str | None:
    values = params.get(name) or []
    if not values:
        if required:
            raise BadRequest(f"$apply needs the '{name}' parameter ({res_type}/id)", code="required",
                             expression=[name])
        return None
    if len(values) > 1:
        raise BadRequest(f"$apply here takes one '{name}'", expression=[name])
    ref = parse_reference(values[0])
    if ref is None or ref.target_type != res_type or ref.target_id is None:
        raise BadRequest(f"'{name}' must be a {res_type} reference ({res_type}/id), got {values[0]!r}",
                         expression=[name])
    return f"{res_type}/{ref.target_id}"


@bp.route("/PlanDefinition/<plan_id>/$apply", methods=["GET", "POST"])
def apply(plan_id: str) -> Response:
    """Raises BadRequest for a missing or malformed subject, NotFound for an unknown
    PlanDefinition or Patient, Unprocessable when the patient has no TOH episode to plan for."""
    check_id(plan_id)
    params = _parameters()
    subject = _reference(params, "subject", "Patient", required=True)
    condition = _reference(params, "condition", "Condition")
    encounter = _reference(params, "encounter", "Encounter")
    practitioner = _reference(params, "practitioner", "Practitioner")
    assert subject is not None
    svc = services()
    repo = current_uow().repo
    definition = repo.read("PlanDefinition", plan_id).resource()
    patient_id = subject.split("/", 1)[1]
    repo.read("Patient", patient_id)
    careplan = svc.planner.apply(repo, definition, patient_id, svc.clock.now().date(),
                                 condition_id=condition.split("/", 1)[1] if condition else None,
                                 encounter=encounter, practitioner=practitioner)
    return json_response(careplan)
