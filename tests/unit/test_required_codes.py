"""Codes checked against R4's required bindings: one code-invalid issue per bad code, located."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from service.fhir import required_codes
from service.fhir.errors import Unprocessable
from service.fhir.resources import validate

ROOT = Path(__file__).resolve().parents[2]

OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}

INVALID = [
    # (resource, FHIRPath locations of the code-invalid issues)
    ({"resourceType": "Patient", "gender": "banana"}, ["Patient.gender"]),
    (dict(OBSERVATION, status="finished"), ["Observation.status"]),
    ({"resourceType": "Patient", "name": [{"use": "official"}, {"use": "nick"}]}, ["Patient.name[1].use"]),
    ({"resourceType": "Patient", "contained": [dict(OBSERVATION, id="o", status="done")]},
     ["Patient.contained[0].status"]),
    ({"resourceType": "Patient", "contact": [{"telecom": [{"system": "phone"}, {"system": "telex"}]}]},
     ["Patient.contact[0].telecom[1].system"]),
    (dict(OBSERVATION, valueQuantity={"value": 1, "comparator": "=<"}), ["Observation.valueQuantity.comparator"]),
    (dict(OBSERVATION, subject={"identifier": {"use": "primary", "value": "1"}}),
     ["Observation.subject.identifier.use"]),
    ({"resourceType": "Patient", "text": {"status": "draft", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}},
     ["Patient.text.status"]),
    ({"resourceType": "Patient", "address": [{"use": "holiday"}], "gender": "female"}, ["Patient.address[0].use"]),
    ({"resourceType": "Patient", "extension": [{"url": "http://e.org/x", "valueHumanName": {"use": "x"}}]},
     ["Patient.extension[0].valueHumanName.use"]),
    ({"resourceType": "Bundle", "type": "collection",
      "entry": [{"resource": {"resourceType": "Patient", "gender": "m"}}]}, ["Bundle.entry[0].resource.gender"]),
    ({"resourceType": "Questionnaire", "status": "active",
      "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "text-box"}]}]},
     ["Questionnaire.item[0].item[0].type"]),
    ({"resourceType": "Patient", "gender": "banana", "name": [{"use": "nick"}]}, ["Patient.gender", "Patient.name[0].use"]),
]

VALID = [
    {"resourceType": "Patient", "gender": "unknown", "name": [{"use": "official"}, {"use": "nickname"}],
     "telecom": [{"system": "email", "use": "work", "value": "a@b.org"}], "address": [{"use": "home"}]},
    dict(OBSERVATION, valueQuantity={"value": 1, "comparator": "<="}, subject={"identifier": {"use": "usual"}}),
    {"resourceType": "Patient", "contained": [OBSERVATION | {"id": "o", "status": "amended"}]},
    {"resourceType": "Patient", "gender": "female", "_gender": {"extension": [{"url": "http://e.org/x", "valueCode": "f"}]}},
]


@pytest.mark.parametrize("resource, locations", INVALID)
def test_bad_codes_are_422_with_their_locations(resource: dict[str, Any], locations: list[str]) -> None:
    with pytest.raises(Unprocessable) as raised:
        validate(resource)
    issues = raised.value.issues
    assert [i.expression for i in issues] == [(where,) for where in locations]
    assert {(i.severity, i.code) for i in issues} == {("error", "code-invalid")}
    assert raised.value.status == 422


@pytest.mark.parametrize("resource", VALID)
def test_allowed_codes_pass(resource: dict[str, Any]) -> None:
    assert validate(resource) == resource["resourceType"]
    assert required_codes.check(resource) == []


def test_diagnostics_name_the_allowed_codes_briefly() -> None:
    [issue] = required_codes.check({"resourceType": "Patient", "gender": "banana"})
    assert "'banana'" in issue.diagnostics and "female | male | other | unknown" in issue.diagnostics
    [long] = required_codes.check({"resourceType": "Questionnaire", "subjectType": ["Unicorn"]})
    assert long.expression == ("Questionnaire.subjectType[0]",) and "codes)" in long.diagnostics


def test_types_without_an_r4b_model_are_still_checked() -> None:
    with pytest.raises(Unprocessable) as raised:
        validate({"resourceType": "Evidence", "status": "finished",
                  "exposureBackground": {"reference": "EvidenceVariable/e1"}})
    assert [i.code for i in raised.value.issues] == ["code-invalid"]


def test_a_code_the_model_rejects_is_reported_once() -> None:
    with pytest.raises(Unprocessable) as raised:
        validate({"resourceType": "Patient", "gender": " male"})    # not a code: bad pattern
    assert [i.expression for i in raised.value.issues] == [("Patient.gender",)]


def test_values_of_the_wrong_shape_are_left_to_the_model() -> None:
    assert required_codes.check({"resourceType": "Patient", "gender": 7, "name": "x", "contained": [1, None]}) == []
    assert required_codes.check({"resourceType": "Unicorn", "gender": "banana"}) == []


@pytest.mark.slow
def test_vendored_file_matches_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.r4_examples import examples_dir
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("build_required_codes", ROOT / "scripts" / "build_required_codes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build(str(examples_dir())) == json.loads(required_codes.DATA_FILE.read_text())
