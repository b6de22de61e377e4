"""Each flag: where it must fire, where it must not, and its edges. One table per flag family."""
from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import pytest

from clinical_factories import (
    ATC, ONSET, SNOMED, breastfeeding_status, care_plan, cc, condition, day, drug, med_request,
    mri, pregnancy_status, pregnant_condition, radiograph, resolved, toh_code, weight_bearing,
)
from service.clinical import assess

MIG, REC, DEL, FAIL = "migration", "recurrence", "delayed-resolution", "failure-to-resolve"
AVN, FRX, BIS, FWB = ("avn-features", "insufficiency-fracture", "bisphosphonate-in-pregnancy",
                      "full-weight-bearing-active-oedema")
ALL = {MIG, REC, DEL, FAIL, AVN, FRX, BIS, FWB}


@dataclasses.dataclass
class Case:
    name: str
    resources: list[dict[str, Any]]
    as_of: date
    fires: dict[str, date | None]          # code -> expected start (None: any start)
    issues: frozenset[str] = frozenset()
    text: str = ""                         # a substring of some flag sentence


def case(name: str, resources: list[dict[str, Any]], as_of: date, fires: dict[str, date | None] | None = None,
         issues: tuple[str, ...] = (), text: str = "") -> Case:
    return Case(name, resources, as_of, fires or {}, frozenset(issues), text)


def check(c: Case, terminology) -> None:
    a = assess(c.resources, c.as_of, terminology)
    got = {f.code: f.start for f in a.flags}
    assert set(got) == set(c.fires), (a.flags, a.issues)
    for code, start in c.fires.items():
        if start is not None:
            assert got[code] == start, code
    assert c.issues <= {i.code for i in a.issues}, a.issues
    if c.text:
        assert any(c.text in f.text for f in a.flags), [f.text for f in a.flags]


MIGRATION = [
    case("knee 4 months after left hip", [condition("left hip"), condition("right knee", day(4))],
         day(5), {MIG: day(4)}, text="Bone marrow oedema now in the right knee, 4 months after the left hip"),
    case("other hip", [condition("left hip"), condition("right hip", day(3))], day(3), {MIG: day(3)}),
    case("before the second onset nothing", [condition("left hip"), condition("right knee", day(4))],
         day(4, -1), {}),
    case("bilateral onset same day, two Conditions is not migration",
         [condition("left hip"), condition("right hip")], day(2), {}),
    case("bilateral onset same day, one Condition is not migration",
         [condition(body={"text": "both hips"})], day(2), {}),
    case("recurrence in the same hip is not migration",
         [resolved("left hip", ONSET, day(6)), condition("left hip", day(10))], day(11), {REC: day(10)},
         text="returned in the left hip"),
    case("migration holds only while the new episode is active",
         [condition("left hip"), resolved("right knee", day(4), day(8))], day(9), {}),
    case("text-only bodySite", [condition("left hip", style="text"), condition("right knee", day(4), style="text")],
         day(5), {MIG: day(4)}),
    case("side unknown at the same joint: no guess, an issue",
         [condition("left hip"), condition("hip", day(4))], day(5), {},
         issues=("side-unknown", "migration-undetermined")),
    case("side unknown at another joint is still a migration",
         [condition("left hip"), condition("knee", day(4))], day(5), {MIG: day(4)}, issues=("side-unknown",)),
    case("missing onset: not ordered, an issue",
         [condition("left hip"), condition("right knee", None, recorded=day(4))], day(5), {},
         issues=("missing-onset",)),
    case("refuted Condition is no episode",
         [condition("left hip"), condition("right knee", day(4), verification="refuted")], day(5), {}),
    case("entered-in-error Condition is no episode",
         [condition("left hip"), condition("right knee", day(4), verification="entered-in-error")], day(5), {}),
    case("a Condition outside the TOH ValueSet is no episode",
         [condition("left hip"), condition("right knee", day(4), code=cc(SNOMED, "396275006"))], day(5), {}),
    case("ICD-10 M81.6 is a TOH code", [condition("left hip"),
                                        condition("right ankle", day(2), code=cc("http://hl7.org/fhir/sid/icd-10-cm", "M81.6"))],
         day(3), {MIG: day(2)}),
    case("TOH named by text only",
         [condition("left hip"), condition("right foot", day(2), code={"text": "Bone marrow oedema syndrome"})],
         day(3), {MIG: day(2)}),
    case("third joint migrates from the second",
         [resolved("left hip", ONSET, day(6)), resolved("right knee", day(5), day(9)), condition("left ankle", day(8))],
         day(9), {MIG: day(8)}, text="left ankle, 3 months after the right knee"),
]

RECURRENCE = [
    case("same joint after resolution", [resolved("right hip", ONSET, day(7)), condition("right hip", day(12))],
         day(13), {REC: day(12)}),
    case("overlapping Conditions at one hip are one episode",
         [condition("left hip"), condition("left hip", day(2), code=toh_code("bone-marrow-oedema-syndrome"))],
         day(3), {}),
    case("recurrence resolved: no longer holds",
         [resolved("right hip", ONSET, day(7)), resolved("right hip", day(12), day(15))], day(16), {}),
    case("resolved without abatement date: no recurrence, an issue",
         [condition("right hip", status="resolved"), condition("right hip", day(12))], day(13), {},
         issues=("missing-abatement",)),
]

RESOLUTION = [
    case("11 months unresolved", [condition("left hip")], day(11), {}),
    case("12 months minus a day", [condition("left hip")], day(12, -1), {}),
    case("exactly 12 months", [condition("left hip")], day(12), {DEL: day(12)},
         text="Left hip still unresolved 12 months after onset"),
    case("resolved at 11 months is not delayed", [resolved("left hip", ONSET, day(11))], day(13), {}),
    case("resolved on the 12-month day is not delayed", [resolved("left hip", ONSET, day(12))], day(12), {}),
    case("resolved at 14 months, seen at 13", [resolved("left hip", ONSET, day(14))], day(13), {DEL: day(12)}),
    case("resolved at 14 months, seen at 15", [resolved("left hip", ONSET, day(14))], day(15), {}),
    case("29 February + 12 months = 28 February",
         [condition("left hip", date(2024, 2, 29))], date(2025, 2, 28), {DEL: date(2025, 2, 28)}),
    case("24 months minus a day", [condition("left hip")], day(24, -1), {DEL: day(12)}),
    case("exactly 24 months", [condition("left hip")], day(24), {DEL: day(12), FAIL: day(24)},
         text="review the diagnosis"),
    case("missing onset counted from recordedDate, at least",
         [condition("left hip", None, recorded=day(1))], day(13), {DEL: day(13)},
         issues=("missing-onset",), text="at least 12 months"),
    case("remission counts as resolution", [condition("left hip", status="remission", abated=day(8))],
         day(13), {}),
    case("abatement with active status is not resolution",
         [condition("left hip", abated=day(8))], day(13), {DEL: day(12)}, issues=("abated-but-active",)),
]

IMAGING = [
    case("double-line sign present", [condition("left hip"), mri(day(1), oedema=True, double_line_sign=True)],
         day(2), {AVN: day(1)}, text="Double-line sign at the left hip"),
    case("AVN features reported absent are not AVN",
         [condition("left hip"), mri(day(1), oedema=True, focal_subchondral_lesion=False,
                                     double_line_sign=False, crescent_sign=False)], day(2), {}),
    case("crescent sign at the right knee", [mri(day(1), "right", "knee", crescent_sign=True)], day(2),
         {AVN: day(1)}),
    case("AVN on a bilateral MRI: side unknown", [mri(day(1), "both", focal_subchondral_lesion=True)],
         day(2), {AVN: day(1)}, text="hip (side unknown)"),
    case("AVN MRI after as_of did not exist yet", [mri(day(3), crescent_sign=True)], day(2), {}),
    case("AVN MRI entered in error", [mri(day(1), crescent_sign=True, status="entered-in-error")], day(2), {}),
    case("AVN Condition", [condition("left hip", day(1), code=cc(SNOMED, "444849002"))], day(2), {AVN: day(1)}),
    case("AVN Condition refuted",
         [condition("left hip", day(1), code=cc(SNOMED, "444849002"), verification="refuted")], day(2), {}),
    case("fracture line on MRI", [condition("left hip"), mri(day(2), subchondral_fracture_line=True)], day(3),
         {FRX: day(2)}),
    case("fracture line on a radiograph", [radiograph(day(2), "right hip", subchondral_fracture_line=True)],
         day(3), {FRX: day(2)}),
    case("fracture line reported absent", [mri(day(2), subchondral_fracture_line=False)], day(3), {}),
    case("insufficiency fracture Condition",
         [condition("left hip", day(2), code=toh_code("subchondral-insufficiency-fracture"))], day(3),
         {FRX: day(2)}),
]

PREGNANT = [pregnancy_status(day(-2))]
BISPHOSPHONATE = [
    case("alendronate by name while pregnant", PREGNANT + [med_request(day(1))], day(2), {BIS: day(1)}),
    case("ATC-coded zoledronic acid while breastfeeding",
         [breastfeeding_status(day(-1)), med_request(day(1), drug(atc="M05BA08"))], day(2), {BIS: day(1)}),
    case("brand name from a ValueSet designation", PREGNANT + [med_request(day(1), drug("FOSAMAX 70 mg"))],
         day(2), {BIS: day(1)}),
    case("not pregnant", [med_request(day(1))], day(2), {}),
    case("latest status not pregnant", PREGNANT + [pregnancy_status(day(0), False), med_request(day(1))],
         day(2), {}),
    case("pregnancy recorded after as_of", [pregnancy_status(day(3)), med_request(day(1))], day(2), {}),
    case("pregnancy recorded during an open order", [med_request(day(1)), pregnancy_status(day(3))],
         day(4), {BIS: day(3)}),
    case("cancelled order", PREGNANT + [med_request(day(1), status="cancelled")], day(2), {}),
    case("order completed before the pregnancy",
         [med_request(day(-6), status="completed", end=day(-4)), pregnancy_status(day(-2))], day(2), {}),
    case("not a bisphosphonate", PREGNANT + [med_request(day(1), drug("Paracetamol 1 g"))], day(2), {}),
    case("care plan product while a pregnancy Condition is active",
         [pregnant_condition(day(-3)), care_plan(day(1), drug("Zoledronic acid 5 mg"))], day(2), {BIS: day(1)}),
    case("ended order and no longer pregnant: no longer holds",
         PREGNANT + [med_request(day(1), status="completed", end=day(2)), pregnancy_status(day(4), False)],
         day(5), {}),
    case("medicationReference to a Medication",
         PREGNANT + [{"resourceType": "Medication", "id": "m1", "code": cc(ATC, "M05BA04")},
                     med_request(day(1)) | {"medicationCodeableConcept": None,
                                            "medicationReference": {"reference": "Medication/m1"}}],
         day(2), {BIS: day(1)}),
    case("medicationReference to a version of a Medication",
         PREGNANT + [{"resourceType": "Medication", "id": "m1", "code": cc(ATC, "M05BA04")},
                     med_request(day(1)) | {"medicationCodeableConcept": None,
                                            "medicationReference": {"reference": "Medication/m1/_history/2"}}],
         day(2), {BIS: day(1)}),
    case("a reference to another type with a Medication's id is not that Medication",
         PREGNANT + [{"resourceType": "Medication", "id": "m1", "code": cc(ATC, "M05BA04")},
                     med_request(day(1)) | {"medicationCodeableConcept": None,
                                            "medicationReference": {"reference": "Substance/m1"}}],
         day(2), {}),
]

WEIGHT_BEARING = [
    case("full weight-bearing during active oedema", [condition("left hip"), weight_bearing(day(1))],
         day(2), {FWB: day(1)}, text="Full weight-bearing recorded on"),
    case("partial weight-bearing", [condition("left hip"), weight_bearing(day(1), "partial-weight-bearing")],
         day(2), {}),
    case("full, then partial", [condition("left hip"), weight_bearing(day(1)),
                                weight_bearing(day(2), "partial-weight-bearing")], day(3), {}),
    case("full before the onset only", [weight_bearing(day(-1)), condition("left hip")], day(1), {}),
    case("full while active, episode since resolved",
         [resolved("left hip", ONSET, day(6)), weight_bearing(day(1))], day(7), {}),
    case("full after resolution", [resolved("left hip", ONSET, day(6)), weight_bearing(day(7))], day(8), {}),
]


@pytest.mark.parametrize("c", MIGRATION + RECURRENCE, ids=lambda c: c.name)
def test_migration_and_recurrence(c, terminology):
    check(c, terminology)


@pytest.mark.parametrize("c", RESOLUTION, ids=lambda c: c.name)
def test_delayed_and_failed_resolution(c, terminology):
    check(c, terminology)


@pytest.mark.parametrize("c", IMAGING, ids=lambda c: c.name)
def test_avn_and_fracture(c, terminology):
    check(c, terminology)


@pytest.mark.parametrize("c", BISPHOSPHONATE, ids=lambda c: c.name)
def test_bisphosphonate_in_pregnancy(c, terminology):
    check(c, terminology)


@pytest.mark.parametrize("c", WEIGHT_BEARING, ids=lambda c: c.name)
def test_full_weight_bearing(c, terminology):
    check(c, terminology)


def test_keys_identify_the_situation(terminology):
    resources = [condition("left hip"), condition("right knee", day(5))]
    keys = {f.code: f.key for f in assess(resources, day(18), terminology).flags}
    assert keys == {MIG: f"migration|knee|right|{day(5)}", DEL: f"delayed-resolution|knee|right|{day(5)}"}
    later = {f.code: f.key for f in assess(resources, day(20), terminology).flags}
    assert later == keys


def test_resolution_suggested_by_mri(terminology):
    resources = [condition("left hip"), mri(day(1), oedema=True), mri(day(6), oedema=False)]
    assert not assess(resources, day(5), terminology).episodes[0].resolution_suggested
    episode = assess(resources, day(7), terminology).episodes[0]
    assert episode.resolution_suggested and episode.status == "active"
    assert episode.evidence[-2:] == tuple(sorted(r["resourceType"] + "/" + r["id"] for r in resources[1:]))


def test_missing_valuesets_are_reported():
    from service.clinical import Terminology
    a = assess([condition("left hip")], day(1), Terminology([]))
    assert not a.episodes
    assert "terminology" in {i.code for i in a.issues}


def test_as_of_must_be_a_date(terminology):
    from service.fhir.errors import BadRequest
    with pytest.raises(BadRequest):
        assess([], "2024-01-01", terminology)  # type: ignore[arg-type]


def test_mri_oedema_without_a_condition_is_reported_not_flagged(terminology):
    a = assess([condition("left hip"), mri(day(4), "right", "knee", oedema=True)], day(5), terminology)
    assert not a.flags and len(a.episodes) == 1
    assert "oedema-without-condition" in {i.code for i in a.issues}


@pytest.mark.parametrize("reference, base_urls, found", [
    ("http://toh.test/fhir/Medication/m1", ("http://toh.test/fhir",), True),   # this server
    ("http://toh.test/fhir/Medication/m1/_history/3", ("http://toh.test/fhir/",), True),
    ("http://elsewhere.org/fhir/Medication/m1", ("http://toh.test/fhir",), False),
    ("http://toh.test/fhir/Medication/m1", (), False),                          # base unknown
])
def test_absolute_medication_reference_to_this_server(reference, base_urls, found, terminology):
    resources = PREGNANT + [{"resourceType": "Medication", "id": "m1", "code": cc(ATC, "M05BA04")},
                            med_request(day(1)) | {"medicationCodeableConcept": None,
                                                   "medicationReference": {"reference": reference}}]
    codes = assess(resources, day(2), terminology, base_urls=base_urls).flag_codes()
    assert (BIS in codes) is found
