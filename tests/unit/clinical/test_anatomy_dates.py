"""Joint and side from codings, displays, text and extensions; month arithmetic edges."""
from __future__ import annotations

from datetime import date

import pytest

from clinical_factories import body_site, cc, condition, mri
from service.clinical.anatomy import BOTH, read_site
from service.clinical import parse_as_of
from service.clinical.dates import add_months, parse_date, whole_months
from service.fhir.errors import BadRequest
from service.fhir.canonical import EXT_LATERALITY, SNOMED

L, R = frozenset({"left"}), frozenset({"right"})


@pytest.mark.parametrize("body, joint, sides", [
    (body_site("hip", "left"), "hip", L),                        # profile shape, no displays
    (body_site("knee", "right", "qualifier"), "knee", R),
    (body_site("ankle", None, "joint"), "ankle", frozenset()),
    ({"text": "Left hip"}, "hip", L),
    ({"text": "R knee"}, "knee", R),
    ({"text": "right ankle"}, "ankle", R),
    ({"text": "Lt foot"}, "foot", L),
    ({"text": "left and right hip"}, "hip", BOTH),
    ({"text": "bilateral hips"}, "hip", BOTH),
    ({"text": "head of femur, left"}, "hip", L),
    ({"text": "medial femoral condyle, right"}, "knee", R),
    ({"coding": [{"system": SNOMED, "code": "999", "display": "Structure of left hip joint"}]}, "hip", L),
    ({"text": "hip"}, "hip", frozenset()),
    ({"text": "left or right hip"}, "hip", frozenset()),          # contradictory: no guess
    ({"text": "left hip", "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept":
                                         cc(SNOMED, "24028007")}]}, "hip", frozenset()),
    ({"text": "hip and knee"}, None, frozenset()),
    ({"text": "shoulder"}, None, frozenset()),
])
def test_site_of_condition(terminology, body, joint, sides):
    site = read_site(condition(body=body), terminology)
    assert (site.joint, site.sides) == (joint, sides)
    assert bool(site.problems) is (joint is None or not sides)


@pytest.mark.parametrize("side, sides", [("left", L), ("right", R), ("both", BOTH), (None, frozenset())])
def test_side_from_the_loinc_mri_code(terminology, side, sides):
    site = read_site(mri(date(2024, 1, 1), side), terminology)
    assert (site.joint, site.sides) == ("hip", sides)


def test_side_from_code_text_when_bodysite_missing(terminology):
    res = condition(None, code={"text": "Transient osteoporosis of the left hip"})
    site = read_site(res, terminology)
    assert (site.joint, site.sides) == ("hip", L)


@pytest.mark.parametrize("start, months, expected", [
    (date(2024, 1, 15), 12, date(2025, 1, 15)),
    (date(2024, 2, 29), 12, date(2025, 2, 28)),
    (date(2024, 1, 31), 1, date(2024, 2, 29)),
    (date(2023, 1, 10), 24, date(2025, 1, 10)),
])
def test_add_months(start, months, expected):
    assert add_months(start, months) == expected
    assert whole_months(start, expected) == months


@pytest.mark.parametrize("start, end, months", [
    (date(2024, 1, 15), date(2025, 1, 14), 11),
    (date(2024, 1, 15), date(2025, 1, 15), 12),
    (date(2024, 2, 29), date(2025, 2, 27), 11),
    (date(2024, 2, 29), date(2025, 2, 28), 12),
    (date(2024, 1, 15), date(2024, 1, 1), 0),
])
def test_whole_months(start, end, months):
    assert whole_months(start, end) == months


@pytest.mark.parametrize("text, expected", [
    ("2024-03-10", date(2024, 3, 10)), ("2024-03-10T23:30:00+11:00", date(2024, 3, 10)),
    ("2024-03", date(2024, 3, 1)), ("2024", date(2024, 1, 1)), ("soon", None), (None, None),
])
def test_parse_date(text, expected):
    assert parse_date(text) == expected


@pytest.mark.parametrize("value, expected", [
    (None, date(2024, 6, 1)), ("", date(2024, 6, 1)),               # absent: today
    ("2024-02-29", date(2024, 2, 29)), ("2024-02-29T23:30:00-05:00", date(2024, 2, 29)),
])
def test_as_of_is_a_whole_date(value, expected):
    assert parse_as_of(value, date(2024, 6, 1)) == expected


@pytest.mark.parametrize("value", ["2024", "2024-06", "2024-02-30", "tomorrow", "20240601"])
def test_as_of_rejects_anything_else(value):
    with pytest.raises(BadRequest):
        parse_as_of(value, date(2024, 6, 1))
