"""A transaction rewrites a prechecked create's references in place (service.store.bundles:
reference_holders, found before the write lock) exactly as _localised rewrites them in a copy:
every 'reference' string at any depth, contained resources and extensions included, and
nothing else (https://hl7.org/fhir/R4/http.html#trules). Checked on every resource of the R4
examples package.
"""
from __future__ import annotations

import copy
from typing import Any

from service.store.bundles import _Processor, reference_holders
from tests.unit.search.test_search_accessors import all_examples


def every_reference(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["reference"]} if isinstance(value.get("reference"), str) else set()
        return found.union(*(every_reference(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(every_reference(v) for v in value))
    return set()


def test_in_place_rewriting_equals_the_copy_on_every_r4_example() -> None:
    rewritten = 0
    for examples in all_examples().values():
        for name, resource in examples:
            processor = _Processor(None, "http://example.org/fhir", True, None)  # type: ignore[arg-type]
            processor.local = {ref: f"Patient/new-{i}" for i, ref in enumerate(sorted(every_reference(resource)))}
            expected = processor._localised(resource)
            in_place = copy.deepcopy(resource)
            holders = reference_holders(in_place)
            for holder in holders:
                holder["reference"] = processor._reference(holder["reference"])
            assert in_place == expected, name
            rewritten += len(holders)
    assert rewritten > 5000   # the package is full of references


def test_holders_are_the_objects_themselves() -> None:
    observation = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"},
                   "contained": [{"resourceType": "Specimen", "subject": {"reference": "urn:uuid:1"}}],
                   "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:2", "display": "d"}}],
                   "note": [{"text": "reference"}], "code": {"text": "x", "reference": 7}}
    holders = reference_holders(observation)
    assert [h["reference"] for h in holders] == ["urn:uuid:1", "urn:uuid:1", "urn:uuid:2"]
    assert holders[0] is observation["subject"]
