"""The R4 search parameters, as data: which parameters each resource type has, their types,
FHIRPath expressions and targets, and the Patient compartment.

The definitions come from the vendored search-parameters.json (built by
scripts/build_search_parameters.py from the official R4 SearchParameter resources).
A definition usually covers several base types with one union expression
(``Condition.subject.where(resolve() is Patient) | Observation.subject...``); ``TypeParam``
is one parameter as it applies to one type, with only that type's parts of the expression and
with ``resolve() is X`` filters turned into reference-type filters (fhirpathpy has no resolve()).
See https://hl7.org/fhir/R4/searchparameter.html.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("search-parameters.json")

# Parameters whose values come from the resources table itself, not from index rows.
TABLE_PARAMS = frozenset({"_id", "_lastUpdated"})

# Which parameters an extraction runs (service.fhir.search.extract): every one, those whose
# values may depend on what the server assigns when it writes (ids, rewritten references,
# meta.versionId/lastUpdated), or the others.
ALL, BOUND, UNBOUND = "all", "bound", "unbound"
_ASSIGNED = re.compile(r"\bid\b|reference|resolve\(|versionId|lastUpdated")


def is_bound(kind: str, expression: str) -> bool:
    """Whether a parameter (or composite component) of this type and expression may index
    values the server assigns at write time: reference parameters and expressions that read an
    id, a reference, meta.versionId or meta.lastUpdated (service.fhir.search.extract's module
    docstring). Errs towards True."""
    return kind == "reference" or _ASSIGNED.search(expression) is not None

_GENERIC_BASES = ("Resource", "DomainResource")
_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")
_HEAD = re.compile(r"^([A-Z][A-Za-z]*)\b")
_ROOT = re.compile(r"^\(*[A-Z][A-Za-z]*\.(\w+)")
# R4's expressions use 'x as T' and 'x.as(T)' on collections; fhirpathpy wants a singleton
# there, and ofType(T) means the same for search.
_AS_OPERATOR = re.compile(r"\s+as\s+(\w+)")
_AS_FUNCTION = re.compile(r"\.as\((\w+)\)")


@dataclass(frozen=True)
class PathPart:
    """One part of a parameter's expression for one type.

    expression: FHIRPath to evaluate on the resource (resolve() filters removed).
    ref_types: when the definition said ``.where(resolve() is X)``, the allowed target types.
    root: the first element the path reads ('' if unknown), to skip absent elements cheaply.
    """

    expression: str
    ref_types: frozenset[str] = frozenset()
    root: str = ""


@dataclass(frozen=True)
class Component:
    """One component of a composite parameter: the parameter it uses and its sub-path."""

    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParamDef:
    """One official SearchParameter (possibly covering many base types)."""

    url: str
    code: str
    type: str
    base: tuple[str, ...]
    expression: str
    target: tuple[str, ...] = ()
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    multiple_or: bool = True
    multiple_and: bool = True
    components: tuple[Component, ...] = ()
    doc: Any = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchParamDef:
        return cls(
            url=d["url"], code=d["code"], type=d["type"], base=tuple(d["base"]),
            expression=d["expression"], target=tuple(d.get("target", ())),
            modifier=tuple(d.get("modifier", ())), comparator=tuple(d.get("comparator", ())),
            multiple_or=d.get("multipleOr", True), multiple_and=d.get("multipleAnd", True),
            components=tuple(Component(c["definition"], c["expression"]) for c in d.get("component", ())),
            doc=d.get("doc", ""),
        )

    def documentation(self, res_type: str) -> str:
        """The description of this parameter for one type."""
        if isinstance(self.doc, dict):
            return self.doc.get(res_type) or next(iter(self.doc.values()), "")
        return self.doc


@dataclass(frozen=True)
class TypeParam:
    """A search parameter as it applies to one resource type."""

    res_type: str
    definition: SearchParamDef
    parts: tuple[PathPart, ...]
    targets: tuple[str, ...] = ()

    @property
    def code(self) -> str:
        return self.definition.code

    @property
    def type(self) -> str:
        return self.definition.type

    @property
    def url(self) -> str:
        return self.definition.url


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on its top-level ``|`` operators."""
    parts, depth, quote, start = [], 0, False, 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quote = not quote
        elif quote:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _unwrap(part: str) -> str:
    """Drop parentheses that wrap a whole expression: '(A.b as C)' -> 'A.b as C'."""
    while part.startswith("(") and part.endswith(")"):
        depth = 0
        for i, ch in enumerate(part):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(part) - 1:
                return part
        part = part[1:-1].strip()
    return part


def parts_for_type(expression: str, res_type: str) -> tuple[PathPart, ...]:
    """The parts of a (union) expression that apply to res_type, ready for fhirpathpy."""
    out = []
    for raw in split_union(expression):
        part = _unwrap(raw)
        head = _HEAD.match(part)
        if head:
            if head.group(1) in _GENERIC_BASES:
                part = res_type + part[len(head.group(1)):]
            elif head.group(1) != res_type:
                continue
        ref_types = frozenset(_RESOLVE_IS.findall(part))
        part = _RESOLVE_IS.sub("", part)
        part = _AS_FUNCTION.sub(r".ofType(\1)", _AS_OPERATOR.sub(r".ofType(\1)", part))
        root = _ROOT.match(part)
        out.append(PathPart(part, ref_types, root.group(1) if root else ""))
    return tuple(out)


@dataclass
class SearchParameterRegistry:
    """All search parameters, looked up by (type, code). Read-only after construction."""

    definitions: tuple[SearchParamDef, ...]
    compartments: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_type: dict[str, dict[str, SearchParamDef]] = {}
        self._by_url = {d.url: d for d in self.definitions}
        for d in self.definitions:
            for base in d.base:
                self._by_type.setdefault(base, {}).setdefault(d.code, d)
        self._cache: dict[str, dict[str, TypeParam]] = {}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> SearchParameterRegistry:
        comps = {k: {t: tuple(p) for t, p in v.items()} for k, v in doc.get("compartments", {}).items()}
        return cls(tuple(SearchParamDef.from_json(p) for p in doc["params"]), comps)

    def with_search_parameters(self, resources: Iterable[Mapping[str, Any]]) -> SearchParameterRegistry:
        """A registry that adds SearchParameter resources (an implementation guide's) to these
        definitions; one with the same type and code replaces the official one."""
        extra = tuple(SearchParamDef.from_json({**sp, "doc": sp.get("description", "")}) for sp in resources)
        return SearchParameterRegistry(extra + self.definitions, self.compartments)

    @classmethod
    def load(cls, path: Path | str | None = None) -> SearchParameterRegistry:
        """The registry of the vendored definitions (shared, read-only, loaded once)."""
        return _load(str(path or DATA_FILE))

    def for_type(self, res_type: str) -> dict[str, TypeParam]:
        """Every parameter of res_type (its own and the Resource/DomainResource ones), by code."""
        cached = self._cache.get(res_type)
        if cached is not None:
            return cached
        defs: dict[str, SearchParamDef] = {}
        for base in (*_GENERIC_BASES, res_type):
            defs.update(self._by_type.get(base, {}))
        out = {}
        for code, d in defs.items():
            parts = parts_for_type(d.expression, res_type)
            if not parts and d.type != "composite":
                continue
            targets = d.target
            narrowed = frozenset().union(*(p.ref_types for p in parts)) if parts else frozenset()
            if narrowed and all(p.ref_types for p in parts):
                targets = tuple(t for t in d.target if t in narrowed) or tuple(sorted(narrowed))
            out[code] = TypeParam(res_type, d, parts, targets)
        self._cache[res_type] = out
        return out

    def get(self, res_type: str, code: str) -> TypeParam | None:
        return self.for_type(res_type).get(code)

    def by_url(self, url: str) -> SearchParamDef | None:
        return self._by_url.get(url)

    def compartment_members(self, compartment: str) -> Mapping[str, tuple[str, ...]]:
        """Every type that can be in the compartment, with its linking parameters."""
        return self.compartments.get(compartment, {})

    def capability(self, res_type: str) -> list[dict[str, str]]:
        """CapabilityStatement.rest.resource.searchParam entries for res_type."""
        from service.fhir.search.composite import components   # it imports this module
        out = []
        for code, p in sorted(self.for_type(res_type).items()):
            if p.type in SUPPORTED_TYPES or components(self, p) is not None:
                out.append({"name": code, "definition": p.url, "type": p.type,
                            "documentation": p.definition.documentation(res_type)})
        return out


SUPPORTED_TYPES = frozenset({"token", "string", "reference", "date", "quantity", "uri", "number"})


@functools.lru_cache(maxsize=4)
def _load(path: str) -> SearchParameterRegistry:
    with open(path, encoding="utf-8") as f:
        return SearchParameterRegistry.from_document(json.load(f))

