"""GET [base]/Patient/[id]/$toh-assessment?asOf=YYYY-MM-DD: the patient's TOH episodes and
the flags that hold on that date, as a Parameters resource; nothing is stored."""
from __future__ import annotations

from flask import Blueprint, Response, request

from service.api.auth import guard
from service.api.context import current_uow, services
from service.api.negotiation import json_response
from service.clinical import assessment_to_parameters, parse_as_of
from service.fhir.resources import check_id

bp = Blueprint("toh_assessment", __name__)


@bp.get("/Patient/<patient_id>/$toh-assessment")
def toh_assessment(patient_id: str) -> Response:
    """The assessment on asOf (default: today by the service's clock).

    Raises BadRequest for a malformed asOf or id, NotFound / Gone for an unknown or
    deleted Patient, Forbidden unless the token may read the patient's clinical data.
    """
    check_id(patient_id)
    svc = services()
    as_of = parse_as_of(request.args.get("asOf"), svc.clock.now().date())
    uow = current_uow()
    guard().check("r", "Patient", uow.repo.read("Patient", patient_id).resource)
    for res_type in ("Condition", "Observation", "MedicationRequest", "CarePlan"):
        guard().require("r", res_type)  # the assessment is read from these
    assessment = svc.clinical.assessment(uow.repo, patient_id, as_of)
    return json_response(assessment_to_parameters(assessment))
