"""The vendored R4 search parameter definitions and how they apply per type."""
from __future__ import annotations

import pytest

from service.fhir.search.definitions import SearchParameterRegistry, parts_for_type, split_union


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return SearchParameterRegistry.load()


def test_all_official_definitions_are_vendored(registry: SearchParameterRegistry) -> None:
    assert len(registry.definitions) > 1350
    assert registry.by_url("http://hl7.org/fhir/SearchParameter/clinical-patient").type == "reference"


@pytest.mark.parametrize("res_type,codes", [
    ("Patient", ["identifier", "name", "family", "given", "birthdate", "gender"]),
    ("Condition", ["patient", "subject", "code", "clinical-status", "verification-status", "category",
                   "body-site", "onset-date", "abatement-date", "recorded-date"]),
    ("Observation", ["patient", "subject", "code", "category", "date", "status", "value-quantity",
                     "value-concept", "focus", "derived-from"]),
    ("CarePlan", ["patient", "subject", "status", "intent", "category", "date", "activity-date",
                  "condition", "based-on", "instantiates-canonical"]),
    ("MedicationRequest", ["patient", "code", "status", "intent", "authoredon"]),
    ("Flag", ["patient", "subject", "date"]),
    ("Task", ["patient", "subject", "status", "code", "based-on", "focus", "owner", "period"]),
    ("Communication", ["patient", "subject", "status", "based-on"]),
    ("Subscription", ["status", "criteria", "type", "url"]),
])
def test_every_type_has_its_standard_parameters(registry: SearchParameterRegistry, res_type: str,
                                                codes: list[str]) -> None:
    params = registry.for_type(res_type)
    for code in codes + ["_id", "_lastUpdated", "_profile", "_tag", "_security"]:
        assert code in params, code


def test_union_expressions_keep_only_the_type_s_part(registry: SearchParameterRegistry) -> None:
    patient = registry.get("Observation", "patient")
    assert [p.expression for p in patient.parts] == ["Observation.subject"]
    assert patient.targets == ("Patient",)          # from .where(resolve() is Patient)
    assert registry.get("Condition", "subject").targets == ("Group", "Patient")


def test_generic_and_as_expressions_are_rewritten_for_fhirpathpy(registry: SearchParameterRegistry) -> None:
    assert registry.get("Condition", "_profile").parts[0].expression == "Condition.meta.profile"
    parts = registry.get("Observation", "value-quantity").parts
    assert parts[0].expression == "Observation.value.ofType(Quantity)"
    assert parts[0].root == "value"


def test_split_union_respects_parentheses_and_quotes() -> None:
    assert split_union("(A.b as C) | A.c.where(x = 'a|b') | B.d") == [
        "(A.b as C)", "A.c.where(x = 'a|b')", "B.d"]
    assert parts_for_type("Patient.name | Person.name", "Person")[0].expression == "Person.name"


def test_patient_compartment(registry: SearchParameterRegistry) -> None:
    members = registry.compartment_members("Patient")
    assert members["Condition"] == ("patient", "asserter")
    assert "Observation" in members


def test_capability_lists_name_type_definition_documentation(registry: SearchParameterRegistry) -> None:
    params = {p["name"]: p for p in registry.capability("Condition")}
    assert params["onset-date"]["type"] == "date"
    assert params["onset-date"]["definition"] == "http://hl7.org/fhir/SearchParameter/Condition-onset-date"
    assert params["patient"]["documentation"] == "Who has the condition?"


def test_capability_leaves_out_what_search_cannot_run(registry: SearchParameterRegistry) -> None:
    observation = {p["name"]: p["type"] for p in registry.capability("Observation")}
    assert observation["code-value-quantity"] == "composite"          # two components, a token first
    sequence = {p["name"] for p in registry.capability("MolecularSequence")}
    assert registry.get("MolecularSequence", "chromosome-variant-coordinate") is not None   # three components
    assert "chromosome-variant-coordinate" not in sequence
    location = {p["name"] for p in registry.capability("Location")}
    assert registry.get("Location", "near") is not None and "near" not in location          # special
    assert set(observation.values()) <= {"token", "string", "reference", "date", "quantity", "uri", "number",
                                         "composite"}
