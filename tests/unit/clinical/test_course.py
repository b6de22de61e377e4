"""A two-year course, read at several dates; out-of-order arrival; stored Flags over time."""
from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest

from clinical_factories import ONSET, PATIENT, condition, day, mri, pain, weight_bearing
from service.clinical import assess, flag_resource, reconcile_flags
from service.clinical.model import Assessment


def two_year_course() -> list[dict[str, Any]]:
    """Left hip from ONSET (MRI, pain scores), right knee from month 5, hip resolved at month 9
    (repeat MRI shows the oedema gone at month 8), knee still active at month 18."""
    hip = condition("left hip", ONSET, id="hip", status="resolved", abated=day(9))
    knee = condition("right knee", day(5), id="knee")
    return [
        hip, knee,
        mri(day(0, 8), id="mri-hip-1", oedema=True, focal_subchondral_lesion=False,
            double_line_sign=False, crescent_sign=False, subchondral_fracture_line=False),
        mri(day(5, 5), "right", "knee", id="mri-knee-1", oedema=True, crescent_sign=False),
        mri(day(8), id="mri-hip-2", oedema=False),
        weight_bearing(day(0, 9), "partial-weight-bearing", id="wb-1"),
        *[pain(day(m), max(0, 8 - m // 2), id=f"pain-{m}") for m in range(0, 20)],
    ]


def episodes(a: Assessment) -> dict[str, tuple[str, int | None]]:
    return {e.site: (e.status, e.months_since_onset) for e in a.episodes}


@pytest.mark.parametrize("as_of, expected_episodes, expected_flags", [
    (day(-1), {}, set()),
    (day(2), {"left hip": ("active", 2)}, set()),
    (day(5, -1), {"left hip": ("active", 4)}, set()),
    (day(5), {"left hip": ("active", 5), "right knee": ("active", 0)}, {"migration"}),
    (day(9, -1), {"left hip": ("active", 8), "right knee": ("active", 3)}, {"migration"}),
    (day(9), {"left hip": ("resolved", 9), "right knee": ("active", 4)}, {"migration"}),
    (day(17), {"left hip": ("resolved", 17), "right knee": ("active", 12)},
     {"migration", "delayed-resolution"}),
    (day(18), {"left hip": ("resolved", 18), "right knee": ("active", 13)},
     {"migration", "delayed-resolution"}),
])
def test_course_at_several_dates(terminology, as_of, expected_episodes, expected_flags):
    a = assess(two_year_course(), as_of, terminology)
    assert episodes(a) == expected_episodes
    assert set(a.flag_codes()) == expected_flags


def test_course_details_at_month_18(terminology):
    a = assess(two_year_course(), day(18), terminology)
    hip, knee = a.episodes
    assert (hip.onset, hip.resolution_date) == (ONSET, day(9))
    assert hip.evidence == ("Condition/hip", "Observation/mri-hip-1", "Observation/mri-hip-2")
    assert knee.evidence == ("Condition/knee", "Observation/mri-knee-1")
    migration = next(f for f in a.flags if f.code == "migration")
    assert migration.text == ("Bone marrow oedema now in the right knee, 5 months after the left hip: "
                              "suspected regional migratory osteoporosis")
    assert migration.start == day(5)
    assert migration.evidence == ("Condition/knee", "Condition/hip")
    assert not a.issues


def test_hip_resolution_suggested_before_it_is_recorded(terminology):
    a = assess(two_year_course(), day(8, 10), terminology)
    hip = next(e for e in a.episodes if e.joint == "hip")
    assert hip.status == "active" and hip.resolution_suggested


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("as_of", [day(4), day(9), day(18), day(25)])
def test_out_of_order_arrival_gives_the_same_result(terminology, seed, as_of):
    resources = two_year_course() + [weight_bearing(day(6), id="wb-2"),
                                     condition("hip", day(12), id="hip-unknown-side")]
    expected = assess(resources, as_of, terminology)
    shuffled = list(resources)
    random.Random(seed).shuffle(shuffled)
    assert assess(shuffled, as_of, terminology) == expected


class FlagStore:
    """Stored Flags of one patient, updated through reconcile_flags as the store would."""

    def __init__(self) -> None:
        self.flags: dict[str, dict[str, Any]] = {}

    def evaluate(self, resources: list[dict[str, Any]], as_of: date, terminology) -> Any:
        changes = reconcile_flags(assess(resources, as_of, terminology).flags, list(self.flags.values()), as_of)
        for finding in changes.create:
            flag = flag_resource(finding, PATIENT) | {"id": f"f{len(self.flags) + 1}"}
            self.flags[flag["id"]] = flag
        for flag in changes.update + changes.deactivate:
            self.flags[flag["id"]] = flag
        return changes

    def active(self) -> set[str]:
        return {f["code"]["coding"][0]["code"] for f in self.flags.values() if f["status"] == "active"}


def test_stored_flags_follow_the_course_without_duplicates(terminology):
    store = FlagStore()
    course = two_year_course()
    for month in range(0, 19):
        store.evaluate(course, day(month), terminology)
        assert store.evaluate(course, day(month), terminology).empty     # re-running changes nothing
    assert store.active() == {"migration", "delayed-resolution"}
    assert len(store.flags) == 2
    # the knee resolves at month 20: both flags become inactive with period.end
    course = [r for r in course if r["id"] != "knee"] + [
        condition("right knee", day(5), id="knee", status="resolved", abated=day(20))]
    changes = store.evaluate(course, day(20), terminology)
    assert {f["code"]["coding"][0]["code"] for f in changes.deactivate} == {"migration", "delayed-resolution"}
    assert store.active() == set()
    assert {f["period"]["end"] for f in store.flags.values()} == {day(20).isoformat()}
    assert store.evaluate(course, day(21), terminology).empty
