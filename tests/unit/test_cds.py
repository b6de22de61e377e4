"""The CDS Hooks package without a server: request checks, prefetch reading, the decisions and
their cards, feedback, and reading another FHIR server (over `responses`, no network)."""
from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import responses

from service import _terminology
from service.cds import (ORDER_SELECT, ORDER_SIGN, PATIENT_VIEW, SERVICES, CardContext, judge_orders,
                         parse_feedback, parse_hook_request, patient_view, read_prefetch)
from service.cds import remote
from service.cds.cards import MAX_SUMMARY, shorten
from service.cds.judge import as_written
from service.cds.services import TEMPLATES, discovery
from service.clinical import codes
from service.fhir.errors import BadRequest, PreconditionFailed
from tests.cds_client import check_card, check_discovery
from tests.unit.clinical.clinical_factories import (PATIENT, breastfeeding_status, condition, day, med_request, mri,
                                                    pregnancy_status, weight_bearing)

TODAY = day(3)
CTX = CardContext("hook-1", ORDER_SIGN, "p1", "http://toh.test/ui/patients/p1")


def call(hook: str = "order-sign", **context: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": "i-1", "context": {"patientId": "p1", **context}}


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def test_discovery_has_the_spec_shape() -> None:
    check_discovery(discovery())


@pytest.mark.parametrize("body, service, where", [
    (call(draftOrders=bundle()) | {"hookInstance": 3}, ORDER_SIGN, "hookInstance"),
    (call(), ORDER_SIGN, "context.draftOrders"),
    (call("order-select", draftOrders=bundle()), ORDER_SELECT, "context.selections"),
    (call("patient-view") | {"fhirServer": "ftp://x"}, PATIENT_VIEW, "fhirServer"),
    (call("patient-view") | {"fhirServer": "http://x", "fhirAuthorization": {"access_token": "t"}}, PATIENT_VIEW,
     "fhirAuthorization"),
    (call("patient-view", patientId=None), PATIENT_VIEW, "context.patientId"),
    (call("patient-view") | {"prefetch": {"conditions": "Condition?x"}}, PATIENT_VIEW, "prefetch"),
])
def test_a_malformed_call_is_refused_naming_the_field(body: dict[str, Any], service: str, where: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_hook_request(body, SERVICES[service])
    assert refused.value.outcome()["issue"][0]["expression"] == [where]


def test_prefetch_keeps_the_patients_resources_and_null_keys_count_as_read() -> None:
    mine, theirs = condition(id="mine"), condition(id="theirs") | {"subject": {"reference": "Patient/other"}}
    absolute = condition(id="abs") | {"subject": {"reference": "https://ehr.example/fhir/Patient/p1/_history/2"}}
    found, missing = read_prefetch({"conditions": bundle(mine, theirs, absolute), "observations": None}, "p1")
    assert [r["id"] for r in found] == ["mine", "abs"]
    assert [t.key for t in missing] == [t.key for t in TEMPLATES if t.key not in ("conditions", "observations")]


def test_as_written_signs_a_draft_on_the_day() -> None:
    written = as_written({"resourceType": "ServiceRequest", "status": "draft"}, TODAY, 2)
    assert written == {"resourceType": "ServiceRequest", "status": "active", "id": "draft-2",
                       "authoredOn": TODAY.isoformat()}
    kept = as_written({"resourceType": "CarePlan", "id": "c", "status": "draft", "period": {"start": "2020-01-01"}},
                      TODAY, 0)
    assert "created" not in kept and kept["status"] == "active"


def draft(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "authoredOn"} | {"status": "draft"}


def test_bisphosphonate_while_pregnant_and_after_breastfeeding_ended() -> None:
    order = draft(med_request(TODAY, id="alen"))
    pregnant = [condition(onset=day(1)), pregnancy_status(day(2))]
    [card] = judge_orders(pregnant, [order], (), TODAY, _terminology(), CTX)
    check_card(card)
    assert card["indicator"] == "critical" and card["suggestions"][0]["actions"][0]["resourceId"] == "MedicationRequest/alen"
    weaned = [condition(onset=day(1)), breastfeeding_status(day(-6)), breastfeeding_status(day(2), feeding=False)]
    assert judge_orders(weaned, [order], (), TODAY, _terminology(), CTX) == []
    # a stored order of the same id is replaced by the draft, not counted twice
    assert len(judge_orders(pregnant + [med_request(day(0), id="alen")], [order], (), TODAY, _terminology(), CTX)) == 1


def test_full_weight_bearing_in_a_care_plan_is_answered_with_protected_weight_bearing() -> None:
    record = [condition(onset=day(1)), mri(day(1, 5), oedema=True)]
    plan = {"resourceType": "CarePlan", "id": "plan-1", "status": "draft", "intent": "plan",
            "subject": {"reference": PATIENT},
            "activity": [{"detail": {"status": "scheduled", "description": "Full weight bearing as tolerated"}}]}
    [card] = judge_orders(record, [plan], (), TODAY, _terminology(), CTX)
    check_card(card)
    resource = card["suggestions"][0]["actions"][0]["resource"]
    assert resource["activity"][0]["detail"]["code"]["coding"][0]["code"] == "partial-weight-bearing"
    assert judge_orders(record, [resource], (), TODAY, _terminology(), CTX) == []
    # without active oedema (resolved), full weight-bearing is fine
    healed = [condition(onset=day(1), status="resolved", abated=day(2)), mri(day(1, 5), oedema=True)]
    assert judge_orders(healed, [plan], (), TODAY, _terminology(), CTX) == []


def test_patient_view_gives_one_card_per_flag_with_its_indicator() -> None:
    record = [condition("left hip", day(-14)), mri(day(-13), double_line_sign=True),
              mri(day(-12), subchondral_fracture_line=True), weight_bearing(day(-1))]
    cards = patient_view(record, TODAY, _terminology(), CTX)
    by_code = {c["source"]["topic"]["code"]: c["indicator"] for c in cards}
    assert by_code == {codes.AVN_FEATURES: "critical", codes.INSUFFICIENCY_FRACTURE: "critical",
                       codes.DELAYED_RESOLUTION: "info", codes.FULL_WEIGHT_BEARING_ACTIVE_OEDEMA: "critical"}
    for card in cards:
        check_card(card)


def test_summaries_stay_under_140_characters() -> None:
    assert shorten("x" * 500) == "x" * (MAX_SUMMARY - 1) + "\u2026" and len(shorten("x" * 500)) < 140
    assert shorten("short") == "short"


def test_feedback_items_are_checked() -> None:
    [item] = parse_feedback({"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-05T09:00:00Z",
                                           "overrideReason": {"reason": {"code": "x", "system": "s"},
                                                              "userComment": "why"}}]})
    assert (item.reason, item.user_comment) == ({"code": "x", "system": "s"}, "why")
    for bad in ({}, {"feedback": []}, {"feedback": [{"card": "c", "outcome": "accepted",
                                                     "outcomeTimestamp": "2026-01-05T09:00:00Z"}]},
                {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-05T09:00:00"}]}):
        with pytest.raises(BadRequest):
            parse_feedback(bad)


# -- reading another FHIR server --------------------------------------------------------------
@responses.activate
def test_remote_fetch_sends_the_token_and_follows_next_links_on_that_server_only() -> None:
    base = "https://ehr.example/fhir"
    first = {"resourceType": "Bundle", "entry": [{"resource": condition(id="c1")}],
             "link": [{"relation": "next", "url": f"{base}/Condition?page=2"}]}
    second = {"resourceType": "Bundle", "entry": [{"resource": condition(id="c2")}],
              "link": [{"relation": "next", "url": "https://elsewhere.example/steal"}]}
    responses.get(f"{base}/Condition?patient=p1", json=first, match=[
        responses.matchers.header_matcher({"Authorization": "Bearer tok"})])
    responses.get(f"{base}/Condition?page=2", json=second)
    found = remote.fetch(base, "tok", [TEMPLATES[0]], "p1")
    assert [r["id"] for r in found] == ["c1", "c2"] and len(responses.calls) == 2


@responses.activate
def test_remote_fetch_turns_a_refusal_into_412() -> None:
    responses.get("https://ehr.example/fhir/Condition?patient=p1", status=401, json={})
    with pytest.raises(PreconditionFailed):
        remote.fetch("https://ehr.example/fhir", "tok", [TEMPLATES[0]], "p1")


def test_the_readme_example_gives_the_card_it_shows() -> None:
    """README, "For EHR integrators": the request's body, judged on 2026-01-05, gives the response shown."""
    import json
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## For EHR integrators")[1]
    request_text = re.search(r"```http\n.*?\n\n(.*?)```", section, re.S).group(1)      # type: ignore[union-attr]
    shown = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))       # type: ignore[union-attr]
    hook = parse_hook_request(json.loads(request_text), SERVICES[ORDER_SIGN])
    found, _ = read_prefetch(hook.prefetch, hook.patient_id)
    ctx = CardContext(hook.hook_instance, ORDER_SIGN, hook.patient_id,
                      "https://toh.hospital.example/ui/patients/1288992")
    [card] = judge_orders(found, hook.draft_orders, (), date(2026, 1, 5), _terminology(), ctx)
    [expected] = shown["cards"]
    assert {k: v for k, v in card.items() if k != "detail"} == {k: v for k, v in expected.items() if k != "detail"}
