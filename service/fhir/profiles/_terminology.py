"""Local ValueSet expansion over the CodeSystems and ValueSets of fhir_profiles/.

No terminology server exists, so every binding is checked against what the package holds:
- an include that lists concepts contributes exactly those codes;
- an include of a whole local CodeSystem contributes all its concepts;
- `is-a` / `descendent-of` / `is-not-a` filters on a local CodeSystem use its concept hierarchy;
- `is-a` / `descendent-of` filters on ATC (or another code system listed in PREFIX_HIERARCHIES)
  match by code prefix, because ATC codes spell their hierarchy (M05BA04 is-a M05BA);
- `include.valueSet` imports another local ValueSet (intersection, as the spec says).
Anything else (a whole external code system, an unknown filter) raises ConformanceError when the
package is loaded, so a bad ValueSet is found at start-up, not when a write is checked.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.fhir.canonical import ATC

from ._errors import ConformanceError, UnknownValueSet

# Code systems whose codes spell their hierarchy: a descendant starts with its ancestor's code.
PREFIX_HIERARCHIES = frozenset({ATC})

Code = tuple[str, str]  # (system, code)


def strip_version(canonical: str) -> str:
    """Return a canonical URL without its `|version` suffix."""
    return canonical.split("|", 1)[0]


@dataclass
class _CodeSystem:
    url: str
    codes: set[str] = field(default_factory=set)
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> _CodeSystem:
        cs = cls(strip_version(resource["url"]))

        def walk(concepts: Iterable[dict[str, Any]], parent: str | None) -> None:
            for concept in concepts:
                cs.codes.add(concept["code"])
                if parent is not None:
                    cs.children.setdefault(parent, []).append(concept["code"])
                walk(concept.get("concept", ()), concept["code"])

        walk(resource.get("concept", ()), None)
        return cs

    def descendants(self, code: str) -> set[str]:
        out: set[str] = set()
        stack = list(self.children.get(code, ()))
        while stack:
            child = stack.pop()
            if child not in out:
                out.add(child)
                stack.extend(self.children.get(child, ()))
        return out


@dataclass(frozen=True)
class _Filter:
    op: str
    value: str


@dataclass
class _Include:
    """One compose.include or compose.exclude, compiled."""

    system: str | None
    codes: frozenset[str] | None  # listed concepts, or None
    filters: tuple[_Filter, ...]
    value_sets: tuple[str, ...]


class Terminology:
    """The local CodeSystems and ValueSets, with expansion and membership tests."""

    def __init__(self, code_systems: Iterable[dict[str, Any]],
                 value_sets: Iterable[dict[str, Any]]) -> None:
        """Compile the resources; raises ConformanceError for a ValueSet it cannot expand."""
        self._systems = {cs.url: cs for cs in map(_CodeSystem.from_resource, code_systems)}
        self._value_sets: dict[str, tuple[list[_Include], list[_Include]]] = {}
        for vs in value_sets:
            compose = vs.get("compose") or {}
            url = strip_version(vs["url"])
            self._value_sets[url] = ([self._compile(url, i) for i in compose.get("include", ())],
                                     [self._compile(url, i) for i in compose.get("exclude", ())])
        self._expansions: dict[str, frozenset[Code]] = {}
        self._known_codes = {(inc.system, c) for incs, excs in self._value_sets.values()
                             for inc in incs + excs if inc.system and inc.codes for c in inc.codes}
        for url in self._value_sets:  # fail at load time on cycles or unknown imports
            self.expand(url)

    def _compile(self, vs_url: str, inc: dict[str, Any]) -> _Include:
        system = inc.get("system")
        codes = frozenset(c["code"] for c in inc["concept"]) if inc.get("concept") else None
        filters = tuple(_Filter(f["op"], f["value"]) for f in inc.get("filter", ()))
        for f in filters:
            local = system in self._systems
            if not ((local and f.op in ("is-a", "descendent-of", "is-not-a"))
                    or (system in PREFIX_HIERARCHIES and f.op in ("is-a", "descendent-of"))):
                raise ConformanceError(f"ValueSet {vs_url}: filter {f.op} on {system} "
                                       "cannot be evaluated locally")
        if system and codes is None and not filters and system not in self._systems:
            raise ConformanceError(f"ValueSet {vs_url}: includes all of {system}, "
                                   "which is not a local CodeSystem")
        return _Include(system, codes, filters, tuple(map(strip_version, inc.get("valueSet", ()))))

    def knows(self, valueset_url: str) -> bool:
        """True if the ValueSet is held locally."""
        return strip_version(valueset_url) in self._value_sets

    def expand(self, valueset_url: str) -> frozenset[Code]:
        """All (system, code) pairs of a local ValueSet.

        Prefix (ATC) filters contribute their root code and every code of that system listed in
        any local ValueSet that falls under it; contains() accepts any code under the root.
        Raises UnknownValueSet if the ValueSet is not local.
        """
        url = strip_version(valueset_url)
        if url in self._expansions:
            return self._expansions[url]
        if url not in self._value_sets:
            raise UnknownValueSet(url)
        self._expansions[url] = frozenset()  # an import cycle contributes nothing
        includes, excludes = self._value_sets[url]
        codes = set().union(*(self._expand_include(i) for i in includes))
        codes -= set().union(*(self._expand_include(e) for e in excludes))
        self._expansions[url] = frozenset(codes)
        return self._expansions[url]

    def _expand_include(self, inc: _Include) -> set[Code]:
        if inc.system is None:
            return set.intersection(*(set(self.expand(v)) for v in inc.value_sets))
        system = inc.system
        if inc.codes is not None:
            candidates = {(system, c) for c in inc.codes}
        elif system in self._systems:
            candidates = {(system, c) for c in self._systems[system].codes}
        else:  # prefix hierarchy: roots of is-a filters plus known codes under them
            candidates = {(system, f.value) for f in inc.filters if f.op == "is-a"}
            candidates |= {k for k in self._known_codes if k[0] == system}
        out = {k for k in candidates if self._passes_filters(inc, k[1])}
        for v in inc.value_sets:
            out &= self.expand(v)
        return out

    def _passes_filters(self, inc: _Include, code: str) -> bool:
        for f in inc.filters:
            if inc.system in self._systems:
                cs = self._systems[inc.system]
                below = cs.descendants(f.value)
                ok = {"is-a": code == f.value or code in below, "descendent-of": code in below,
                      "is-not-a": code != f.value and code not in below}[f.op]
            else:
                ok = code.startswith(f.value) and (f.op == "is-a" or code != f.value)
            if not ok:
                return False
        return True

    def _include_has(self, inc: _Include, system: str, code: str) -> bool:
        if inc.system is not None:
            if system != inc.system:
                return False
            if inc.codes is not None and code not in inc.codes:
                return False
            local = self._systems.get(system)
            if inc.codes is None and local is not None and code not in local.codes:
                return False
            if not self._passes_filters(inc, code):
                return False
        return all(self.contains(v, system, code) for v in inc.value_sets)

    def contains(self, valueset_url: str, system: str | None, code: str | None) -> bool:
        """True if (system, code) is in the ValueSet. Raises UnknownValueSet if not local."""
        url = strip_version(valueset_url)
        if url not in self._value_sets:
            raise UnknownValueSet(url)
        if not system or not code:
            return False
        includes, excludes = self._value_sets[url]
        return (any(self._include_has(i, system, code) for i in includes)
                and not any(self._include_has(e, system, code) for e in excludes))

    def contains_code(self, valueset_url: str, code: str) -> bool:
        """True if a bare `code` (system implied, as in FHIR `code` elements) is in the ValueSet."""
        return any(c == code for _, c in self.expand(valueset_url))
