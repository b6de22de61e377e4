"""Compiled search accessors give exactly fhirpathpy's values.

The whole R4 examples package (hl7.fhir.r4.examples@4.0.1, every resource of every type) is
run through every indexed parameter of its type, once by the compiled accessor and once by
fhirpathpy with the R4 model: the (type, value) lists must be equal, in order.
"""
from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.engine.nodes import TypeInfo
from fhirpathpy.models import models

from service import _search_parameters
from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.fhir.search.accessors import compile_path, root_keys
from service.fhir.search.composite import CompositeExtractor, components
from service.fhir.search.definitions import TABLE_PARAMS
from service.fhir.search.extract import INDEXED_TYPES, Extractor
from tests.r4_examples import examples_dir

R4 = models["r4"]
RAW = {"returnRawData": True}


@lru_cache(maxsize=1)
def all_examples() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every resource of the package, by type (files that are not a resource left out)."""
    by_type: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for path in sorted(examples_dir().glob("*.json")):
        try:
            resource = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            by_type[resource["resourceType"]].append((path.name, resource))
    return by_type


@lru_cache(maxsize=None)
def fhirpathpy_compiled(expression: str) -> Any:
    return fhirpathpy.compile(expression, R4, RAW)


def fhirpathpy_nodes(expression: str, resource: dict[str, Any]) -> Any:
    try:
        found = fhirpathpy_compiled(expression)(resource, {})
    except Exception as exc:  # noqa: BLE001 - what fhirpathpy raises, compared by kind
        return ("raises", type(exc).__name__)
    return [(getattr(n, "path", None), getattr(n, "data", n)) for n in found]


def compiled_nodes(accessor: Any, resource: dict[str, Any]) -> Any:
    try:
        return accessor(resource)
    except Exception as exc:  # noqa: BLE001
        return ("raises", type(exc).__name__)


@pytest.mark.slow
def test_the_package_has_the_examples() -> None:
    by_type = all_examples()
    assert sum(len(v) for v in by_type.values()) > 2500
    assert len(by_type) > 120


@pytest.mark.slow
@pytest.mark.parametrize("res_type", sorted(R4_RESOURCE_TYPES))
def test_compiled_accessors_equal_fhirpathpy_on_every_example(res_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # fhirpathpy's ofType follows subtypes only once an 'is'/'as' has set this global;
    # compare with its default, which the accessors follow (see service.fhir.search.accessors)
    monkeypatch.setattr(TypeInfo, "model", None)
    registry = _search_parameters()
    parts = [part for code, param in registry.for_type(res_type).items()
             if code not in TABLE_PARAMS and param.type in INDEXED_TYPES for part in param.parts]
    compiled = [(part.expression, compile_path(part.expression), root_keys(res_type, part.root)) for part in parts]
    differences = []
    for name, resource in all_examples().get(res_type, []):
        for expression, accessor, keys in compiled:
            if accessor is None:   # left to fhirpathpy, as before
                continue
            expected = fhirpathpy_nodes(expression, resource)
            if keys and keys.isdisjoint(resource) and not only_extensions(expected):
                differences.append((name, expression, "skipped by its root keys", expected))
            got = compiled_nodes(accessor, resource)
            if got != expected:
                differences.append((name, expression, expected, got))
    assert not differences, differences[:5]


def only_extensions(nodes: Any) -> bool:
    """Whether fhirpathpy found nothing but primitives' extension parts (which index nothing)."""
    return isinstance(nodes, list) and all(
        data is None or (isinstance(data, dict) and not data.keys() - {"id", "extension"}) for _, data in nodes)


def test_nearly_every_r4_expression_compiles() -> None:
    registry = _search_parameters()
    left = {part.expression for t in R4_RESOURCE_TYPES for code, p in registry.for_type(t).items()
            if code not in TABLE_PARAMS and p.type in INDEXED_TYPES
            for part in p.parts if compile_path(part.expression) is None}
    assert left == {"Patient.deceased.exists() and Patient.deceased != false", "Encounter.length"}


PATIENT = {"resourceType": "Patient",
           "name": [{"family": "Chalmers", "given": ["Peter", None, "James"],
                     "_given": [None, {"extension": [{"url": "http://x", "valueString": "y"}]}, None]}],
           "telecom": [{"system": "phone", "value": "(03) 5555 6473"}, {"system": "email", "value": "p@x.org"}],
           "deceasedBoolean": False}


def test_a_path_reads_arrays_and_keeps_nulls_as_fhirpathpy_does() -> None:
    accessor = compile_path("Patient.name.given")
    assert accessor is not None
    assert accessor(PATIENT) == [("string", "Peter"), ("string", None), ("string", "James"),
                                 ("string", None), ("string", None)]
    assert accessor(PATIENT) == fhirpathpy_nodes("Patient.name.given", PATIENT)


def test_where_keeps_the_contact_points_of_that_system() -> None:
    accessor = compile_path("Patient.telecom.where(system='email')")
    assert accessor is not None
    assert accessor(PATIENT) == [("ContactPoint", {"system": "email", "value": "p@x.org"})]


def test_of_type_picks_the_choice_of_that_type() -> None:
    observation = {"resourceType": "Observation", "valueQuantity": {"value": 6, "unit": "{score}"}}
    quantity, concept = compile_path("Observation.value.ofType(Quantity)"), compile_path(
        "(Observation.value.ofType(CodeableConcept)).text")
    assert quantity is not None and concept is not None
    assert quantity(observation) == [("Quantity", {"value": 6, "unit": "{score}"})]
    assert concept(observation) == []


def test_another_type_gives_nothing() -> None:
    accessor = compile_path("Observation.code")
    assert accessor is not None and accessor(PATIENT) == []


def test_the_extractor_gives_the_same_rows_either_way() -> None:
    registry = _search_parameters()
    fast, slow = Extractor(registry), Extractor(registry, compiled_accessors=False)
    assert fast.extract(PATIENT) == slow.extract(PATIENT)


def composite_types() -> list[str]:
    """The types that have a supported composite parameter."""
    registry = _search_parameters()
    return sorted(t for t in R4_RESOURCE_TYPES
                  if any(components(registry, p) is not None for p in registry.for_type(t).values()))


def test_every_composite_expression_compiles() -> None:
    registry = _search_parameters()
    left = {part.expression for t in R4_RESOURCE_TYPES for p in registry.for_type(t).values()
            if components(registry, p) is not None
            for part in p.parts if compile_path(part.expression) is None}
    assert left == set()
    assert "Observation" in composite_types()


@pytest.mark.slow
@pytest.mark.parametrize("res_type", composite_types())
def test_composite_rows_equal_fhirpathpy_on_every_example(res_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the composite elements selected by the compiled accessors give exactly the rows the
    # elements fhirpathpy selects give, on every example of the type
    monkeypatch.setattr(TypeInfo, "model", None)
    registry = _search_parameters()
    extractor = Extractor(registry, compiled_accessors=False)
    fast, slow = CompositeExtractor(registry), CompositeExtractor(registry, compiled_accessors=False)
    examples = all_examples().get(res_type, [])
    differences = []
    rows = 0
    for name, resource in examples:
        expected = slow.extract(resource, extractor.index_value)
        got = fast.extract(resource, extractor.index_value)
        rows += len(expected)
        if got != expected:
            differences.append((name, expected ^ got))
    assert not differences, differences[:5]
    if res_type == "Observation":   # the comparison is not empty
        assert rows > 100, rows
