"""The index rows a create gets before the write lock (its unbound parameters) are those it
would get once stored, on every resource of the R4 examples package (issue 11).

A transaction extracts the rows of a create's unbound parameters from the resource as the
client sent it, before it takes the write lock, and those of its bound parameters from the
resource as stored (service.fhir.search.extract: BOUND, UNBOUND). Between the two the server
changes only what FHIR lets it change on a create: the id it assigns, meta.versionId and
meta.lastUpdated (http.html#create), and every Reference.reference that points at another
entry of the bundle (http.html#trules). So: with every id, every reference string and those
meta elements changed, the unbound rows must not change; and the two halves together must
be every row.
"""
from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from service import _search_parameters
from service.fhir.search.extract import ALL, BOUND, UNBOUND, Extractor, IndexRows
from tests.unit.search.test_search_accessors import all_examples


def as_sent(value: Any) -> Any:
    """value as a client could have sent it in a transaction: every 'reference' string a
    urn:uuid: fullUrl, no id, no meta.versionId or meta.lastUpdated (at any depth)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                out[key] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, item)}"
            elif key == "id" and isinstance(item, str):
                continue
            elif key == "meta" and isinstance(item, dict):
                out[key] = {k: as_sent(v) for k, v in item.items() if k not in ("versionId", "lastUpdated")}
            else:
                out[key] = as_sent(item)
        return out
    if isinstance(value, list):
        return [as_sent(item) for item in value]
    return value


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(_search_parameters(), ("http://example.org/fhir",))


def test_the_unbound_rows_are_the_same_as_sent_and_as_stored(extractor: Extractor) -> None:
    checked, differing = 0, []
    for res_type, examples in all_examples().items():
        for name, stored in examples:
            sent = as_sent(copy.deepcopy(stored))
            if extractor.extract(sent, UNBOUND) != extractor.extract(stored, UNBOUND):
                differing.append(name)
            checked += 1
    assert checked > 2000, "the R4 examples package should hold thousands of resources"
    assert differing == []


def test_bound_and_unbound_rows_together_are_every_row(extractor: Extractor) -> None:
    for res_type, examples in all_examples().items():
        for name, stored in examples:
            whole = extractor.extract(stored, ALL)
            halves = extractor.extract(stored, UNBOUND).merge(extractor.extract(stored, BOUND))
            assert halves == whole, name


def test_references_are_bound_and_codes_are_not(extractor: Extractor) -> None:
    observation = {"resourceType": "Observation", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "24701-5"}]},
                   "subject": {"reference": "Patient/p1"},
                   "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                                  "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}]}
    unbound, bound = extractor.extract(observation, UNBOUND), extractor.extract(observation, BOUND)
    assert {r.param for r in unbound.token} >= {"code", "status", "component-code"}
    assert unbound.reference == set() and unbound.composite != set()   # component-code-value-quantity
    assert {(r.param, r.target_type, r.target_id) for r in bound.reference} >= {
        ("subject", "Patient", "p1"), ("patient", "Patient", "p1")}
    assert bound.token == set() or all(r.param.endswith(":identifier") for r in bound.token)
    assert IndexRows() == extractor.extract({"resourceType": "Observation"}, BOUND)
