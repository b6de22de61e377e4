"""The context-free checks of a bundle's creates run before the write lock (issue 11), and
accept and refuse exactly what they did when they ran inside the transaction.

service.store.bundles.prechecked_creates checks each POST entry's resource as sent (the
index-size precheck and R4: model and required codes) before the unit of work opens, so on
SQLite two workers do that work side by side. The transaction then skips those checks for
the entries that passed; what it writes differs from what was checked only in reference
strings rewritten to 'Type/id'. These tests hold the argument that this cannot change an
answer: every R4 element named 'reference' holding a string is a string or uri (which 'Type/id'
always satisfies) and no required binding reads one; on the R4 examples such a rewrite never
turns a pass into a failure; and bundles with invalid entries get the same answer, and leave
the same nothing behind, with and without the early checks.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest

from service.fhir import resources
from service.store import bundles as store_bundles
from service.store.repository import passes_prechecks
from tests.integration.test_bundles import bundle, condition, entry, history_keys, patient, post_bundle


def rewritten(value: Any, to: str = "Patient/x") -> Any:
    """value with every string under a key 'reference', at any depth, replaced (as the bundle's
    localisation does with the references it resolves)."""
    if isinstance(value, dict):
        return {k: to if k == "reference" and isinstance(v, str) else rewritten(v, to) for k, v in value.items()}
    if isinstance(value, list):
        return [rewritten(v, to) for v in value]
    return value


def test_every_string_valued_reference_element_is_a_string_or_uri() -> None:
    import fhir.resources.R4B as r4b
    kinds: set[str] = set()
    for info in pkgutil.iter_modules(r4b.__path__):
        if info.name.startswith(("fhirtypes", "tests")):
            continue
        module = importlib.import_module(f"fhir.resources.R4B.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            field = getattr(cls, "model_fields", {}).get("reference")
            if field is not None and cls.__module__ == module.__name__:
                kinds.add(str(field.annotation).replace("typing.", ""))
    assert kinds, "no model has an element named reference"
    string_like = {k for k in kinds if "ReferenceType" not in k and "IdentifierType" not in k}
    assert string_like == {"Optional[Annotated[str, String()]]", "Optional[Annotated[str, Uri()]]"}, kinds
    # the R4 types checked against their StructureDefinitions
    data = Path(resources.__file__).parent
    structures = json.loads((data / "r4-structures.json").read_text())
    for elements in structures.values():
        for path, (_, _, types) in elements.items():
            if path.endswith(".reference"):
                assert set(types) <= {"string", "uri", "Reference", "Identifier"}, (path, types)
    # no required binding is on an element named reference
    codes = json.loads((data / "required-codes.json").read_text())
    for table in codes["types"].values():
        assert not any(path.split(".")[-1] == "reference" for path in table["codes"])


def test_a_type_and_id_satisfies_the_string_and_uri_types() -> None:
    good = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:6a3b4d0e-55b7-4b1f-9a51-0c3b1a1b2b3c"}}
    assert passes_prechecks([], good)
    assert passes_prechecks([], rewritten(good, "Patient/A-b.1"))
    issue = {"resourceType": "DetectedIssue", "status": "final", "reference": "urn:uuid:1"}
    assert passes_prechecks([], issue) and passes_prechecks([], rewritten(issue, "Patient/x"))


@pytest.mark.slow
def test_on_every_r4_example_a_rewrite_of_references_never_turns_a_pass_into_a_failure() -> None:
    from tests.unit.search.test_search_accessors import all_examples
    checked = rewrites = 0
    for items in all_examples().values():
        for name, resource in items:
            if not passes_prechecks([], resource):
                continue
            changed = rewritten(resource)
            if changed != resource:
                rewrites += 1
                assert passes_prechecks([], changed), name
            checked += 1
    assert checked > 2000 and rewrites > 500, (checked, rewrites)


# Bundles whose answers must not change: each has a bad create somewhere.
GOOD_PATIENT = entry("POST", "Patient", patient(gender="female"), full_url="urn:uuid:11111111-1111-4111-8111-111111111111")
CASES: dict[str, dict[str, Any]] = {
    "unknown element": bundle("transaction", GOOD_PATIENT,
                              entry("POST", "Condition", condition("urn:uuid:11111111-1111-4111-8111-111111111111",
                                                                   bogus=1))),
    "code outside its required binding": bundle("transaction", GOOD_PATIENT,
                                                entry("POST", "Patient", patient(gender="banana"))),
    "wrong JSON kind": bundle("transaction", entry("POST", "Patient", patient(birthDate=19800101)), GOOD_PATIENT),
    "empty reference to nothing": bundle("transaction", GOOD_PATIENT,
                                         entry("POST", "Condition", condition(""))),
    # invalid as sent (an empty string), valid once the bundle resolves it: accepted, as before
    "empty reference to an entry": bundle("transaction", entry("POST", "Patient", patient(gender="male"), full_url=""),
                                          entry("POST", "Condition", condition(""))),
    "bad id": bundle("transaction", entry("POST", "Patient", patient(id="a b"))),
    "batch with a bad entry": bundle("batch", GOOD_PATIENT, entry("POST", "Patient", patient(gender="banana")),
                                     entry("POST", "Condition", condition("urn:uuid:11111111-1111-4111-8111-111111111111"))),
}


def answer(client, tx: dict[str, Any]) -> tuple[int, Any, set[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """(status, the body without server-assigned ids and times, how many versions are stored)."""
    response = post_bundle(client, copy.deepcopy(tx), Prefer="return=minimal")
    body = response.get_json()
    for item in body.get("entry", []) if isinstance(body, dict) else []:
        for key in ("location", "etag", "lastModified"):
            item.get("response", {}).pop(key, None)
        item.pop("fullUrl", None)
    return response.status_code, body, history_keys(client)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_creates_get_the_same_answer_with_and_without_the_early_checks(app, client, case: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    before = len(history_keys(client))   # the guide's own resources
    early = answer(client, CASES[case])
    stored = len(early[2]) - before
    with monkeypatch.context() as m:
        m.setattr("service.api.bundles.prechecked_creates", lambda *args: frozenset())
        late = answer(client, CASES[case])
    assert late[0] == early[0], (early, late)
    assert late[1] == early[1]
    assert len(late[2]) - before == 2 * stored   # the same versions written again (or none, both times)
    if early[0] != 200:
        assert stored == 0                     # a refused transaction left nothing


def test_the_r4_check_of_a_create_runs_before_the_unit_of_work_and_once(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from flask import g
    outside: list[bool] = []
    real = resources._model

    class Watching:
        def __init__(self, model: Any) -> None:
            self.model = model

        def model_validate(self, data: dict[str, Any]) -> Any:
            if data.get("resourceType") != "Provenance":   # the transaction's own, written inside
                outside.append(g.get("toh_uow") is None)
            return self.model.model_validate(data)

    monkeypatch.setattr(resources, "_model", lambda res_type: Watching(real(res_type)))
    tx = bundle("transaction", GOOD_PATIENT,
                entry("POST", "Condition", condition("urn:uuid:11111111-1111-4111-8111-111111111111")))
    assert post_bundle(client, tx).status_code == 200
    assert outside == [True, True]


def test_prechecked_creates_skips_what_is_not_a_create(app) -> None:  # type: ignore[no-untyped-def]
    passes = app.extensions["toh"].database.passes_prechecks
    tx = bundle("transaction", GOOD_PATIENT, entry("PUT", "Patient/p1", patient(id="p1")), "not an entry",
                entry("POST", "Patient", patient(gender="banana")), entry("POST", "Patient"),
                entry("post", "Patient", patient()))
    assert store_bundles.prechecked_creates(tx, passes, 100) == frozenset({0, 5})
    assert store_bundles.prechecked_creates(tx, passes, 5) == frozenset()            # too many: left to the 413
    assert store_bundles.prechecked_creates({**tx, "type": "collection"}, passes, 100) == frozenset()
    assert store_bundles.prechecked_creates([], passes, 100) == frozenset()
