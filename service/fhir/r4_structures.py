"""Structural checks of the R4 resource types that fhir.resources' R4B models lack or redefine
(MedicinalProduct*, Substance* details, the evidence syntheses, Evidence, EvidenceVariable),
against their R4 StructureDefinitions (https://hl7.org/fhir/R4/structuredefinition.html).

The element tables come from the vendored r4-structures.json (built by
scripts/build_r4_structures.py). A check walks the resource's JSON keys once:

- every key must be an element of its parent (a choice element 'value[x]' as 'valueQuantity'
  with one of its types), or '_' + a primitive element (its id and extensions);
- a repeating element (max '*') must be an array, a single one must not be;
- required elements (min 1) must be present;
- a primitive must have its JSON kind (string, number, integer, boolean); an element of a
  complex data type (CodeableConcept, Reference...) is validated by that type's R4B model,
  which R4 shares; backbone elements and contentReferences are walked the same way; a
  nested resource (contained) is checked as a resource of its own type by the caller's
  validator.

    structure_issues(resource, validate_nested) -> [Issue]     (no raise)
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class

from service.fhir.errors import FhirError, Issue

DATA_FILE = Path(__file__).with_name("r4-structures.json")
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
_NUMBERS = frozenset({"decimal"})
_BOOLEANS = frozenset({"boolean"})
_INLINE = frozenset({"BackboneElement", "Element"})

# An element: (min, max, types); a type table: path -> element.
Element = tuple[int, str, list[str]]


@lru_cache(maxsize=1)
def _tables() -> dict[str, dict[str, Element]]:
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return {t: {p: (e[0], e[1], e[2]) for p, e in table.items()} for t, table in raw.items()}


@lru_cache(maxsize=None)
def _children(type_name: str, path: str) -> dict[str, tuple[str, Element]]:
    """The child elements of path: JSON name (choice names without [x]) -> (path, element)."""
    table = _tables()[type_name]
    prefix = path + "."
    return {p[len(prefix):].removesuffix("[x]"): (p, e) for p, e in table.items()
            if p.startswith(prefix) and "." not in p[len(prefix):]}


def checked_types() -> frozenset[str]:
    """The resource types this module checks."""
    return frozenset(t for t in _tables() if t[:1].isupper() and not _is_datatype(t))


def _is_datatype(name: str) -> bool:
    return name == "SubstanceAmount"


@lru_cache(maxsize=None)
def _model(type_code: str) -> Any:
    try:
        return get_fhir_model_class(type_code)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def structure_issues(resource: dict[str, Any], validate_nested: Callable[[dict[str, Any]], None]) -> list[Issue]:
    """Every structural problem of resource (one of checked_types()), each with its FHIRPath.
    validate_nested checks a nested resource (contained...) and raises a FhirError."""
    res_type = resource["resourceType"]
    issues: list[Issue] = []
    _walk(res_type, res_type, resource, res_type, issues, validate_nested, root=True)
    return issues


def _walk(type_name: str, path: str, obj: Any, where: str, issues: list[Issue],
          nested: Callable[[dict[str, Any]], None], root: bool = False) -> None:
    if not isinstance(obj, dict):
        issues.append(Issue("error", "structure", f"{where}: must be a JSON object", (where,)))
        return
    children = _children(type_name, path)
    for key, value in obj.items():
        if root and key == "resourceType":
            continue
        at = f"{where}.{key}"
        name, choice_type = key, None
        if key.startswith("_"):
            found = children.get(key[1:])
            if found is None or not any(t[:1].islower() for t in found[1][2]):
                issues.append(Issue("error", "structure", f"{at}: unknown element", (at,)))
            continue
        if key not in children:
            name = next((n for n, (p, _) in children.items() if p.endswith("[x]") and key.startswith(n)), "")
            if name:
                choice_type = key[len(name):]
                types = children[name][1][2]
                choice_type = next((t for t in types if t[:1].upper() + t[1:] == choice_type), None)
            if not name or choice_type is None:
                issues.append(Issue("error", "structure", f"{at}: unknown element", (at,)))
                continue
        child_path, (_, max_, types) = children[name]
        items = value if isinstance(value, list) else [value]
        if max_ == "*" and not isinstance(value, list):
            issues.append(Issue("error", "structure", f"{at}: must be an array", (at,)))
            continue
        if max_ != "*" and isinstance(value, list):
            issues.append(Issue("error", "structure", f"{at}: must not be an array", (at,)))
            continue
        for i, item in enumerate(items):
            item_at = f"{at}[{i}]" if isinstance(value, list) else at
            _value(type_name, child_path, choice_type or types[0] if types else "", item, item_at, issues, nested)
    for name, (child_path, (min_, _, types)) in children.items():
        if min_ >= 1 and not any(k == name or (child_path.endswith("[x]") and k.startswith(name)) for k in obj):
            issues.append(Issue("error", "required", f"{where}.{name}: is required", (f"{where}.{name}",)))


def _value(type_name: str, path: str, type_code: str, item: Any, at: str, issues: list[Issue],
           nested: Callable[[dict[str, Any]], None]) -> None:
    if type_code.startswith("#"):                      # contentReference: the same structure again
        _walk(type_name, type_code[1:], item, at, issues, nested)
    elif type_code in _INLINE:
        _walk(type_name, path, item, at, issues, nested)
    elif type_code[:1].islower():
        ok = (isinstance(item, bool) if type_code in _BOOLEANS else
              isinstance(item, int) and not isinstance(item, bool) if type_code in _INTEGERS else
              isinstance(item, (int, float)) and not isinstance(item, bool) if type_code in _NUMBERS else
              isinstance(item, str))
        if not ok:
            issues.append(Issue("error", "value", f"{at}: is not a valid {type_code}", (at,)))
    elif type_code == "Resource":
        try:
            if not isinstance(item, dict):
                raise FhirError("must be a resource")
            nested(item)
        except FhirError as exc:
            issues.append(Issue("error", "structure", f"{at}: {exc.diagnostics}", (at,)))
    elif _is_datatype(type_code):
        _walk(type_code, type_code, item, at, issues, nested)
    else:
        model = _model(type_code)
        if model is None:
            issues.append(Issue("error", "not-supported", f"{at}: type {type_code} cannot be checked", (at,)))
            return
        try:
            model.model_validate(item)
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
                issues.append(Issue("error", "structure" if error["type"] == "extra_forbidden" else "value",
                                    f"{at}{loc}: {error['msg']}".split("\n")[0], (f"{at}{loc}",)))
