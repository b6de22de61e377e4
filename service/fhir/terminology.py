"""ValueSet.compose read locally: the one answer to "what does this ValueSet contain?".

No terminology server exists, so membership is worked out from the ValueSets and CodeSystems the
package holds (https://hl7.org/fhir/R4/valueset.html#compositions). The profile validator
(service.fhir.profiles) and the clinical rules (service.clinical) both ask ValueSets, so they
cannot disagree. The rules:

- an include that lists concepts contributes exactly those codes;
- an include of a whole system contributes every concept of the CodeSystem when it is held;
  a system that is not held is *open*: contains() accepts any of its codes (a problem);
- filters of one include must all hold: `is-a` / `descendent-of` / `is-not-a` on a held
  CodeSystem follow its concept hierarchy; `is-a` / `descendent-of` on ATC and ICD-10-CM
  (PREFIX_HIERARCHIES) match by code prefix, because their codes spell their hierarchy
  (M05BA04 is-a M05BA, Z3A.01 is-a Z3A); `=` on
  the `concept` or `code` property selects that code. Any other filter is a problem: `is-a`
  then selects its own code only, the rest select nothing;
- include.valueSet imports: the include is the intersection of its system part and of every
  ValueSet it names; an import cycle contributes nothing, an unknown import is a problem;
- separate includes unite; compose.exclude (the same rules) subtracts;
- expansion.contains (nested, not abstract) lists members too.

`problems` says what could only be approximated. The profile validator refuses a package with
any; the clinical rules accept the approximation, which is what lets them run on a few ValueSet
dicts without their CodeSystems.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from service.fhir.canonical import ATC, ICD10CM

# Code systems whose codes spell their hierarchy: a descendant starts with its ancestor's code
# (ATC: M05BA04 is-a M05BA; ICD-10-CM: Z3A.01 is-a Z3A, O09.511 is-a O09; a chapter letter
# such as "O" selects the chapter, O00-O9A).
PREFIX_HIERARCHIES = frozenset({ATC, ICD10CM})
HIERARCHY_OPS = frozenset({"is-a", "descendent-of", "is-not-a"})

Code = tuple[str, str]  # (system, code)


def strip_version(canonical: str) -> str:
    """Return a canonical URL without its `|version` suffix."""
    return canonical.split("|", 1)[0]


@dataclass(frozen=True)
class Concept:
    """A member concept with the names the ValueSet (or its CodeSystem) gives it."""

    system: str
    code: str
    display: str | None
    designations: tuple[str, ...] = ()


@dataclass
class _CodeSystem:
    url: str
    concepts: dict[str, Concept] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    _below: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> _CodeSystem:
        cs = cls(strip_version(resource["url"]))

        def walk(concepts: Iterable[dict[str, Any]], parent: str | None) -> None:
            for concept in concepts:
                if not concept.get("code"):
                    continue
                cs.concepts[concept["code"]] = _concept(cs.url, concept)
                if parent is not None:
                    cs.children.setdefault(parent, []).append(concept["code"])
                walk(concept.get("concept") or (), concept["code"])

        walk(resource.get("concept") or (), None)
        return cs

    def descendants(self, code: str) -> frozenset[str]:
        """Every code below `code` in the hierarchy (remembered: the CodeSystem never changes)."""
        found = self._below.get(code)
        if found is None:
            out: set[str] = set()
            stack = list(self.children.get(code, ()))
            while stack:
                child = stack.pop()
                if child not in out:
                    out.add(child)
                    stack.extend(self.children.get(child, ()))
            found = self._below[code] = frozenset(out)
        return found


@dataclass(frozen=True)
class _Filter:
    property: str | None
    op: str
    value: str


@dataclass(frozen=True)
class _Include:
    """One compose.include or compose.exclude, compiled."""

    system: str | None
    codes: frozenset[str] | None  # listed concepts, or None
    filters: tuple[_Filter, ...]
    value_sets: tuple[str, ...]


@dataclass(frozen=True)
class _ValueSet:
    includes: tuple[_Include, ...]
    excludes: tuple[_Include, ...]
    expansion: frozenset[Code]
    listed: dict[Code, Concept]  # include.concept and expansion.contains entries, with names


class ValueSets:
    """Local ValueSets (and the CodeSystems they draw on), with membership and expansion.

    Immutable after construction apart from private memos of pure answers, so one instance may
    be shared between threads. Unknown ValueSet URLs are not errors here: contains() is False,
    expand() and concepts() are empty; ask knows() first where that matters.
    """

    def __init__(self, value_sets: Iterable[dict[str, Any]],
                 code_systems: Iterable[dict[str, Any]] = ()) -> None:
        """Compile the resources; what cannot be evaluated locally is listed in `problems`."""
        self.problems: list[str] = []
        self._systems = {cs.url: cs for cs in map(_CodeSystem.from_resource, code_systems)}
        self._sets: dict[str, _ValueSet] = {}
        for vs in value_sets:
            url = strip_version(vs["url"])
            self._sets[url] = self._compile(url, vs)
        self._known_codes: dict[str, set[str]] = {}  # system -> codes any ValueSet lists
        for vs_url, compiled in self._sets.items():
            for system, code in compiled.expansion | compiled.listed.keys():
                self._known_codes.setdefault(system, set()).add(code)
            for inc in compiled.includes + compiled.excludes:
                if inc.system and inc.codes:
                    self._known_codes.setdefault(inc.system, set()).update(inc.codes)
                self.problems += [f"ValueSet {vs_url}: imports {v}, which is not held"
                                  for v in inc.value_sets if v not in self._sets]
        self._answers: dict[tuple[str, str, str], bool] = {}
        self._expansions: dict[str, frozenset[Code]] = {}
        self._concepts: dict[str, tuple[Concept, ...]] = {}

    # -- questions ------------------------------------------------------------------------------
    def knows(self, valueset_url: str) -> bool:
        """True if the ValueSet is held."""
        return strip_version(valueset_url) in self._sets

    def urls(self) -> list[str]:
        """Canonical URLs (without version) of the held ValueSets."""
        return sorted(self._sets)

    def contains(self, valueset_url: str, system: str | None, code: str | None) -> bool:
        """True if (system, code) is a member of the ValueSet (False if it is not held)."""
        if not system or not code:
            return False
        key = (valueset_url, system, code)
        hit = self._answers.get(key)
        if hit is None:
            hit = self._has(strip_version(valueset_url), system, code, frozenset())
            if len(self._answers) < 100_000:  # codes arrive from outside: bound the memo
                self._answers[key] = hit
        return hit

    def expand(self, valueset_url: str) -> frozenset[Code]:
        """The members that can be listed: every (system, code) the includes enumerate (for a
        prefix hierarchy or an open system, the codes of it that any held ValueSet lists, plus
        the roots of `is-a` filters) that contains() accepts."""
        url = strip_version(valueset_url)
        found = self._expansions.get(url)
        if found is None:
            candidates = self._candidates(url, frozenset())
            found = frozenset(k for k in candidates if self._has(url, k[0], k[1], frozenset()))
            self._expansions[url] = found
        return found

    def concepts(self, valueset_url: str) -> tuple[Concept, ...]:
        """The members of expand() with their names: the display and designations the ValueSet
        (or a ValueSet it imports) lists for a concept, else those of its held CodeSystem."""
        url = strip_version(valueset_url)
        found = self._concepts.get(url)
        if found is None:
            found = self._concepts[url] = tuple(
                self._named(url, system, code) for system, code in sorted(self.expand(url)))
        return found

    def subsumed(self, system: str, code: str, direction: str) -> frozenset[str] | None:
        """The codes of a held CodeSystem at or below (direction 'below') or at or above
        ('above') code in its hierarchy, as the search modifiers :below and :above ask
        (https://hl7.org/fhir/R4/search.html#token); for a prefix hierarchy (ATC), the codes
        that any held ValueSet lists. None when the system is not held.
        """
        local = self._systems.get(strip_version(system))
        if local is None:
            if system not in PREFIX_HIERARCHIES:
                return None
            known = self._known_codes.get(system, set()) | {code}
            if direction == "below":
                return frozenset(c for c in known if c.startswith(code))
            return frozenset(c for c in known if code.startswith(c))
        if direction == "below":
            return local.descendants(code) | {code}
        return frozenset(c for c in local.concepts if code in local.descendants(c)) | {code}

    # -- membership -----------------------------------------------------------------------------
    def _has(self, url: str, system: str, code: str, seen: frozenset[str]) -> bool:
        vs = self._sets.get(url)
        if vs is None or url in seen:
            return False  # an import cycle contributes nothing
        seen |= {url}
        return (((system, code) in vs.expansion
                 or any(self._include_has(i, system, code, seen) for i in vs.includes))
                and not any(self._include_has(e, system, code, seen) for e in vs.excludes))

    def _include_has(self, inc: _Include, system: str, code: str, seen: frozenset[str]) -> bool:
        if inc.system is not None:
            if system != inc.system:
                return False
            if inc.codes is not None:
                if code not in inc.codes:
                    return False
            elif system in self._systems and code not in self._systems[system].concepts:
                return False
            if not all(self._passes(inc.system, f, code) for f in inc.filters):
                return False
        elif not inc.value_sets:
            return False
        return all(self._has(v, system, code, seen) for v in inc.value_sets)

    def _passes(self, system: str, f: _Filter, code: str) -> bool:
        if f.op == "=":
            return f.property in ("concept", "code") and code == f.value
        local = self._systems.get(system)
        if local is not None and f.op in HIERARCHY_OPS:
            below = local.descendants(f.value)
            if f.op == "is-not-a":
                return code != f.value and code not in below
            return code in below or (f.op == "is-a" and code == f.value)
        if system in PREFIX_HIERARCHIES and f.op in ("is-a", "descendent-of"):
            return code.startswith(f.value) and (f.op == "is-a" or code != f.value)
        return f.op == "is-a" and code == f.value  # a problem: approximated by its root alone

    # -- enumeration ----------------------------------------------------------------------------
    def _candidates(self, url: str, seen: frozenset[str]) -> set[Code]:
        vs = self._sets.get(url)
        if vs is None or url in seen:
            return set()
        seen |= {url}
        out = set(vs.expansion)
        for inc in vs.includes:
            if inc.system is not None:
                out.update(self._include_candidates(inc))
            elif inc.value_sets:  # members of every import: those of the first will do
                out |= self._candidates(inc.value_sets[0], seen)
        return out

    def _include_candidates(self, inc: _Include) -> Iterator[Code]:
        system = inc.system or ""
        if inc.codes is not None:
            yield from ((system, c) for c in inc.codes)
        elif system in self._systems:
            yield from ((system, c) for c in self._systems[system].concepts)
        else:  # prefix hierarchy, `=` and open systems: filter values and codes listed anywhere
            yield from ((system, f.value) for f in inc.filters if f.op in ("is-a", "="))
            yield from ((system, c) for c in self._known_codes.get(system, ()))

    def _named(self, url: str, system: str, code: str) -> Concept:
        seen, stack = set(), [url]
        while stack:
            current = stack.pop()
            if current in seen or current not in self._sets:
                continue
            seen.add(current)
            vs = self._sets[current]
            if (system, code) in vs.listed:
                return vs.listed[(system, code)]
            stack.extend(v for inc in vs.includes for v in inc.value_sets)
        local = self._systems.get(system)
        named = local.concepts.get(code) if local else None
        return named or Concept(system, code, None)

    # -- compilation ----------------------------------------------------------------------------
    def _compile(self, url: str, vs: dict[str, Any]) -> _ValueSet:
        compose = vs.get("compose") or {}
        listed: dict[Code, Concept] = {}
        includes = tuple(self._include(url, i, listed) for i in compose.get("include") or ())
        excludes = tuple(self._include(url, e, {}) for e in compose.get("exclude") or ())
        expansion: set[Code] = set()
        stack = list((vs.get("expansion") or {}).get("contains") or ())
        while stack:
            item = stack.pop()
            if item.get("system") and item.get("code") and not item.get("abstract"):
                expansion.add((item["system"], item["code"]))
                listed.setdefault((item["system"], item["code"]), _concept(item["system"], item))
            stack.extend(item.get("contains") or ())
        return _ValueSet(includes, excludes, frozenset(expansion), listed)

    def _include(self, url: str, inc: dict[str, Any], listed: dict[Code, Concept]) -> _Include:
        """Compile one include/exclude; its listed concepts go into `listed`, what cannot be
        evaluated locally into `problems`."""
        system = inc.get("system") or None
        concepts = [c for c in inc.get("concept") or () if c.get("code")]
        if system:
            listed.update(((system, c["code"]), _concept(system, c)) for c in concepts)
        filters = tuple(_Filter(f.get("property"), f.get("op") or "", f.get("value") or "")
                        for f in inc.get("filter") or ())
        value_sets = tuple(map(strip_version, inc.get("valueSet") or ()))
        if not system and not value_sets:
            self.problems.append(f"ValueSet {url}: an include with neither system nor valueSet")
        self.problems += [f"ValueSet {url}: filter {f.op} on {system} cannot be evaluated locally"
                          for f in filters if self._unevaluable_on(system, f)]
        if system and not concepts and not filters and system not in self._systems:
            self.problems.append(f"ValueSet {url}: includes all of {system}, "
                                 "which is not a local CodeSystem")
        return _Include(system, frozenset(c["code"] for c in concepts) if concepts else None,
                        filters, value_sets)

    def _unevaluable_on(self, system: str | None, f: _Filter) -> bool:
        if not f.value or not system:
            return True
        if f.op == "=":
            return f.property not in ("concept", "code")
        return not ((system in self._systems and f.op in HIERARCHY_OPS)
                    or (system in PREFIX_HIERARCHIES and f.op in ("is-a", "descendent-of")))


def _concept(system: str, concept: dict[str, Any]) -> Concept:
    designations = tuple(d["value"] for d in concept.get("designation") or () if d.get("value"))
    return Concept(system, concept["code"], concept.get("display") or None, designations)
