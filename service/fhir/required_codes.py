"""Coded values checked against the required bindings of FHIR R4.

fhir.resources checks structure but not codes, so ``Patient.gender = "banana"`` passes it.
This module checks every element of type ``code`` that R4 binds ``required`` to a closed
ValueSet: in every resource type, in the complex data types wherever they occur (HumanName.use,
ContactPoint.system, Identifier.use, Quantity.comparator, Narrative.status...), in extensions,
and in nested resources (contained, Bundle.entry.resource, Parameters.parameter.resource),
each checked with its own type.

The tables come from the vendored required-codes.json (built by
scripts/build_required_codes.py from the R4 StructureDefinitions). They are compiled once into
a tree per type: property name -> (kind, payload), where kind says whether the payload is a
set of allowed codes, a child tree, or a marker for a nested resource. A check walks the
resource's JSON keys only, so its cost follows the size of the resource.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from service.fhir.errors import Issue

DATA_FILE = Path(__file__).with_name("required-codes.json")
VALUE_SET_BASE = "http://hl7.org/fhir/ValueSet/"
_SHOWN = 8                          # how many allowed codes a diagnostic lists

_CODES, _TREE, _RESOURCE = 0, 1, 2
_Node = dict[str, tuple[int, Any]]


class _Codes:
    """The allowed codes of one ValueSet and how to describe them."""

    __slots__ = ("codes", "name", "sorted")

    def __init__(self, name: str, codes: list[str]) -> None:
        self.name, self.sorted, self.codes = name, codes, frozenset(codes)

    def describe(self) -> str:
        shown = " | ".join(self.sorted[:_SHOWN])
        more = f" | ... ({len(self.sorted)} codes)" if len(self.sorted) > _SHOWN else ""
        return f"{VALUE_SET_BASE}{self.name} ({shown}{more})"


def _compile(document: dict[str, Any]) -> dict[str, _Node]:
    """One tree per resource or data type, linked to the data types' trees."""
    value_sets = {name: _Codes(name, codes) for name, codes in document["valueSets"].items()}
    tables: dict[str, dict[str, dict[str, str]]] = document["types"]
    roots: dict[str, _Node] = {name: {} for name in tables}
    extension = roots.get("Extension")

    def node_at(root: _Node, parts: list[str]) -> _Node:
        node = root
        for part in parts:
            entry = node.get(part)
            if entry is None:
                child: _Node = {}
                if extension is not None:
                    child["extension"] = child["modifierExtension"] = (_TREE, extension)
                entry = node[part] = (_TREE, child)
            node = entry[1]
        return node

    for name, table in tables.items():
        root = roots[name]
        if extension is not None:
            root["extension"] = root["modifierExtension"] = (_TREE, extension)
        for path, value_set in table["codes"].items():
            *parents, leaf = path.split(".")
            node_at(root, parents)[leaf] = (_CODES, value_sets[value_set])
        for path, data_type in table["types"].items():
            *parents, leaf = path.split(".")
            entry = (_RESOURCE, None) if data_type == "Resource" else (_TREE, roots[data_type])
            node_at(root, parents)[leaf] = entry
        for path, target in table["refs"].items():
            *parents, leaf = path.split(".")
            target_parts = target.split(".")
            if _has(root, target_parts):
                node_at(root, parents)[leaf] = (_TREE, node_at(root, target_parts))
    return roots


def _has(root: _Node, parts: list[str]) -> bool:
    node: _Node | None = root
    for part in parts:
        entry = node.get(part) if node is not None else None
        if entry is None or entry[0] != _TREE:
            return False
        node = entry[1]
    return True


@lru_cache(maxsize=1)
def _roots() -> dict[str, _Node]:
    with DATA_FILE.open(encoding="utf-8") as f:
        return _compile(json.load(f))


@lru_cache(maxsize=1)
def _primitive_element() -> _Node:
    """The tree of a primitive's element (``_gender``): its extensions."""
    extension = _roots().get("Extension")
    return {"extension": (_TREE, extension)} if extension is not None else {}


def check(resource: dict[str, Any], resource_type: str | None = None) -> list[Issue]:
    """One code-invalid issue per code that its required R4 binding does not allow.

    resource_type defaults to the resource's resourceType; a type without checks gives [].
    Values that are not strings are left to the structural check. Raises nothing.
    """
    resource_type = resource_type or resource.get("resourceType")
    root = _roots().get(resource_type) if isinstance(resource_type, str) else None
    if root is None:
        return []
    issues: list[Issue] = []
    _walk(root, resource, resource_type, issues)
    return issues


# Where the walk is: the type's name, or (parent, property name, list index or None). It is
# spelled out as a FHIRPath only for an issue, which keeps the walk of valid content cheap.
_Path = Any


def _fhirpath(path: _Path) -> str:
    if isinstance(path, str):
        return path
    parent, key, index = path
    return f"{_fhirpath(parent)}.{key}" + ("" if index is None else f"[{index}]")


def _invalid(path: _Path, value: str, allowed: _Codes) -> Issue:
    where = _fhirpath(path)
    return Issue("error", "code-invalid",
                 f"{where}: '{value}' is not in the required ValueSet {allowed.describe()}", (where,))


def _walk(node: _Node, data: dict[str, Any], path: _Path, issues: list[Issue]) -> None:
    for key, value in data.items():
        entry = node.get(key)
        if entry is None:
            if key[:1] != "_" or value is None:
                continue
            entry = (_TREE, _primitive_element())
        payload: Any
        kind, payload = entry
        if kind == _CODES:
            if type(value) is str:
                if value not in payload.codes:
                    issues.append(_invalid((path, key, None), value, payload))
            elif type(value) is list:
                for i, item in enumerate(value):
                    if type(item) is str and item not in payload.codes:
                        issues.append(_invalid((path, key, i), item, payload))
        elif type(value) is dict:
            _descend(kind, payload, value, (path, key, None), issues)
        elif type(value) is list:
            for i, item in enumerate(value):
                if type(item) is dict:
                    _descend(kind, payload, item, (path, key, i), issues)


def _descend(kind: int, payload: Any, value: dict[str, Any], path: _Path, issues: list[Issue]) -> None:
    if kind == _TREE:
        _walk(payload, value, path, issues)
        return
    nested = value.get("resourceType")                 # _RESOURCE: checked with its own type
    root = _roots().get(nested) if isinstance(nested, str) else None
    if root is not None:
        _walk(root, value, path, issues)
