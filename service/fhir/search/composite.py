"""Composite search parameters (https://hl7.org/fhir/R4/search.html#composite): which ones are
supported, and the index rows of a resource for them. Pure: no database, no Flask.

A composite parameter pairs components of one element: ``Observation?code-value-quantity=
http://loinc.org|72514-3$gt7`` matches an Observation whose code is that LOINC code and whose
value (of the same Observation) is over 7; ``component-code-value-quantity`` pairs the code and
value of one component. Supported: two components, the first a token (every R4 composite but
MolecularSequence's three-component coordinates), the second a token, quantity, number, date,
string or reference. Each element the parameter's expression selects gives one row per pair
of its component values (search_composite).

The elements are selected by the parameter's expression compiled into a plain accessor
(service.fhir.search.accessors: every R4 composite expression is a path, 'Observation' or
'Observation.component'), or by fhirpathpy for any other; ``CompositeExtractor(registry,
compiled_accessors=False)`` uses fhirpathpy for all (what the equivalence test,
tests/unit/search/test_search_accessors.py, compares against on every R4 example).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import fhirpathpy
from fhirpathpy.models import models as _fhirpath_models

from service.fhir.search.accessors import compile_path
from service.fhir.search.definitions import ALL, BOUND, SearchParameterRegistry, TypeParam, is_bound, split_union

SECOND_KINDS = frozenset({"token", "quantity", "number", "date", "string", "reference"})
_MODEL = _fhirpath_models["r4"]
_OPTIONS = {"returnRawData": True}
_COMPONENT = re.compile(r"^(\w+)(?:\.as\((\w+)\))?$")


class CompositeRow(NamedTuple):
    """One element's pair of component values: the token (system, code) and the second value
    in the columns of its kind (the others None)."""

    param: str
    system: str | None
    code: str | None
    v_system: str | None = None      # token system; quantity system
    v_code: str | None = None        # token code; quantity code
    v_unit: str | None = None        # quantity unit
    v_value: float | None = None     # quantity, number
    v_norm: str | None = None        # string, normalised
    v_low: datetime | None = None    # date range [low, high)
    v_high: datetime | None = None
    v_target_type: str | None = None  # reference
    v_target_id: str | None = None


def components(registry: SearchParameterRegistry, param: TypeParam) -> tuple[tuple[str, str], ...] | None:
    """((type, expression), ...) of a supported composite parameter's components, else None."""
    if param.type != "composite" or len(param.definition.components) != 2:
        return None
    out = []
    for component in param.definition.components:
        definition = registry.by_url(component.definition)
        if definition is None or not all(_COMPONENT.match(p) for p in split_union(component.expression)):
            return None
        out.append((definition.type, component.expression))
    if out[0][0] != "token" or out[1][0] not in SECOND_KINDS:
        return None
    return tuple(out)


@lru_cache(maxsize=None)
def _component_parts(expression: str) -> tuple[tuple[str, str | None], ...]:
    """(element name, 'as' type or None) of each part of a component expression (parsed once)."""
    matches = (_COMPONENT.match(part) for part in split_union(expression))
    return tuple((m.group(1), m.group(2)) for m in matches if m is not None)


def _values(element: dict[str, Any], expression: str) -> Iterator[tuple[str | None, Any]]:
    """(FHIR type if known, value) of a component expression on an element: 'code',
    'value.as(Quantity)', 'value.as(DateTime) | value.as(Period)', 'value' (any value[x])."""
    for name, as_type in _component_parts(expression):
        found: list[tuple[str | None, Any]]
        if as_type:
            found = [(as_type, element.get(name + as_type[0].upper() + as_type[1:]))]
        elif name in element:
            found = [(None, element[name])]
        else:
            found = [(key[len(name):], item) for key, item in element.items()
                     if key.startswith(name) and key[len(name):][:1].isupper()]
        for fhir_type, value in found:
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    yield ("string" if fhir_type in ("String", "string") else fhir_type), item


Indexer = Callable[[str, str, "str | None", Any], set[Any]]


class CompositeExtractor:
    """The composite index rows of resources (compiled expressions cached per type)."""

    def __init__(self, registry: SearchParameterRegistry, *, compiled_accessors: bool = True) -> None:
        self.registry = registry
        self.compiled_accessors = compiled_accessors
        self._compiled: dict[str, tuple[tuple[TypeParam, tuple[tuple[str, str], ...], Any], ...]] = {}
        self._bound: dict[tuple[str, str], bool] = {}   # (code, type) -> may index what the server assigns

    def _for(self, res_type: str) -> tuple[tuple[TypeParam, tuple[tuple[str, str], ...], Any], ...]:
        done = self._compiled.get(res_type)
        if done is None:
            items = []
            for param in self.registry.for_type(res_type).values():
                comps = components(self.registry, param)
                if comps is None:
                    continue
                self._bound[param.code, res_type] = any(
                    is_bound(kind, expression) for kind, expression in (*comps, *(("composite", p.expression)
                                                                                  for p in param.parts)))
                for part in param.parts:
                    accessor = compile_path(part.expression) if self.compiled_accessors else None
                    if accessor is not None:
                        items.append((param, comps, _elements_of(accessor)))
                        continue
                    try:
                        items.append((param, comps, fhirpathpy.compile(part.expression, _MODEL, _OPTIONS)))
                    except Exception:  # noqa: BLE001,S112 - a definition fhirpathpy cannot parse
                        continue
            done = self._compiled[res_type] = tuple(items)
        return done

    def extract(self, resource: dict[str, Any], index: Indexer, which: str = ALL) -> set[CompositeRow]:
        """The rows of every supported composite parameter of resource. index(kind, param,
        fhir_type, value) gives the rows a simple parameter of that kind would store. which:
        ALL, or only the BOUND or UNBOUND parameters (definitions.is_bound)."""
        out: set[CompositeRow] = set()
        for param, comps, fn in self._for(resource["resourceType"]):
            if which != ALL and self._bound[param.code, resource["resourceType"]] != (which == BOUND):
                continue
            try:
                elements = fn(resource, {})
            except Exception:  # noqa: BLE001,S112 - fhirpathpy raises bare Exceptions
                continue
            (_, first_expr), (kind, second_expr) = comps
            for node in elements:
                element = getattr(node, "data", node)
                if not isinstance(element, dict):
                    continue
                firsts = [r for t, v in _values(element, first_expr) for r in index("token", param.code, t, v)
                          if r.code is not None or r.system is not None]
                seconds = [r for t, v in _values(element, second_expr) for r in index(kind, param.code, t, v)]
                for f in firsts:
                    for s in seconds:
                        out.add(CompositeRow(param.code, f.system, f.code, **_second(kind, s)))
        return out


def _elements_of(accessor: Callable[[Any], list[tuple[Any, Any]]]) -> Callable[[Any, Any], list[Any]]:
    """An accessor called as a compiled fhirpathpy expression is (resource, context) -> values."""
    def elements(resource: Any, _context: Any) -> list[Any]:
        return [data for _, data in accessor(resource)]
    return elements


def _second(kind: str, row: Any) -> dict[str, Any]:
    if kind == "token":
        return {"v_system": row.system, "v_code": row.code}
    if kind == "quantity":
        return {"v_value": row.value, "v_system": row.system, "v_code": row.code, "v_unit": row.unit}
    if kind == "number":
        return {"v_value": row.value}
    if kind == "date":
        return {"v_low": row.low, "v_high": row.high}
    if kind == "string":
        return {"v_norm": row.norm}
    return {"v_target_type": row.target_type, "v_target_id": row.target_id}
