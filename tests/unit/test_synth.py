"""The synthetic cohort (service/synth): reproducible, in the proportions of
shared/clinical/TOH.md, valid against the profiles each resource claims, and read by the
clinical engine as the course was drawn (tests/integration/test_synth_load.py posts it)."""
from __future__ import annotations

import json
from collections import Counter
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from service import _guide, _terminology
from service.clinical import assess
from service.clinical.dates import add_months
from service.fhir.profiles import Conformance, has_errors
from service.fhir.resources import validate as validate_r4
from service.synth import course_bundle, draw_cohort, draw_course, write_cohort
from service.workflows.conformance import side_as_the_rules_read_it

AS_OF = date(2026, 1, 1)


@lru_cache(maxsize=1)
def conformance() -> Conformance:
    """The guide as the service loads it (with the side invariant the service implements)."""
    guide = _guide()
    side_as_the_rules_read_it(guide, _terminology())
    return guide


def as_stored(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources with ids, their urn:uuid references rewritten to Type/id (what
    the server stores), for assess()."""
    text = json.dumps([dict(e["resource"], id=e["fullUrl"].rsplit(":", 1)[1]) for e in bundle["entry"]])
    for entry in bundle["entry"]:
        text = text.replace(f'"{entry["fullUrl"]}"',
                            f'"{entry["resource"]["resourceType"]}/{entry["fullUrl"].rsplit(":", 1)[1]}"')
    return list(json.loads(text))


def test_the_same_seed_writes_the_same_bytes_and_another_seed_other_bytes(tmp_path: Path) -> None:
    write_cohort(tmp_path / "a", 25, seed=7, as_of=AS_OF)
    write_cohort(tmp_path / "b", 25, seed=7, as_of=AS_OF)
    write_cohort(tmp_path / "c", 25, seed=8, as_of=AS_OF)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(names) == 26 and "manifest.json" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    differ = [n for n in names if n != "manifest.json"
              and (tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes()]
    assert len(differ) == 25
    # patient i does not depend on the cohort's size
    write_cohort(tmp_path / "d", 3, seed=7, as_of=AS_OF)
    assert (tmp_path / "d" / "patient-000002.json").read_bytes() == (tmp_path / "a" / "patient-000002.json").read_bytes()
    bundle = json.loads((tmp_path / "a" / "patient-000000.json").read_text())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"


def test_cohort_proportions_follow_the_clinical_facts() -> None:
    courses = list(draw_cohort(600, seed=3, as_of=AS_OF, migration_share=0.25))
    men = [c for c in courses if c.group == "man"]
    women = [c for c in courses if c.group != "man"]
    assert 0.69 <= len(men) / len(courses) <= 0.81          # about 3:1
    for course in men:
        first = min(course.episodes, key=lambda e: e.onset)
        age = (first.onset - course.birth_date).days / 365.25
        assert 40 <= age < 56 and course.sex == "male" and course.delivery is None
    for course in women:
        first = min(course.episodes, key=lambda e: e.onset)
        assert course.sex == "female" and course.delivery is not None
        if course.group == "pregnant":      # third trimester: delivery 2-13 weeks after onset
            assert timedelta(weeks=2) <= course.delivery - first.onset <= timedelta(weeks=13)
        else:                               # just after delivery
            assert timedelta(0) <= first.onset - course.delivery <= timedelta(weeks=8)
    left_in_women = sum(min(c.episodes, key=lambda e: e.onset).side == "left" for c in women) / len(women)
    left_in_men = sum(min(c.episodes, key=lambda e: e.onset).side == "left" for c in men) / len(men)
    assert left_in_women >= 0.6 and left_in_women > left_in_men + 0.1
    tags = Counter(t for c in courses for t in c.tags)
    assert 0.19 <= tags["migration"] / len(courses) <= 0.31
    assert 0.005 <= tags["avn"] / len(courses) <= 0.07
    assert tags["recurrence"] >= 10 and tags["bisphosphonate-in-pregnancy"] >= 2
    # resolution of first episodes without AVN, drawn over the whole course
    firsts = [d for d in (draw_course(3, i, date(2030, 1, 1)) for i in range(600)) if "avn" not in d.tags]
    months = [((e.resolved - e.onset).days / 30.44 if e.resolved else None)
              for e in (min(c.episodes, key=lambda e: e.onset) for c in firsts)]
    within_12 = sum(m is not None and 6 <= m <= 12 for m in months) / len(months)
    late = sum(m is not None and 12 < m <= 24 for m in months) / len(months)
    never = sum(m is None for m in months) / len(months)
    assert 0.68 <= within_12 <= 0.82 and 0.12 <= late <= 0.25 and 0.03 <= never <= 0.12
    assert all(m is None or 6 <= m <= 24 for m in months)
    # a different migration share changes the share of migrations
    low = sum("migration" in c.tags for c in draw_cohort(600, seed=3, as_of=AS_OF, migration_share=0.05))
    assert low / 600 <= 0.09


def test_migration_share_outside_the_sources_range_is_refused() -> None:
    with pytest.raises(ValueError, match="0.05-0.40"):
        draw_course(1, 0, AS_OF, migration_share=0.5)


def test_every_resource_is_r4_and_conforms_to_the_profiles_it_claims() -> None:
    guide = conformance()
    claimed: Counter[str] = Counter()
    for course in draw_cohort(150, seed=11, as_of=AS_OF, migration_share=0.3):
        for entry in course_bundle(course)["entry"]:
            resource = entry["resource"]
            validate_r4(json.loads(json.dumps(resource)), resource["resourceType"])   # raises if not R4
            issues = guide.validate(resource)
            assert not has_errors(issues) and not issues, (resource, issues)
            claimed.update((resource.get("meta") or {}).get("profile") or ())
    # every profile of a clinical record the guide defines is exercised
    expected = {"toh-condition", "toh-mri-observation", "toh-pain-score", "toh-weight-bearing-status",
                "toh-pregnancy-status", "toh-breastfeeding-status"}
    assert {url.rsplit("/", 1)[1] for url in claimed} == expected


def test_the_clinical_engine_reads_each_course_as_it_was_drawn() -> None:
    """assess() on each bundle gives exactly the flags the course holds on as_of, with no
    reading issue; the special patients are all present."""
    seen: Counter[str] = Counter()
    for course in draw_cohort(300, seed=1, as_of=AS_OF, migration_share=0.3):
        result = assess(as_stored(course_bundle(course)), AS_OF, _terminology())
        assert {f.code for f in result.flags} == course.expected_flags(), (course.index, course.tags, result.flags)
        assert not result.issues, result.issues
        assert len(result.episodes) == len(course.episodes)
        seen.update(f.code for f in result.flags)
    for code in ("migration", "recurrence", "avn-features", "bisphosphonate-in-pregnancy", "delayed-resolution",
                 "failure-to-resolve"):
        assert seen[code] >= 1, (code, seen)


def test_failure_to_resolve_fires_on_the_day_24_months_after_onset() -> None:
    course = next(c for c in draw_cohort(400, seed=1, as_of=AS_OF)
                  if "failure-to-resolve" in c.tags and "avn" not in c.tags and len(c.episodes) == 1)
    resources = as_stored(course_bundle(course))
    due = add_months(course.episodes[0].onset, 24)
    before = {f.code for f in assess(resources, due - timedelta(days=1), _terminology()).flags}
    on = {f.code for f in assess(resources, due, _terminology()).flags}
    assert "delayed-resolution" in before and "failure-to-resolve" not in before
    assert "failure-to-resolve" in on


def test_bisphosphonate_in_pregnancy_is_flagged_and_a_mans_is_not() -> None:
    courses = list(draw_cohort(400, seed=1, as_of=AS_OF))
    pregnant = next(c for c in courses if "bisphosphonate-in-pregnancy" in c.tags)
    assert pregnant.bisphosphonate is not None and pregnant.pregnant_on(pregnant.bisphosphonate.ordered)
    flags = assess(as_stored(course_bundle(pregnant)), pregnant.bisphosphonate.ordered, _terminology()).flags
    assert "bisphosphonate-in-pregnancy" in {f.code for f in flags}
    man = next(c for c in courses if c.group == "man" and c.bisphosphonate is not None
               and c.bisphosphonate.ordered <= AS_OF)
    flags = assess(as_stored(course_bundle(man)), man.bisphosphonate.ordered, _terminology()).flags   # type: ignore[union-attr]
    assert "bisphosphonate-in-pregnancy" not in {f.code for f in flags}


def test_codes_are_the_ones_ehrs_send() -> None:
    systems: Counter[str] = Counter()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if "system" in value and "code" in value:
                systems[value["system"]] += 1
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    icd_alone = with_extension = dxa = 0
    for course in draw_cohort(100, seed=2, as_of=AS_OF):
        bundle = course_bundle(course)
        walk(bundle)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Condition" and resource.get("meta"):
                icd_alone += [c["system"] for c in resource["code"]["coding"]] == ["http://hl7.org/fhir/sid/icd-10-cm"]
                with_extension += "extension" in resource["bodySite"][0]
            dxa += resource["resourceType"] == "Observation" and resource["code"].get("coding", [{}])[0].get(
                "code") in ("80946-7", "80945-9")
    assert icd_alone >= 20 and with_extension >= 10 and dxa >= 20
    for system in ("http://hl7.org/fhir/sid/icd-10-cm", "http://snomed.info/sct", "http://loinc.org",
                   "http://www.nlm.nih.gov/research/umls/rxnorm", "https://fhir.toh-service.org/CodeSystem/toh"):
        assert systems[system] > 0, system


def test_toh_synth_writes_the_cohort_and_refuses_a_bad_share(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main
    assert main(["synth", "--patients", "4", "--seed", "9", "--out", str(tmp_path / "c"),
                 "--migration-share", "0.4", "--as-of", "2025-06-30"]) == 0
    assert "wrote 4 patients" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["asOf"] == "2025-06-30" and manifest["migrationShare"] == 0.4
    assert [p["file"] for p in manifest["patientsDetail"]] == [f"patient-00000{i}.json" for i in range(4)]
    assert all((tmp_path / "c" / p["file"]).is_file() for p in manifest["patientsDetail"])
    with pytest.raises(SystemExit) as refused:
        main(["synth", "--patients", "4", "--out", str(tmp_path / "d"), "--migration-share", "0.41"])
    assert refused.value.code == 2 and not (tmp_path / "d").exists()


@pytest.mark.parametrize("today", [date(2026, 11, 30), date(2027, 2, 28), date(2028, 2, 29)])
def test_the_demo_patients_hold_their_worklist_states_on_any_day(today: date) -> None:
    from service.synth.demo import DEMO_ROLES, booked_review, demo_courses
    patients = demo_courses(today, 12)
    assert [p.role for p in patients[:6]] == list(DEMO_ROLES) and len(patients) == 12
    assert len({p.course.mrn for p in patients}) == 12 and all(p.course.mrn.startswith("DEMO-") for p in patients)
    guide = conformance()
    for patient in patients:
        bundle = course_bundle(patient.course)
        for entry in bundle["entry"]:
            assert not guide.validate(entry["resource"]), entry["resource"]
        flags = {f.code for f in assess(as_stored(bundle), today, _terminology()).flags}
        assert flags == patient.course.expected_flags(), (patient.role, flags)
        kind, code = DEMO_ROLES.get(patient.role, ("", ("", "")))[1]
        if kind == "flag" and code != "follow-up-overdue":
            assert code in flags, (patient.role, flags)
    due = patients[0].course.episodes[0]
    assert due.onset == today - timedelta(weeks=6) and due.active_on(today)     # the 6-week review is today
    overdue = patients[1]
    overdue.patient_id, overdue.condition_id = "p1", "c1"
    task = booked_review(overdue, "plan1")
    assert not guide.validate(task)
    window_end = date.fromisoformat(task["restriction"]["period"]["end"])
    assert window_end + timedelta(days=15) <= today < window_end + timedelta(days=60)   # past the 14-day grace
    assert demo_courses(today, 3)[2].course.mrn == patients[2].course.mrn
    assert [p.course for p in demo_courses(today, 12)] == [p.course for p in patients]


def test_toh_demo_sweeps_here_only_when_the_database_is_reachable(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import _local_sweep
    from service.config import Settings
    settings = Settings.from_env()
    assert _local_sweep(settings.with_overrides({"database_url": f"sqlite:///{tmp_path / 'none.db'}"})) is None
    unreachable = _local_sweep(settings.with_overrides({"database_url": "postgresql+psycopg://x@127.0.0.1:1/none"}))
    assert unreachable is not None
    unreachable()     # says so and leaves it to the service's own sweep, does not raise
    assert "waiting for the service's own" in capsys.readouterr().err
