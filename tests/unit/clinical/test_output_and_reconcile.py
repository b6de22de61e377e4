"""Flag resources, $toh-assessment Parameters, and reconcile_flags."""
from __future__ import annotations

from datetime import date

import pytest

from clinical_factories import PATIENT, condition, day, mri
from service.clinical import (
    FlagFinding, assess, assessment_to_parameters, flag_key, flag_resource, reconcile_flags,
)
from service.fhir.canonical import EXT_FLAG_DETAIL, FLAG_CATEGORY, FLAG_KEY_SYSTEM, SD_TOH_FLAG, TOH_CODES
from service.fhir.errors import Unprocessable
from service.fhir.profiles import has_errors
from service.fhir.resources import validate


def finding(key: str = "migration|knee|right|2023-06-10", text: str = "Bone marrow oedema now in ...",
            evidence: tuple[str, ...] = ("Condition/knee", "Condition/hip"),
            start: date = date(2023, 6, 10)) -> FlagFinding:
    return FlagFinding("migration", "Migration to another joint", start, text, evidence, key)


def stored(f: FlagFinding, id: str, **changes) -> dict:
    return flag_resource(f, PATIENT) | {"id": id} | changes


def test_flag_resource_shape():
    flag = flag_resource(finding(), PATIENT)
    assert flag["status"] == "active"
    assert flag["meta"]["profile"] == [SD_TOH_FLAG]
    assert flag["category"][0]["coding"][0] == {"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}
    assert flag["code"]["coding"][0]["system"] == TOH_CODES and flag["code"]["text"].startswith("Bone")
    assert flag["subject"] == {"reference": PATIENT}
    assert flag["period"] == {"start": "2023-06-10"}
    assert [e["valueReference"]["reference"] for e in flag["extension"]
            if e["url"] == EXT_FLAG_DETAIL] == ["Condition/knee", "Condition/hip"]
    assert flag["identifier"] == [{"system": FLAG_KEY_SYSTEM, "value": finding().key}]
    assert flag_key(flag) == finding().key


def test_flag_and_parameters_are_valid_r4(terminology, guide):
    """Checked as the service checks a write: the R4 structure (service.fhir.resources, R4B
    models plus R4's required bindings; fhir.resources' top-level models are R5) and, for the
    Flags, the guide's TOH Flag profile they claim."""
    a = assess([condition("left hip"), condition("hip", day(1)), condition("right knee", day(4)),
                mri(day(1), oedema=True)], day(13), terminology)
    assert a.flags and a.issues
    for f in a.flags:
        flag = flag_resource(f, PATIENT)
        assert validate(flag, "Flag") == "Flag"
        assert flag["meta"]["profile"] == [SD_TOH_FLAG]
        assert not has_errors(guide.validate(flag)), guide.validate(flag)
    assert validate(assessment_to_parameters(a), "Parameters") == "Parameters"


def test_the_r4_check_used_above_rejects_a_broken_flag():
    """The check above can fail: a Flag without its required code, or with a status outside
    R4's required flag-status binding, is refused."""
    flag = flag_resource(finding(), PATIENT)
    with pytest.raises(Unprocessable):
        validate({k: v for k, v in flag.items() if k != "code"}, "Flag")
    with pytest.raises(Unprocessable):
        validate(flag | {"status": "resolved"}, "Flag")


def test_parameters_content(terminology):
    a = assess([condition("left hip", id="hip"), condition("right knee", day(4), id="knee")], day(5), terminology)
    params = assessment_to_parameters(a)["parameter"]
    assert params[0] == {"name": "asOf", "valueDate": day(5).isoformat()}
    episodes = [p["part"] for p in params if p["name"] == "episode"]
    assert {part["name"]: next(v for k, v in part.items() if k.startswith("value"))
            for part in episodes[1]} == {
        "joint": "knee", "side": "right", "onset": day(4).isoformat(), "status": "active",
        "monthsSinceOnset": 1, "resolutionSuggested": False, "evidence": {"reference": "Condition/knee"}}
    flags = [p["part"] for p in params if p["name"] == "flag"]
    assert [f[0]["valueCoding"]["code"] for f in flags] == ["migration"]
    assert not [p for p in params if p["name"] == "issues"]


def test_issues_become_an_operation_outcome(terminology):
    a = assess([condition("hip", id="c-hip")], day(1), terminology)
    outcome = assessment_to_parameters(a)["parameter"][-1]
    assert outcome["name"] == "issues"
    assert outcome["resource"]["resourceType"] == "OperationOutcome"
    assert "Condition/c-hip" in outcome["resource"]["issue"][0]["diagnostics"]


def test_new_findings_are_created_once():
    changes = reconcile_flags([finding()], [], date(2023, 7, 1))
    assert changes.create == (finding(),) and not changes.update and not changes.deactivate
    again = reconcile_flags([finding()], [stored(finding(), "1")], date(2023, 7, 1))
    assert again.empty and len(again.keep) == 1


def test_situation_gone_makes_the_flag_inactive():
    changes = reconcile_flags([], [stored(finding(), "1")], date(2024, 1, 2))
    (flag,) = changes.deactivate
    assert flag["status"] == "inactive" and flag["period"] == {"start": "2023-06-10", "end": "2024-01-02"}
    assert flag["id"] == "1" and not changes.create


@pytest.mark.parametrize("start, end", [
    ("2024-03-01T09:30:00+01:00", "2024-03-01"),   # a later dateTime start: end on that day
    ("2024-03", "2024-03-01"),                     # a partial date: its first day
    ("2023-12-31T23:00:00Z", "2024-01-02"),        # an earlier start: end on as_of
])
def test_inactive_flag_ends_no_earlier_than_it_starts(start, end):
    flag = stored(finding(), "1", period={"start": start})
    (gone,) = reconcile_flags([], [flag], date(2024, 1, 2)).deactivate
    assert gone["period"] == {"start": start, "end": end}


def test_changed_evidence_updates_the_same_flag():
    newer = finding(evidence=("Condition/knee", "Condition/hip", "Observation/mri"))
    changes = reconcile_flags([newer], [stored(finding(), "1")], date(2023, 7, 1))
    (flag,) = changes.update
    assert flag["id"] == "1" and len(flag["extension"]) == 3 and not changes.create


def test_inactive_flag_that_holds_again_is_reactivated():
    old = stored(finding(), "1", status="inactive", period={"start": "2023-06-10", "end": "2023-08-01"})
    (flag,) = reconcile_flags([finding()], [old], date(2023, 9, 1)).update
    assert flag["status"] == "active" and "end" not in flag["period"]


def test_entered_in_error_is_respected():
    old = stored(finding(), "1", status="entered-in-error")
    changes = reconcile_flags([finding()], [old], date(2023, 9, 1))
    assert changes.empty and changes.keep == (old,)


def test_duplicates_are_collapsed():
    a, b = stored(finding(), "a"), stored(finding(), "b")
    changes = reconcile_flags([finding()], [b, a], date(2023, 9, 1))
    assert [f["id"] for f in changes.keep] == ["a"]
    assert [f["id"] for f in changes.deactivate] == ["b"] and not changes.create


def test_flags_without_a_key_are_left_alone():
    manual = {"resourceType": "Flag", "id": "m", "status": "active", "code": {"text": "Allergy"}}
    changes = reconcile_flags([], [manual], date(2023, 9, 1))
    assert changes.empty and not changes.keep


def test_issues_are_issue_parameters_and_reach_the_flags_they_concern(terminology):
    """Each issue is an `issue` parameter (code, severity, resource, text); a flag lists the
    issues met in its own evidence (issue 9: "no flag" told apart from "not understood")."""
    knee = condition("knee", day(4), id="knee")           # side unknown: an issue on Condition/knee
    a = assess([condition("left hip", id="hip"), knee], day(13), terminology)
    params = assessment_to_parameters(a)["parameter"]
    issues = [{p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in i["part"]}
              for i in params if i["name"] == "issue"]
    assert {"code": "side-unknown", "severity": "warning", "resource": {"reference": "Condition/knee"}}.items() \
        <= next(i for i in issues if i["code"] == "side-unknown").items()
    flags = {next(p["valueCoding"]["code"] for p in f["part"] if p["name"] == "code"): f["part"]
             for f in params if f["name"] == "flag"}
    assert any(p["name"] == "issue" and "Condition/knee" in p["valueString"] for p in flags["migration"])
    assert not any(p["name"] == "issue" for p in flags["delayed-resolution"])   # hip only: nothing unread
