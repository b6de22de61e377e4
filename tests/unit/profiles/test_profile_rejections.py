"""Broken instances of each profile are rejected with the right issue at the right location."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.fhir.canonical import (
    EXT_LATERALITY, ICD10CM, LOINC, SD_PAIN_SCORE, SD_TOH_CONDITION, SNOMED, TOH_CODES,
)
from service.fhir.errors import Issue
from service.fhir.profiles import Conformance, has_errors

Example = Callable[[str], dict[str, Any]]


def errors(issues: list[Issue]) -> list[tuple[str, str]]:
    return [(i.code, i.expression[0]) for i in issues if i.severity == "error"]


def assert_only(issues: list[Issue], code: str, location: str, text: str = "") -> None:
    """Exactly one error, with this issue code, location and (part of the) diagnostics."""
    assert errors(issues) == [(code, location)], issues
    assert text in next(i.diagnostics for i in issues if i.severity == "error")


# --- TOH Condition ------------------------------------------------------------------------------
CONDITION = "Condition-toh-left-hip"


def test_condition_missing_bodysite(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    del r["bodySite"]
    assert_only(conformance.validate(r), "required", "Condition.bodySite", "minimum required = 1")


def test_condition_code_from_wrong_system(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["code"] = {"coding": [{"system": SNOMED, "code": "M81.6"}]}  # ICD-10-CM code, SNOMED system
    assert_only(conformance.validate(r), "code-invalid", "Condition.code", "toh-conditions")


def test_condition_icd10cm_code_alone_is_accepted(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["code"] = {"coding": [{"system": ICD10CM, "code": "M81.6"}]}
    assert conformance.validate(r) == []


def test_condition_abated_but_active(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["abatementDateTime"] = "2024-11-02"
    assert_only(conformance.validate(r), "invariant", "Condition", "con-4")


def test_condition_resolved_without_abatement(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["clinicalStatus"]["coding"][0]["code"] = "resolved"
    assert_only(conformance.validate(r), "invariant", "Condition", "toh-cond-1")
    r["abatementDateTime"] = "2024-11-02"
    assert conformance.validate(r) == []


def test_condition_onset_required_and_typed(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    del r["onsetDateTime"]
    assert_only(conformance.validate(r), "required", "Condition.onset")
    r["onsetString"] = "spring"
    assert_only(conformance.validate(r), "structure", "Condition.onset.ofType(string)")
    del r["onsetString"]
    r["onsetPeriod"] = {"start": "2024-03-10"}
    assert conformance.validate(r) == []


def test_condition_missing_clinical_status(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    del r["clinicalStatus"]
    assert ("required", "Condition.clinicalStatus") in errors(conformance.validate(r))


def test_condition_untracked_joint(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["bodySite"][0]["coding"] = [{"system": SNOMED, "code": "85050009", "display": "Humerus"}]
    assert_only(conformance.validate(r), "required", "Condition.bodySite[0].coding", "joint")


def test_condition_bad_laterality_extension(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["bodySite"][0]["extension"][0]["valueCodeableConcept"] = {
        "coding": [{"system": SNOMED, "code": "24136001"}]}
    assert_only(conformance.validate(r), "code-invalid",
                "Condition.bodySite[0].extension[0].value.ofType(CodeableConcept)", "laterality")


def test_condition_side_as_second_coding_or_text(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    del r["bodySite"][0]["extension"]
    assert conformance.validate(r) == []  # "Left hip" in text
    del r["bodySite"][0]["text"]
    issues = conformance.validate(r)
    assert not has_errors(issues)
    assert [(i.severity, i.expression) for i in issues] == [("warning", ("Condition.bodySite[0]",))]
    assert "toh-bodysite-1" in issues[0].diagnostics
    r["bodySite"][0]["coding"].append({"system": SNOMED, "code": "24028007", "display": "Right"})
    assert conformance.validate(r) == []


def test_condition_two_side_codings(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["bodySite"][0]["coding"] += [{"system": SNOMED, "code": "24028007"},
                                   {"system": SNOMED, "code": "7771000"}]
    assert_only(conformance.validate(r), "structure", "Condition.bodySite[0].coding", "side")


def test_condition_subject_must_be_patient(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["subject"] = {"reference": "Group/g1"}
    assert_only(conformance.validate(r), "structure", "Condition.subject", "Group")


# --- TOH MRI Observation ------------------------------------------------------------------------
MRI = "Observation-toh-mri-left-hip"


def test_mri_without_imaging_category(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    r["category"][0]["coding"][0]["code"] = "laboratory"
    assert_only(conformance.validate(r), "required", "Observation.category", "imaging")


def test_mri_wrong_loinc_code(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    r["code"] = {"coding": [{"system": LOINC, "code": "24558-9"}]}  # MR Knee
    assert_only(conformance.validate(r), "code-invalid", "Observation.code")


def test_mri_finding_must_be_boolean(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    del r["component"][2]["valueBoolean"]
    r["component"][2]["valueString"] = "no"
    issues = errors(conformance.validate(r))
    assert issues == [("structure", "Observation.component[2].value.ofType(string)")]
    del r["component"][2]["valueString"]
    assert errors(conformance.validate(r)) == [("required", "Observation.component[2].value")]


def test_mri_unknown_finding_code(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    r["component"][0]["code"] = {"coding": [{"system": TOH_CODES, "code": "mri-finding"}]}  # grouper
    assert_only(conformance.validate(r), "code-invalid", "Observation.component[0].code")


def test_mri_finding_reported_twice(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    r["component"].append(r["component"][0])
    assert_only(conformance.validate(r), "invariant", "Observation", "toh-mri-1")


def test_mri_needs_a_finding_and_a_joint(conformance: Conformance, example: Example) -> None:
    r = example(MRI)
    del r["component"], r["bodySite"]
    assert sorted(errors(conformance.validate(r))) == [
        ("required", "Observation.bodySite"), ("required", "Observation.component")]


# --- pain score ---------------------------------------------------------------------------------
PAIN = "Observation-toh-pain-score-left-hip"


@pytest.mark.parametrize("score", [11, -1, 10.5])
def test_pain_score_out_of_range(conformance: Conformance, example: Example, score: float) -> None:
    r = example(PAIN)
    r["valueQuantity"]["value"] = score
    assert_only(conformance.validate(r), "invariant", "Observation", "toh-pain-1")


@pytest.mark.parametrize("score", [0, 10, 3.5])
def test_pain_score_in_range(conformance: Conformance, example: Example, score: float) -> None:
    r = example(PAIN)
    r["valueQuantity"]["value"] = score
    assert conformance.validate(r) == []


def test_pain_score_wrong_code(conformance: Conformance, example: Example) -> None:
    r = example(PAIN)
    r["code"]["coding"][0]["code"] = "38208-5"
    assert_only(conformance.validate(r), "value", "Observation.code", "pattern")


def test_pain_score_must_be_quantity(conformance: Conformance, example: Example) -> None:
    r = example(PAIN)
    del r["valueQuantity"]
    r["valueInteger"] = 7
    assert ("structure", "Observation.value.ofType(integer)") in errors(conformance.validate(r))


# --- weight-bearing, pregnancy, breastfeeding ---------------------------------------------------
def test_weight_bearing_value_outside_valueset(conformance: Conformance, example: Example) -> None:
    r = example("Observation-toh-weight-bearing-partial")
    r["valueCodeableConcept"] = {"coding": [{"system": TOH_CODES, "code": "crescent-sign"}]}
    assert_only(conformance.validate(r), "code-invalid",
                "Observation.value.ofType(CodeableConcept)", "weight-bearing-status")


def test_weight_bearing_full_is_valid(conformance: Conformance, example: Example) -> None:
    r = example("Observation-toh-weight-bearing-partial")
    r["valueCodeableConcept"] = {"coding": [{"system": TOH_CODES, "code": "full-weight-bearing"}]}
    assert conformance.validate(r) == []


def test_pregnancy_status_wrong_code(conformance: Conformance, example: Example) -> None:
    r = example("Observation-toh-pregnancy-status")
    r["code"] = {"coding": [{"system": LOINC, "code": "11449-6"}]}
    assert_only(conformance.validate(r), "value", "Observation.code")


def test_pregnancy_status_extensible_binding(conformance: Conformance, example: Example) -> None:
    r = example("Observation-toh-pregnancy-status")
    r["valueCodeableConcept"] = {"text": "probably"}  # extensible: no error
    assert conformance.validate(r) == []
    del r["effectiveDateTime"]
    assert_only(conformance.validate(r), "required", "Observation.effective")


def test_breastfeeding_status_needs_coded_value(conformance: Conformance, example: Example) -> None:
    r = example("Observation-toh-breastfeeding-status")
    del r["valueCodeableConcept"]
    assert_only(conformance.validate(r), "required", "Observation.value")
    r["valueBoolean"] = True
    assert_only(conformance.validate(r), "structure", "Observation.value.ofType(boolean)")


# --- CarePlan, Task, Flag -----------------------------------------------------------------------
def test_careplan_without_toh_category(conformance: Conformance, example: Example) -> None:
    r = example("CarePlan-toh-careplan-left-hip")
    del r["category"]
    assert sorted(errors(conformance.validate(r))) == [("required", "CarePlan.category")] * 2


def test_careplan_addresses_a_condition(conformance: Conformance, example: Example) -> None:
    r = example("CarePlan-toh-careplan-left-hip")
    r["addresses"] = [{"reference": "Observation/x"}]
    assert_only(conformance.validate(r), "structure", "CarePlan.addresses[0]", "Observation")
    del r["period"]["start"]
    assert ("required", "CarePlan.period.start") in errors(conformance.validate(r))


def test_task_without_due_date(conformance: Conformance, example: Example) -> None:
    r = example("Task-toh-review-6w-left-hip")
    del r["restriction"]["period"]["end"]
    assert_only(conformance.validate(r), "required", "Task.restriction.period.end")


def test_task_wrong_code_and_basis(conformance: Conformance, example: Example) -> None:
    r = example("Task-toh-review-6w-left-hip")
    r["code"] = {"coding": [{"system": TOH_CODES, "code": "migration"}]}
    r["basedOn"] = [{"reference": "ServiceRequest/1"}]
    assert sorted(errors(conformance.validate(r))) == [
        ("code-invalid", "Task.code"), ("structure", "Task.basedOn[0]")]


def test_flag_needs_clinical_category(conformance: Conformance, example: Example) -> None:
    r = example("Flag-toh-flag-bisphosphonate-in-pregnancy")
    r["category"][0]["coding"][0]["code"] = "admin"
    assert_only(conformance.validate(r), "required", "Flag.category", "clinical")


def test_flag_code_from_toh_flags(conformance: Conformance, example: Example) -> None:
    r = example("Flag-toh-flag-bisphosphonate-in-pregnancy")
    for code in ("flag", "weight-bearing-status"):  # the grouper itself, and a non-flag code
        r["code"] = {"coding": [{"system": TOH_CODES, "code": code}]}
        assert_only(conformance.validate(r), "code-invalid", "Flag.code")
    r["code"] = {"coding": [{"system": TOH_CODES, "code": "follow-up-overdue"}]}
    assert conformance.validate(r) == []


# --- profile claims -----------------------------------------------------------------------------
def test_unknown_profile_is_an_error(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    r["meta"]["profile"].append("http://example.org/StructureDefinition/other")
    assert_only(conformance.validate(r), "not-supported", "Condition.meta.profile[1]")
    issues = conformance.validate(r, unknown_profile="warning")
    assert not has_errors(issues) and issues[0].code == "not-supported"


def test_profile_of_another_type(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    assert_only(conformance.validate(r, SD_PAIN_SCORE), "invalid", "Condition", "Observation")
    assert_only(conformance.validate(r, EXT_LATERALITY), "invalid", "Condition")


def test_explicit_profile_and_no_claim(conformance: Conformance, example: Example) -> None:
    r = example(CONDITION)
    del r["meta"], r["bodySite"]
    assert conformance.validate(r) == []  # plain R4 resources are not profile-checked
    assert errors(conformance.validate(r, SD_TOH_CONDITION + "|0.1.0")) == [
        ("required", "Condition.bodySite")]
    r["meta"] = {"profile": ["http://hl7.org/fhir/StructureDefinition/Condition"]}
    assert conformance.validate(r) == []


def test_not_a_resource(conformance: Conformance) -> None:
    issues = conformance.validate({"id": "x"})
    assert [(i.severity, i.code) for i in issues] == [("error", "structure")]
