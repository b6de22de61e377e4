"""The TOH follow-up protocol: valid R4 and the schedule issue 4 asks for, computable from data."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy import evaluate
from fhirpathpy.models import models

from service.fhir.canonical import PD_TOH_PROTOCOL, TOH_CODES
from service.fhir.profiles import Conformance

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@pytest.fixture(scope="module")
def protocol(conformance: Conformance) -> dict[str, Any]:
    pd = conformance.get(PD_TOH_PROTOCOL)
    assert pd is not None
    return pd


def actions(pd: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], list(pd["action"])
    while stack:
        action = stack.pop(0)
        out.append(action)
        stack.extend(action.get("action", ()))
    return out


def coded(pd: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [a for a in actions(pd) for cc in a.get("code", ()) for c in cc["coding"]
            if c["system"] == TOH_CODES and c["code"] == code]


def offset(duration: dict[str, Any]) -> relativedelta:
    assert duration["system"] == "http://unitsofmeasure.org"
    unit = {"wk": "weeks", "mo": "months", "d": "days"}[duration["code"]]
    return relativedelta(**{unit: duration["value"]})


def test_is_valid_r4(protocol: dict[str, Any]) -> None:
    get_fhir_model_class("PlanDefinition").model_validate(protocol)
    ids = [a["id"] for a in actions(protocol)]
    assert len(ids) == len(set(ids))


def test_review_schedule_from_onset(protocol: dict[str, Any]) -> None:
    onset = date(2024, 3, 10)
    due = {a["id"]: onset + offset(a["timingDuration"]) for a in coded(protocol, "follow-up-review")}
    assert sorted(due.values()) == [
        date(2024, 4, 21), date(2024, 6, 10), date(2024, 9, 10), date(2024, 12, 10),
        date(2025, 3, 10), date(2025, 9, 10), date(2026, 3, 10)]


def test_late_reviews_only_if_unresolved_at_12_months(protocol: dict[str, Any]) -> None:
    reviews = coded(protocol, "follow-up-review")
    conditional = {a["id"]: a for a in reviews if a.get("condition")}
    assert sorted(conditional) == ["review-18m", "review-24m"]
    by_id = {a["id"]: a for a in reviews}
    for action in conditional.values():
        (related,) = action["relatedAction"]
        anchor = by_id[related["actionId"]]
        assert offset(anchor["timingDuration"]) + offset(related["offsetDuration"]) == offset(
            action["timingDuration"])
        (cond,) = action["condition"]
        assert cond["kind"] == "applicability" and cond["expression"]["language"] == "text/fhirpath"


def _condition(status: str, abatement: str | None) -> dict[str, Any]:
    c = {"resourceType": "Condition", "onsetDateTime": "2024-03-10",
         "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]}}
    if abatement:
        c["abatementDateTime"] = abatement
    return c


@pytest.mark.parametrize(("status", "abatement", "applies"), [
    ("active", None, True),
    ("resolved", "2024-11-02", False),   # resolved at ~8 months
    ("resolved", "2025-05-20", True),    # resolved only after 12 months
    ("remission", "2025-01-15", False),
])
def test_applicability_expression(protocol: dict[str, Any], status: str, abatement: str | None,
                                  applies: bool) -> None:
    (action,) = [a for a in actions(protocol) if a["id"] == "review-18m"]
    expression = action["condition"][0]["expression"]["expression"]
    result = evaluate({}, expression, {"condition": _condition(status, abatement)}, models["r4"])
    assert result == [applies]


def test_management_and_repeat_mri(protocol: dict[str, Any]) -> None:
    for code in ("protected-weight-bearing", "analgesia"):
        (action,) = coded(protocol, code)
        assert "timingDuration" not in action  # starts when the plan is applied: at diagnosis
    (mri,) = coded(protocol, "repeat-mri")
    assert offset(mri["timingRange"]["low"]) == relativedelta(months=6)
