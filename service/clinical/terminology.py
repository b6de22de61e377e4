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

import json
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
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
    `Terminology.default()`; instances are immutable after construction apart from private
    memos of answers, so sharing one per process is safe."""

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
    def default(cls) -> Terminology:
        """The ValueSets and CodeSystems of the repository's fhir_profiles/ (files read and
        compiled once per change; each call is its own instance with its own memos)."""
        folder = profiles_dir()
        terminology = cls.__new__(cls)
        terminology._init(_compiled(load_valuesets(folder / "ValueSet"),
                                    load_resources(folder / "CodeSystem", "CodeSystem")))
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

    def member_codings(self, url: str, concept: Any) -> list[dict[str, Any]]:
        """The codings of a CodeableConcept that are members of ValueSet `url`."""
        if not isinstance(concept, dict):
            return []
        return [c for c in concept.get("coding") or ()
                if self.contains_code(url, c.get("system"), c.get("code"))]

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


_REPOSITORY_PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"


def profiles_dir() -> Path:
    """The repository's fhir_profiles/ folder; the installed `fhir_profiles` package otherwise."""
    here = _REPOSITORY_PROFILES
    if here.is_dir():
        return here
    try:
        from importlib.resources import files
        return Path(str(files("fhir_profiles")))
    except (ImportError, TypeError):
        return here


def load_valuesets(folder: Path) -> tuple[dict[str, Any], ...]:
    """Every ValueSet JSON file in `folder`: load_resources(folder, "ValueSet")."""
    return load_resources(folder, "ValueSet")


def load_resources(folder: Path, resource_type: str) -> tuple[dict[str, Any], ...]:
    """Every `resource_type` JSON file in `folder` (sorted by name; other resource types
    skipped). Re-read only when a file is added, removed or modified. Raises OSError /
    ValueError (json.JSONDecodeError) on an unreadable or malformed file."""
    try:
        with os.scandir(folder) as entries:  # one readdir and a stat per file: cheap per call
            signature = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries
                                     if e.name.endswith(".json") and e.is_file()))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    return _read_resources(str(folder), signature, resource_type)


@lru_cache(maxsize=8)
def _read_resources(folder: str, signature: tuple[tuple[str, int], ...],
                    resource_type: str) -> tuple[dict[str, Any], ...]:
    out = []
    for name, _ in signature:
        data = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("resourceType") == resource_type:
            out.append(data)
    return tuple(out)


_last_compiled: tuple[Any, Any, ValueSets] | None = None


def _compiled(valuesets: tuple[dict[str, Any], ...],
              code_systems: tuple[dict[str, Any], ...]) -> ValueSets:
    """ValueSets over these resources, compiled again only when the files were re-read (the
    tuples are the cached ones, so identity says "unchanged"). ValueSets is immutable apart
    from memos of pure answers, so sharing it between Terminology instances is safe."""
    global _last_compiled
    last = _last_compiled
    if last is not None and last[0] is valuesets and last[1] is code_systems:
        return last[2]
    compiled = ValueSets((vs for vs in valuesets if _is(vs, "ValueSet")), code_systems)
    _last_compiled = (valuesets, code_systems, compiled)
    return compiled
