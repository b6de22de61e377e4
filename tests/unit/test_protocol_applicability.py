"""The follow-up protocol's applicability conditions (workflows.protocol.plan_actions).

The guide's PlanDefinition keeps the 18- and 24-month reviews for a course that has not
resolved, or that resolved more than 12 months after its onset (the same FHIRPath on both
actions): TOH resolves in 6-12 months in most patients and a course that lasts longer is
followed to 24 months (shared/clinical/TOH.md). plan_actions evaluates that expression once
per Condition, not once per action.
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.workflows import protocol

PLAN = json.loads((Path(__file__).resolve().parents[2] / "fhir_profiles" / "PlanDefinition"
                   / "PlanDefinition-toh-follow-up-protocol.json").read_text())
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def condition(status: str, onset: str, abatement: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Condition", "onsetDateTime": onset,
                             "clinicalStatus": {"coding": [{"system": CLINICAL, "code": status}]}}
    if abatement:
        found["abatementDateTime"] = abatement
    return found


@pytest.mark.parametrize(("status", "abatement", "late_reviews"), [
    ("active", None, True),                    # still active: followed to 24 months
    ("resolved", "2025-09-01", False),         # resolved 8 months after onset
    ("resolved", "2026-04-01", True),          # resolved 15 months after onset
])
def test_the_late_reviews_apply_to_a_long_course_only(status: str, abatement: str | None, late_reviews: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated: list[str] = []
    real = protocol._compiled

    def counting(text: str) -> Any:
        fn = real(text)
        return lambda *args: (evaluated.append(text), fn(*args))[1]
    monkeypatch.setattr(protocol, "_compiled", counting)
    actions = protocol.plan_actions(PLAN, condition(status, "2025-01-01", abatement), date(2025, 1, 1),
                                    as_of=date(2027, 6, 1))
    planned = {f.action_id for f in actions.follow_ups}
    assert {"review-6w", "review-12m"} <= planned
    assert ({"review-18m", "review-24m"} <= planned) is late_reviews
    assert ({"review-18m", "review-24m"} & set(actions.not_applicable) == set()) is late_reviews
    assert len(evaluated) == 1   # two actions, one expression, one Condition: evaluated once
