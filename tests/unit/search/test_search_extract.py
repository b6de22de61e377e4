"""Write-time extraction of index rows with fhirpathpy."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.extract import (DateRow, Extractor, NumberRow, QuantityRow, ReferenceRow,
                                         StringRow, TokenRow, UriRow)
from service.fhir.search.values import HIGH_END, LOW_END
from tests.r4_examples import examples

UTC = timezone.utc


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(SearchParameterRegistry.load(), ["http://toh.test/fhir"])


def test_tokens_from_codeable_concept_identifier_code_boolean_and_meta(extractor: Extractor) -> None:
    rows = extractor.extract({
        "resourceType": "Patient", "id": "p1", "active": True, "gender": "female",
        "meta": {"tag": [{"system": "http://toh/tags", "code": "cohort-a"}], "profile": ["http://toh/SD/p"]},
        "identifier": [{"system": "urn:mrn", "value": "M1"}],
        "telecom": [{"system": "email", "value": "a@b.org"}],
    }).token
    assert TokenRow("gender", None, "female", None) in rows
    assert TokenRow("active", None, "true", None) in rows
    # string-typed values carry their case-folded form: R4 searches them without case
    assert TokenRow("identifier", "urn:mrn", "M1", None, "m1") in rows
    assert TokenRow("_tag", "http://toh/tags", "cohort-a", None) in rows
    assert TokenRow("email", "email", "a@b.org", None, "a@b.org") in rows
    cond = extractor.extract({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1",
                                                   "display": "Ostéoporose"}], "text": "TOH Left"}}).token
    assert TokenRow("code", "http://snomed.info/sct", "1", "osteoporose") in cond
    assert TokenRow("code", None, None, "toh left") in cond


def test_strings_are_normalised_and_exact(extractor: Extractor) -> None:
    rows = extractor.extract({"resourceType": "Patient", "name": [
        {"family": "Müller", "given": ["Ánna", "Maria"], "text": "Ánna Müller"}],
        "address": [{"city": "Zürich", "line": ["Bahnhofstr. 1"]}]}).string
    assert StringRow("family", "muller", "Müller") in rows
    assert StringRow("given", "anna", "Ánna") in rows
    assert {r.norm for r in rows if r.param == "name"} == {"muller", "anna", "maria", "anna muller"}
    assert StringRow("address-city", "zurich", "Zürich") in rows


def test_references_relative_absolute_urn_and_resolve_filter(extractor: Extractor) -> None:
    rows = extractor.extract({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                              "subject": {"reference": "http://toh.test/fhir/Group/g1"},
                              "focus": [{"reference": "Condition/c1/_history/2"}],
                              "derivedFrom": [{"reference": "urn:uuid:abc"}],
                              "basedOn": [{"reference": "#contained"}]}).reference
    assert ReferenceRow("subject", "Group", "g1", None) in rows
    assert ReferenceRow("focus", "Condition", "c1", None) in rows
    assert ReferenceRow("derived-from", None, None, "urn:uuid:abc") in rows
    # 'patient' is Observation.subject.where(resolve() is Patient): a Group subject is not one
    assert not [r for r in rows if r.param == "patient"]
    assert not [r for r in rows if r.param == "based-on"]


def test_canonical_references_and_uris(extractor: Extractor) -> None:
    rows = extractor.extract({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                              "subject": {"reference": "Patient/p1"},
                              "instantiatesCanonical": ["https://fhir.toh-service.org/PlanDefinition/p|1"],
                              "instantiatesUri": ["http://example.org/protocol"]})
    assert ReferenceRow("instantiates-canonical", None, None,
                        "https://fhir.toh-service.org/PlanDefinition/p") in rows.reference
    assert UriRow("instantiates-uri", "http://example.org/protocol") in rows.uri


def test_dates_as_ranges(extractor: Extractor) -> None:
    rows = extractor.extract({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                              "onsetDateTime": "2026", "abatementPeriod": {"start": "2026-06-01"},
                              "recordedDate": "2026-02-11T10:15:00+01:00"}).date
    assert DateRow("onset-date", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)) in rows
    assert DateRow("abatement-date", datetime(2026, 6, 1, tzinfo=UTC), HIGH_END) in rows
    assert DateRow("recorded-date", datetime(2026, 2, 11, 9, 15, tzinfo=UTC),
                   datetime(2026, 2, 11, 9, 15, 1, tzinfo=UTC)) in rows
    plan = extractor.extract({"resourceType": "CarePlan", "status": "active", "intent": "plan",
                              "subject": {"reference": "Patient/p1"}, "period": {"end": "2026-08"}}).date
    assert DateRow("date", LOW_END, datetime(2026, 9, 1, tzinfo=UTC)) in plan


def test_quantities_and_numbers(extractor: Extractor) -> None:
    obs = extractor.extract({"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                             "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org",
                                               "code": "kg"}})
    assert QuantityRow("value-quantity", 70.5, "http://unitsofmeasure.org", "kg", "kg") in obs.quantity
    risk = extractor.extract({"resourceType": "RiskAssessment", "status": "final",
                              "subject": {"reference": "Patient/p1"},
                              "prediction": [{"probabilityDecimal": 0.25}]})
    assert NumberRow("probability", 0.25) in risk.number


def test_bad_values_are_skipped_not_raised(extractor: Extractor) -> None:
    rows = extractor.extract({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                              "onsetDateTime": "not a date", "code": {"coding": [{}]}})
    assert not [r for r in rows.date if r.param == "onset-date"]
    assert not [r for r in rows.token if r.param == "code"]


@pytest.mark.parametrize("resource_type", ["Patient", "Condition", "Observation", "CarePlan",
                                           "MedicationRequest", "Flag", "Task", "Communication", "Subscription"])
def test_official_examples_extract_without_failures(extractor: Extractor, resource_type: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Every official R4 example of the type (tests/r4_examples.py, fetched into .cache/) is
    indexed without a logged failure, and each yields rows of its own search parameters."""
    found = examples(resource_type)
    assert found, f"no {resource_type} example in the R4 examples package"
    for name, resource in found:
        rows = extractor.extract(resource)
        indexed = [r for kind in (rows.token, rows.string, rows.reference, rows.date, rows.quantity,
                                  rows.number, rows.uri) for r in kind]
        assert indexed, name
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
