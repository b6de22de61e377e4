"""The R4 types R4B dropped or redefined are checked against their R4 StructureDefinitions
(https://hl7.org/fhir/R4/medicinalproduct.html, evidence.html, substancespecification.html...)."""
from __future__ import annotations

from typing import Any

import pytest

from service.fhir.errors import Unprocessable
from service.fhir.r4_structures import checked_types
from service.fhir.resources import r4_only_types, validate
from tests.r4_examples import examples


def test_every_type_without_an_r4b_model_has_a_table() -> None:
    assert checked_types() == r4_only_types()
    assert {"Evidence", "EvidenceVariable", "MedicinalProduct", "SubstanceSpecification"} <= checked_types()


@pytest.mark.slow
def test_the_r4_examples_of_these_types_pass() -> None:
    found = [(name, r) for t in sorted(r4_only_types()) for name, r in examples(t)]
    assert len(found) >= 10
    for _, resource in found:
        validate(resource)


MEDICINAL_PRODUCT = {"resourceType": "MedicinalProduct", "name": [{"productName": "Alendronate 70 mg"}]}

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({**MEDICINAL_PRODUCT, "colour": "red"}, "MedicinalProduct.colour", "structure"),             # unknown element
    ({"resourceType": "MedicinalProduct"}, "MedicinalProduct.name", "required"),                 # name is 1..*
    ({**MEDICINAL_PRODUCT, "name": {"productName": "x"}}, "MedicinalProduct.name", "structure"),  # an array
    ({**MEDICINAL_PRODUCT, "domain": [{"text": "x"}]}, "MedicinalProduct.domain", "structure"),   # not an array
    ({"resourceType": "MedicinalProduct", "name": [{"productName": 5}]}, "MedicinalProduct.name[0].productName",
     "value"),                                                                                  # a string
    ({**MEDICINAL_PRODUCT, "type": {"coding": {"code": "x"}}}, "MedicinalProduct.type.coding", "value"),  # R4B model
    ({**MEDICINAL_PRODUCT, "_colour": {"id": "x"}}, "MedicinalProduct._colour", "structure"),
    ({"resourceType": "SubstanceSpecification", "moiety": [{"amountBoolean": True}]},
     "SubstanceSpecification.moiety[0].amountBoolean", "structure"),                             # not a type of amount[x]
    ({"resourceType": "SubstanceSpecification", "name": [{"name": "a", "synonym": [{"name": 1}]}]},
     "SubstanceSpecification.name[0].synonym[0].name", "value"),                                # contentReference
    ({"resourceType": "Evidence", "status": "active"}, "Evidence.exposureBackground", "required"),
]


@pytest.mark.parametrize("resource, where, code", BAD, ids=[b[1] for b in BAD])
def test_structural_faults_are_refused_with_their_location(resource, where, code) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Unprocessable) as raised:
        validate(resource)
    assert any(i.expression and i.expression[0].startswith(where) and i.code == code
               for i in raised.value.issues), raised.value.issues


def test_valid_shapes_pass() -> None:
    validate(MEDICINAL_PRODUCT)
    validate({"resourceType": "SubstanceSpecification", "moiety": [{"amountString": "1 mg"}],
              "name": [{"name": "a", "synonym": [{"name": "b"}]}]})
    validate({"resourceType": "MedicinalProduct", "name": [{"productName": "x", "_productName": {"id": "n1"}}]})
