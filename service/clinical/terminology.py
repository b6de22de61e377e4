"""Terminology: ValueSet membership for the rules, over codings and names.

A clinic changes what the rules recognise by editing a ValueSet in fhir_profiles/ValueSet/,
never the code. Which codes a ValueSet contains is decided by service.fhir.terminology.ValueSets,
the interpreter the profile validator uses too (see its docstring for the compose rules). Without
a ValueSet's CodeSystem (tests build Terminology from a few ValueSet dicts) its approximations
apply: a whole system accepts any code of it, an `is-a` filter only its own code (ATC by prefix).

What the rules add here:
- names: the displays and designations of a ValueSet's members, matched against
  CodeableConcept.text and Coding.display (normalised case and punctuation), so
  "Alendronate 70 mg" matches a concept displayed "alendronate" in `words` mode; an acid also
  matches as its salt ("alendronic acid" matches "alendronate");
- memos of every answer, per coding, per text and per whole concept (the same finding codes
  recur in every MRI).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

from service.fhir.terminology import ValueSets

TextMatch = Literal["exact", "words", "none"]

_NON_WORD = re.compile(r"[^0-9a-z]+")


@lru_cache(maxsize=8192)
def normalise(text: str) -> str:
    """Lower case, punctuation to single spaces, trimmed: "Left  Hip," -> "left hip"."""
    return _NON_WORD.sub(" ", text.lower()).strip()


class Terminology:
    """ValueSet membership over codings and names. Build with `Terminology(valuesets)` or
    `Terminology.from_value_sets(value_sets)`; instances are immutable after construction
    apart from private memos of answers, so sharing one per process is safe."""

    def __init__(self, valuesets: Iterable[dict[str, Any]],
                 code_systems: Iterable[dict[str, Any]] = ()) -> None:
        """Read ValueSet dicts (other resources are skipped) and, optionally, the CodeSystems
        they draw on."""
        self._init(ValueSets((vs for vs in valuesets if _is(vs, "ValueSet")),
                             (cs for cs in code_systems if _is(cs, "CodeSystem"))))

    def _init(self, value_sets: ValueSets) -> None:
        self._sets = value_sets
        self._text_memo: dict[tuple[str, str, str], bool] = {}
        self._concept_memo: dict[tuple[Any, ...], tuple[bool, ...]] = {}
        self._display_memo: dict[tuple[str, str | None, str | None], str | None] = {}
        self._names_memo: dict[str, frozenset[str]] = {}

    @classmethod
    def from_value_sets(cls, value_sets: ValueSets) -> Terminology:
        """Over ValueSets already compiled, e.g. the guide's:
        `Terminology.from_value_sets(Conformance.load().terminology.value_sets)`. The profile
        validator and the rules then share one interpreter and cannot disagree."""
        terminology = cls.__new__(cls)
        terminology._init(value_sets)
        return terminology

    # -- questions --------------------------------------------------------------------------
    def has(self, url: str) -> bool:
        """True when a ValueSet with this canonical URL is loaded."""
        return self._sets.knows(url)

    def urls(self) -> list[str]:
        """Canonical URLs of the loaded ValueSets."""
        return self._sets.urls()

    def contains_code(self, url: str, system: str | None, code: str | None) -> bool:
        """True when system|code is a member of ValueSet `url` (False if the set is unknown)."""
        return self._sets.contains(url, system, code)  # remembered there

    def contains(self, url: str, concept: Any, text: TextMatch = "exact") -> bool:
        """True when a CodeableConcept has a coding in ValueSet `url`, or (text != "none") when
        its text or a coding display names a member: `exact` = whole normalised string equal,
        `words` = a member name appears as whole words inside it."""
        if not isinstance(concept, dict):
            return False
        codings = concept.get("coding") or ()
        for coding in codings:
            if self.contains_code(url, coding.get("system"), coding.get("code")):
                return True
        if text == "none":
            return False
        candidate = concept.get("text")
        if isinstance(candidate, str) and candidate and self._names_match(url, candidate, text):
            return True
        for coding in codings:
            candidate = coding.get("display")
            if isinstance(candidate, str) and candidate and self._names_match(url, candidate, text):
                return True
        return False

    def memberships(self, concept: Any, urls: tuple[str, ...], text: TextMatch = "exact"
                    ) -> tuple[bool, ...]:
        """contains(url, concept, text) for each url at once, remembered per distinct concept
        (the same finding codes recur in every MRI)."""
        if not isinstance(concept, dict):
            return (False,) * len(urls)
        key = (urls, text, concept.get("text"),
               tuple((c.get("system"), c.get("code"), c.get("display")) for c in concept.get("coding") or ()))
        hit = self._concept_memo.get(key)
        if hit is None:
            hit = tuple(self.contains(url, concept, text) for url in urls)
            if len(self._concept_memo) < 100_000:
                self._concept_memo[key] = hit
        return hit

    def _names_match(self, url: str, candidate: str, text: TextMatch) -> bool:
        key = (url, candidate, text)
        hit = self._text_memo.get(key)
        if hit is None:
            names = self._names(url)
            norm = normalise(candidate)
            hit = norm in names
            if not hit and text == "words":
                padded = f" {norm} "
                hit = any(f" {name} " in padded for name in names)
            if len(self._text_memo) < 100_000:        # free text: bound the memo
                self._text_memo[key] = hit
        return hit

    def display(self, url: str, system: str | None, code: str | None) -> str | None:
        """The display the ValueSet gives system|code (or its CodeSystem does), if any."""
        key = (url, system, code)
        if key not in self._display_memo:
            self._display_memo[key] = next((c.display for c in self._sets.concepts(url)
                                            if c.code == code and c.system == system), None)
        return self._display_memo[key]

    # -- internals --------------------------------------------------------------------------
    def _names(self, url: str) -> frozenset[str]:
        names = self._names_memo.get(url)
        if names is None:
            found: set[str] = set()
            for concept in self._sets.concepts(url):
                for name in filter(None, (concept.display, *concept.designations)):
                    found |= _names(name)
            names = self._names_memo[url] = frozenset(found - {""})
        return names


def _names(name: str) -> set[str]:
    """A member name, normalised; an acid's name also as its salt's, as prescribers write it
    ("zoledronic acid" -> "zoledronate", "alendronic acid" -> "alendronate")."""
    norm = normalise(name)
    words = norm.split()
    if len(words) == 2 and words[1] == "acid" and words[0].endswith("ic") and len(words[0]) > 4:
        return {norm, words[0][:-2] + "ate"}
    return {norm}


def _is(resource: Any, resource_type: str) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == resource_type \
        and bool(resource.get("url"))
