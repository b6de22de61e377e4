"""Search expressions compiled into plain Python functions over the resource's JSON.

Most R4 search expressions are paths: ``Patient.name.given``, choice elements narrowed by
``ofType(T)`` (``Observation.value.ofType(Quantity)``), ``.where(system='phone')`` and an
index (``Bundle.entry[0].resource``). ``compile_path(expression)`` turns such an expression
into a function ``resource -> [(type, value), ...]`` that gives exactly what fhirpathpy
(2.x, with the R4 model and ``returnRawData``) gives for it: the same values in the same
order, each with the type fhirpathpy names for it (``ResourceNode.path``: 'CodeableConcept',
'string', 'Observation.component'...). It returns None for any other expression; those stay
with fhirpathpy (service.fhir.search.extract does the choosing).

The rules followed are fhirpathpy's member access (engine/evaluators
create_reduce_member_invocation) over its R4 model (fhirpathpy.models 'r4'):
  - a step ``x`` on an element of type path P reads JSON key ``x`` (and ``_x``, the
    primitive's extension part, as a value of its own); P.x is mapped through the model's
    pathsDefinedElsewhere, and a choice element (choiceTypePaths) reads the first of
    ``x<Type>`` / ``_x<Type>`` present, in the model's order; the child's type is P.x[Type]
    mapped through path2Type; a JSON object with a resourceType is typed by it;
  - a JSON array gives one value per item, nulls included; a null or [] value gives none;
  - ``ofType(T)`` keeps values whose type is named T: the exact name, as fhirpathpy
    compares it while no ``is``/``as`` has set its global TypeInfo.model (after one has,
    fhirpathpy also lets subtypes through, so ConceptMap's source-uri would take
    sourceCanonical; search wants the exact choice);
  - ``where(k='v')`` keeps values whose ``k`` is exactly one value equal to 'v';
  - ``[n]`` keeps the n-th value of the collection;
  - finally, values that are JSON objects with the single key 'extension' are dropped.
The test tests/integration/test_search_accessors.py checks this against fhirpathpy on every
resource of the R4 examples package, for every parameter. Pure: no database, no Flask.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from fhirpathpy.models import models as _fhirpath_models

Node = tuple[Any, Any]   # (fhirpathpy's type path or None, the JSON value)
Accessor = Callable[[Mapping[str, Any]], list[Node]]
Step = Callable[[list[Node]], list[Node]]

_MODEL = _fhirpath_models["r4"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_PATH_TO_TYPE: dict[str, str] = _MODEL["path2Type"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = re.compile(
    rf"(?P<member>{_NAME})(?:\[(?P<index>\d+)\])?"
    rf"|ofType\((?P<of_type>{_NAME})\)"
    rf"|where\((?P<key>{_NAME})\s*=\s*'(?P<literal>[^'\\]*)'\)")


def compile_path(expression: str) -> Accessor | None:
    """The accessor of a path expression (see the module docstring), or None if the
    expression is anything else (functions other than ofType/where, operators, literals...)."""
    expression = _unwrap_head(expression.strip())
    segments = _split(expression)
    if not segments:
        return None
    steps: list[Step] = []
    head = _SEGMENT.fullmatch(segments[0])
    if head is None or head.group("member") is None:
        return None
    name = head.group("member")
    root: Callable[[Mapping[str, Any]], list[Node]]
    if name[0].isupper():                         # 'Patient.x': the resource, if it is one
        root = _type_root(name)
    else:                                         # 'name': a member of the resource
        root = _resource_root
        steps.append(_member(name))
    if head.group("index") is not None:
        steps.append(_index(int(head.group("index"))))
    for segment in segments[1:]:
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            return None
        if match.group("member") == "length":      # fhirpathpy reads a string's length
            return None
        if match.group("member") is not None:
            steps.append(_member(match.group("member")))
            if match.group("index") is not None:
                steps.append(_index(int(match.group("index"))))
        elif match.group("of_type") is not None:
            steps.append(_of_type(match.group("of_type")))
        else:
            steps.append(_where(match.group("key"), match.group("literal")))
    return _chain(root, tuple(steps))


def root_keys(res_type: str, root: str) -> frozenset[str]:
    """The JSON keys of res_type that its element root is read from: root itself, or for a
    choice element root + each of its types ('value' -> 'valueQuantity', ...). A path that
    starts at root gives values only if one of them is present (or its '_' extension part,
    which gives no index row). Empty if root is ''."""
    if not root:
        return frozenset()
    path = _ELSEWHERE.get(f"{res_type}.{root}", f"{res_type}.{root}")
    return frozenset([root, *(root + choice for choice in _CHOICES.get(path) or ())])


def _unwrap_head(expression: str) -> str:
    """'(A.b.ofType(C)).d' -> 'A.b.ofType(C).d' (the same path without its parentheses)."""
    if not expression.startswith("("):
        return expression
    depth = 0
    for i, ch in enumerate(expression):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            inner, rest = expression[1:i].strip(), expression[i + 1:]
            return inner + rest if rest == "" or rest.startswith(".") else expression
    return expression


def _split(expression: str) -> list[str]:
    """Split on the dots outside parentheses and quotes; [] if the text is not a path."""
    out, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return []
        elif ch == "." and depth == 0:
            out.append(expression[start:i])
            start = i + 1
        elif ch.isspace() and depth == 0:
            return []                              # an operator ('and', 'is', '|'...)
    out.append(expression[start:])
    return out if depth == 0 and not quote and all(out) else []


def _chain(root: Callable[[Mapping[str, Any]], list[Node]], steps: tuple[Step, ...]) -> Accessor:
    def access(resource: Mapping[str, Any]) -> list[Node]:
        nodes = root(resource)
        for step in steps:
            if not nodes:
                return nodes
            nodes = step(nodes)
        return [n for n in nodes if not (isinstance(n[1], dict) and list(n[1]) == ["extension"])]
    return access


def _type_root(res_type: str) -> Callable[[Mapping[str, Any]], list[Node]]:
    def root(resource: Mapping[str, Any]) -> list[Node]:
        return [(res_type, resource)] if resource.get("resourceType") == res_type else []
    return root


def _resource_root(resource: Mapping[str, Any]) -> list[Node]:
    return [(resource.get("resourceType"), resource)]


def _node(data: Any, path: Any) -> Node:
    if isinstance(data, Mapping) and "resourceType" in data:
        return (data["resourceType"], data)
    return (path, data)


def _add(out: list[Node], value: Any, path: str) -> None:
    if value is None:
        return
    if isinstance(value, list):
        out.extend(_node(item, path) for item in value)
    else:
        out.append(_node(value, path))


# child element facts per (parent type path, key): (plain type path, choice types or None)
_CHILDREN: dict[tuple[Any, str], tuple[str, list[str] | None]] = {}


def _child(parent: Any, key: str) -> tuple[str, list[str] | None]:
    found = _CHILDREN.get((parent, key))
    if found is None:
        path = f"{parent}.{key}" if parent else f"_.{key}"
        path = _ELSEWHERE.get(path, path)
        found = _CHILDREN[(parent, key)] = (path, _CHOICES.get(path))
    return found


def _member(key: str) -> Step:
    underscored = "_" + key
    children: dict[Any, tuple[str, list[str] | None]] = {}   # parent type path -> _child(...)

    def step(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for parent, data in nodes:
            if not isinstance(data, Mapping):
                continue
            found = children.get(parent)
            if found is None:
                found = children[parent] = _child(parent, key)
            path, choices = found
            if choices:
                value = extension = None
                for choice in choices:
                    value, extension = data.get(key + choice), data.get(f"_{key}{choice}")
                    if value is not None or extension is not None:
                        path += choice
                        break
            else:
                value, extension = data.get(key), data.get(underscored)
                if value is None and extension is None:
                    continue
                if key == "extension":
                    path = "Extension"
            path = _PATH_TO_TYPE.get(path, path)
            if value is not None and value != []:
                _add(out, value, path)
            if extension is not None and extension != []:
                _add(out, extension, path)
        return out
    return step


def _type_name(type_path: Any, data: Any) -> str | None:
    """The type name fhirpathpy's ofType compares (TypeInfo.from_value without a model)."""
    if not isinstance(type_path, str):
        return None
    if type_path.startswith("System."):
        return type_path[len("System."):]
    if "." not in type_path:
        return type_path
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, int):
        return "integer"
    if isinstance(data, (float, Decimal)):
        return "decimal"
    if isinstance(data, str):
        return "string"
    if isinstance(data, Mapping):
        return "object"
    return type(data).__name__


def _of_type(wanted: str) -> Step:
    def step(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if _type_name(n[0], n[1]) == wanted]
    return step


def _where(key: str, literal: str) -> Step:
    member = _member(key)

    def step(nodes: list[Node]) -> list[Node]:
        out = []
        for node in nodes:
            found = member([node])
            if len(found) == 1 and found[0][1] == literal:
                out.append(node)
        return out
    return step


def _index(n: int) -> Step:
    def step(nodes: list[Node]) -> list[Node]:
        return [nodes[n]] if len(nodes) > n else []
    return step
