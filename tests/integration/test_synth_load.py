"""Synthetic bundles (`toh synth`) posted to the service on SQLite and PostgreSQL: every entry
is accepted, and the clinical watch raises, for each special patient, the Flags its course
holds on the service's clinical date."""
from __future__ import annotations

import json
from datetime import date
from typing import Any

from service.synth import Course, course_bundle, draw_cohort

FHIR = "application/fhir+json"
TODAY = date(2026, 1, 5)      # the `clock` fixture's date
SPECIAL = ("migration", "recurrence", "avn-features", "bisphosphonate-in-pregnancy", "failure-to-resolve")


def special_patients() -> list[Course]:
    """One course per special flag (as of TODAY), and two courses without any flag."""
    chosen: dict[str, Course] = {}
    plain: list[Course] = []
    for course in draw_cohort(5000, seed=21, as_of=TODAY, migration_share=0.4):  # stops early
        flags = course.expected_flags()
        for code in SPECIAL:
            if code in flags and code not in chosen:
                chosen[code] = course
                break
        else:
            if not flags and len(plain) < 2:
                plain.append(course)
        if len(chosen) == len(SPECIAL) and len(plain) == 2:
            break
    assert len(chosen) == len(SPECIAL), sorted(chosen)
    return list(chosen.values()) + plain


def test_synthetic_bundles_are_accepted_and_raise_the_flags_of_their_course(client) -> None:  # type: ignore[no-untyped-def]
    for course in special_patients():
        bundle = course_bundle(course)
        response = client.post("/fhir", data=json.dumps(bundle), headers={"Content-Type": FHIR})
        assert response.status_code == 200, response.get_json()
        entries: list[dict[str, Any]] = response.get_json()["entry"]
        assert [e["response"]["status"] for e in entries] == ["201 Created"] * len(bundle["entry"])
        patient_id = entries[0]["response"]["location"].split("Patient/")[1].split("/")[0]
        flags = client.get(f"/fhir/Flag?patient=Patient/{patient_id}&status=active&_count=100").get_json()
        codes = {c["code"] for e in flags.get("entry", ()) for c in e["resource"]["code"]["coding"]}
        assert codes == set(course.expected_flags()), (course.tags, codes)
        # a confirmed, active TOH Condition has its follow-up plan
        active = [e for e in course.episodes if e.active_on(TODAY)]
        plans = client.get(f"/fhir/CarePlan?subject=Patient/{patient_id}&status=active").get_json()
        assert len(plans.get("entry", ())) == len(active), course.tags
    # posting a bundle again adds no second Patient (conditional create on the record number)
    again = course_bundle(special_patients()[0])
    response = client.post("/fhir", data=json.dumps(again), headers={"Content-Type": FHIR})
    assert response.get_json()["entry"][0]["response"]["status"] == "200 OK"
