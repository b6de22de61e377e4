"""Reading a course the way EHRs record it (issue 9, faults 5-9), over the guide's ValueSets.

Copies of a problem-list entry, a reactivated problem dated from its version history, how long
a pregnancy status holds, bisphosphonates by any name or code, and weight-bearing from orders
and plans. Each table gives both directions (must fire / must not fire); the expected answers
come from shared/clinical/TOH.md and seed 000, not from the code under test.
"""
from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from clinical_factories import (
    ICD10CM, ONSET, PATIENT, SNOMED, TOH_CODES, breastfeeding_status, care_plan, cc, condition, day,
    drug, med_request, mri, pregnancy_status, resolved,
)
from service.clinical import assess
from service.fhir.canonical import CONDITION_CLINICAL

REC, DEL, FAIL, BIS, FWB = ("recurrence", "delayed-resolution", "failure-to-resolve",
                            "bisphosphonate-in-pregnancy", "full-weight-bearing-active-oedema")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"


@dataclasses.dataclass
class Row:
    name: str
    resources: list[dict[str, Any]]
    as_of: date
    fires: dict[str, date | None]
    issues: frozenset[str] = frozenset()
    history: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)


def row(name: str, resources: list[dict[str, Any]], as_of: date, fires: dict[str, date | None] | None = None,
        issues: tuple[str, ...] = (), history: dict[str, list[dict[str, Any]]] | None = None) -> Row:
    return Row(name, resources, as_of, fires or {}, frozenset(issues), history or {})


def check(r: Row, terminology: Any) -> None:
    a = assess(r.resources, r.as_of, terminology, history=r.history)
    got = {f.code: f.start for f in a.flags}
    assert sorted(f.code for f in a.flags) == sorted(r.fires), (a.flags, a.issues)
    for code, start in r.fires.items():
        if start is not None:
            assert got[code] == start, code
    assert r.issues <= {i.code for i in a.issues}, a.issues


def categorised(res: dict[str, Any], category: str) -> dict[str, Any]:
    return res | {"category": [cc(CATEGORY, category)]}


def versioned(res: dict[str, Any], version: int, written: date) -> dict[str, Any]:
    return res | {"meta": {"versionId": str(version), "lastUpdated": f"{written.isoformat()}T10:00:00Z"}}


# -- fault 5: copies of one diagnosis ------------------------------------------------------------
PROBLEM = categorised(resolved("left hip", ONSET, day(7), id="problem"), "problem-list-item")
COPY_1 = categorised(condition("left hip", ONSET, id="enc1"), "encounter-diagnosis")
COPY_2 = categorised(condition("left hip", day(3), id="enc2"), "encounter-diagnosis")
COPIES = [
    row("resolved problem-list entry, stale active encounter copies: resolved, no flag",
        [PROBLEM, COPY_1, COPY_2], day(25)),
    row("active problem-list entry and copies: one episode, one delayed-resolution",
        [categorised(condition("left hip", ONSET, id="problem"), "problem-list-item"), COPY_1, COPY_2],
        day(13), {DEL: day(12)}),
    row("encounter diagnoses only are read as they are", [COPY_1], day(13), {DEL: day(12)}),
    row("a copy at another joint with no problem-list entry there still counts",
        [PROBLEM, categorised(condition("right knee", day(3), id="enc3"), "encounter-diagnosis")], day(4),
        {"migration": day(3)}),
]


@pytest.mark.parametrize("r", COPIES, ids=lambda r: r.name)
def test_copies_of_one_diagnosis(r: Row, guide_terminology):
    check(r, guide_terminology)


def test_copies_make_one_episode(guide_terminology):
    a = assess([PROBLEM, COPY_1, COPY_2], day(25), guide_terminology)
    assert [(e.status, e.resolution_date) for e in a.episodes] == [("resolved", day(7))]
    assert set(a.episodes[0].evidence) == {"Condition/problem", "Condition/enc1", "Condition/enc2"}


# -- fault 6: a reactivated problem --------------------------------------------------------------
V1 = versioned(condition("left hip", ONSET, id="toh"), 1, ONSET)
V2 = versioned(resolved("left hip", ONSET, day(7), id="toh"), 2, day(7))
V3 = versioned(condition("left hip", ONSET, id="toh", status="recurrence"), 3, day(16))
HISTORY = {"Condition/toh": [V1, V2]}
REACTIVATED = [
    row("recurrence dated from the version history, not 24 months unresolved", [V3], day(25),
        {REC: day(16)}, history=HISTORY),
    row("the new MRI dates it when earlier than the change", [V3, mri(day(15), oedema=True)], day(25),
        {REC: day(15)}, history=HISTORY),
    row("12 months after the recurrence it is delayed", [V3], day(28), {REC: day(16), DEL: day(28)},
        history=HISTORY),
    row("before the change was made the episode was resolved", [V3], day(10), {}, history=HISTORY),
    row("without history the recurrence cannot be dated: no flag, an issue", [V3], day(25), {},
        ("recurrence-undated",)),
    row("an active problem never resolved is still 24 months unresolved",
        [versioned(condition("left hip", ONSET, id="toh"), 2, day(1))], day(25),
        {DEL: day(12), FAIL: day(24)}, history={"Condition/toh": [V1]}),
]


@pytest.mark.parametrize("r", REACTIVATED, ids=lambda r: r.name)
def test_reactivated_problem(r: Row, guide_terminology):
    check(r, guide_terminology)


# -- fault 7: how long a pregnancy status holds ---------------------------------------------------
JAN5 = date(2024, 1, 5)


def rx(when: date, medication: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return med_request(when, medication or drug("Risedronate 35 mg weekly"), **kw)


def preg_condition(code: dict[str, Any], onset: date, **kw: Any) -> dict[str, Any]:
    return condition(None, onset, code=code, **kw)


PREGNANCY = [
    row("seed 000: pregnant, breastfeeding, weaned, then risedronate: no flag",
        [pregnancy_status(JAN5), breastfeeding_status(date(2024, 3, 5)),
         breastfeeding_status(date(2024, 7, 1), False), rx(date(2024, 7, 10))], date(2024, 7, 11)),
    row("breastfeeding still on: flag", [pregnancy_status(JAN5), breastfeeding_status(date(2024, 3, 5)),
                                         rx(date(2024, 7, 10))], date(2024, 7, 11), {BIS: date(2024, 7, 10)}),
    row("a pregnant status 43 weeks old has expired", [pregnancy_status(JAN5), rx(day(0, 7 * 43, JAN5))],
        day(0, 7 * 43 + 1, JAN5)),
    row("a pregnant status 40 weeks old still holds", [pregnancy_status(JAN5), rx(day(0, 7 * 40, JAN5))],
        day(0, 7 * 40 + 1, JAN5), {BIS: day(0, 7 * 40, JAN5)}),
    row("ICD-10-CM Z3A.32 weeks of gestation", [preg_condition(cc(ICD10CM, "Z3A.32"), JAN5), rx(day(1, 0, JAN5))],
        day(1, 1, JAN5), {BIS: day(1, 0, JAN5)}),
    row("ICD-10-CM Z33.1 pregnant state", [preg_condition(cc(ICD10CM, "Z33.1"), JAN5), rx(day(1, 0, JAN5))],
        day(1, 1, JAN5), {BIS: day(1, 0, JAN5)}),
    row("ICD-10-CM O-code", [preg_condition(cc(ICD10CM, "O26.891"), JAN5), rx(day(1, 0, JAN5))],
        day(1, 1, JAN5), {BIS: day(1, 0, JAN5)}),
    row("a pregnancy Condition without abatement expires after 42 weeks",
        [preg_condition(cc(ICD10CM, "Z33.1"), JAN5), rx(day(11, 0, JAN5))], day(11, 1, JAN5)),
    row("a delivery Condition ends the pregnancy",
        [pregnancy_status(JAN5), preg_condition(cc(ICD10CM, "O80"), date(2024, 3, 1)), rx(date(2024, 4, 1))],
        date(2024, 4, 2)),
    row("a later 'not pregnant' ends it", [pregnancy_status(JAN5), pregnancy_status(date(2024, 3, 1), False),
                                           rx(date(2024, 4, 1))], date(2024, 4, 2)),
    row("an 'unknown' pregnancy status does not end it",
        [pregnancy_status(JAN5), {**pregnancy_status(date(2024, 3, 1)), "valueCodeableConcept": cc(SNOMED, "261665006")},
         rx(date(2024, 4, 1))], date(2024, 4, 2), {BIS: date(2024, 4, 1)}, ("value-unknown",)),
]


@pytest.mark.parametrize("r", PREGNANCY, ids=lambda r: r.name)
def test_pregnancy_status_holds(r: Row, guide_terminology):
    check(r, guide_terminology)


# -- fault 8: bisphosphonates by any code or name --------------------------------------------------
PREG = [pregnancy_status(day(-2))]
STOPPED = versioned(rx(day(1), status="stopped", id="rx1"), 2, day(2))
DRUGS = [
    row("RxNorm ingredient without display", PREG + [rx(day(1), cc(RXNORM, "77655"))], day(2), {BIS: day(1)}),
    row("brand name in text", PREG + [rx(day(1), drug("Fosamax 70 mg tablet"))], day(2), {BIS: day(1)}),
    row("another brand", PREG + [rx(day(1), drug("Actonel 35mg"))], day(2), {BIS: day(1)}),
    row("RxNorm clinical drug with its display",
        PREG + [rx(day(1), cc(RXNORM, "1234567", "risedronate sodium 35 MG Oral Tablet"))], day(2), {BIS: day(1)}),
    row("ATC combination M05BB", PREG + [rx(day(1), cc("http://www.whocc.no/atc", "M05BB03"))], day(2), {BIS: day(1)}),
    row("not a bisphosphonate", PREG + [rx(day(1), drug("Denosumab 60 mg"))], day(2)),
    row("a code without a name it does not know: no flag, an issue",
        PREG + [rx(day(1), cc(RXNORM, "999999"))], day(2), {}, ("code-unknown",)),
    row("ordered during pregnancy, stopped a day later, still pregnant: flag",
        PREG + [STOPPED], day(3), {BIS: day(1)}, history={"MedicationRequest/rx1": [versioned(rx(day(1), id="rx1"), 1, day(1))]}),
    row("stopped order before the pregnancy: no flag",
        [versioned(rx(day(-6), status="stopped", id="rx1"), 2, day(-5)), pregnancy_status(day(-2))], day(3),
        history={"MedicationRequest/rx1": [versioned(rx(day(-6), id="rx1"), 1, day(-6))]}),
]


@pytest.mark.parametrize("r", DRUGS, ids=lambda r: r.name)
def test_bisphosphonates(r: Row, guide_terminology):
    check(r, guide_terminology)


# -- fault 9: weight-bearing from orders, plans and text --------------------------------------------
def service_request(when: date, *details: dict[str, Any], code: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": f"sr-{when}-{len(details)}", "status": "active",
            "intent": "order", "subject": {"reference": PATIENT}, "authoredOn": when.isoformat(),
            "code": code or {"text": "Physiotherapy"}, "orderDetail": list(details)}


def plan_activity(when: date, **detail: Any) -> dict[str, Any]:
    return {"resourceType": "CarePlan", "id": f"cp-{when}", "status": "active", "intent": "plan",
            "subject": {"reference": PATIENT}, "period": {"start": when.isoformat()},
            "activity": [{"detail": {"status": "in-progress", **detail}}]}


def wb_text_obs(when: date, value: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"wbt-{when}", "status": "final", "subject": {"reference": PATIENT},
            "effectiveDateTime": when.isoformat(), "code": {"text": "Weight bearing status"},
            "valueCodeableConcept": {"text": value}}


ACTIVE = [condition("left hip", ONSET)]
WEIGHT = [
    row("ServiceRequest orderDetail text", ACTIVE + [service_request(day(1), {"text": "Full weight bearing"})],
        day(2), {FWB: day(1)}),
    row("ServiceRequest orderDetail coded", ACTIVE + [service_request(day(1), cc(TOH_CODES, "full-weight-bearing"))],
        day(2), {FWB: day(1)}),
    row("ServiceRequest WBAT", ACTIVE + [service_request(day(1), {"text": "WBAT"})], day(2), {FWB: day(1)}),
    row("ServiceRequest coded weight-bearing status, detail 'Full'",
        ACTIVE + [service_request(day(1), {"text": "Full"}, code=cc(TOH_CODES, "weight-bearing-status",
                                                                    "Weight-bearing status"))], day(2), {FWB: day(1)}),
    row("ServiceRequest partial with crutches", ACTIVE + [service_request(day(1), {"text": "PWB with crutches"})],
        day(2)),
    row("ServiceRequest 'avoid full weight-bearing'",
        ACTIVE + [service_request(day(1), {"text": "Avoid full weight-bearing"})], day(2)),
    row("ServiceRequest hypothetical progression is not a status",
        ACTIVE + [service_request(day(1), {"text": "Progress to full weight bearing if pain settles"})], day(2),
        {}, ("value-unknown",)),
    row("ServiceRequest unrelated to weight-bearing", ACTIVE + [service_request(day(1), {"text": "Hydrotherapy"})],
        day(2)),
    row("CarePlan activity code text", ACTIVE + [plan_activity(day(1), code={"text": "Full weight-bearing"})],
        day(2), {FWB: day(1)}),
    row("CarePlan activity description", ACTIVE + [plan_activity(day(1), description="Non-weight-bearing, crutches")],
        day(2)),
    row("CarePlan activity coded", ACTIVE + [plan_activity(day(1), code=cc(TOH_CODES, "full-weight-bearing"))],
        day(2), {FWB: day(1)}),
    row("Observation coded by text only, value 'Full'", ACTIVE + [wb_text_obs(day(1), "Full")], day(2), {FWB: day(1)}),
    row("Observation coded by text only, value 'Partial'", ACTIVE + [wb_text_obs(day(1), "Partial")], day(2)),
    row("Observation coded by text only, unreadable value", ACTIVE + [wb_text_obs(day(1), "see notes")], day(2),
        {}, ("value-unknown",)),
    row("full order after the episode resolved", [resolved("left hip", ONSET, day(6)),
                                                  service_request(day(7), {"text": "Full weight bearing"})], day(8)),
]


@pytest.mark.parametrize("r", WEIGHT, ids=lambda r: r.name)
def test_weight_bearing(r: Row, guide_terminology):
    check(r, guide_terminology)


def test_clinical_status_codes_are_the_r4_ones():
    """The reactivation statuses are R4 condition-clinical codes (recurrence, relapse)."""
    assert CONDITION_CLINICAL == "http://terminology.hl7.org/CodeSystem/condition-clinical"
