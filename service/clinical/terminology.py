"""Terminology: ValueSet membership for the rules, built from ValueSet JSON dicts.

A clinic changes what the rules recognise by editing a ValueSet in fhir_profiles/ValueSet/,
never the code. Supported ValueSet content:

- compose.include with a concept list, or a whole system (system and nothing else);
- compose.include.filter with op `is-a` / `descendent-of` (evaluated by code prefix, which is
  exact for ATC; for other systems only the code itself matches `is-a`), and op `=` on `concept`;
- compose.include.valueSet (other ValueSets held by the same Terminology);
- compose.exclude with concept lists;
- expansion.contains (nested), used as extra members;
- names: concept display and designation values, matched against CodeableConcept.text and
  Coding.display (normalised case and punctuation), so "Alendronate 70 mg" matches a concept
  displayed "alendronate" in `words` mode; an acid also matches as its salt ("alendronic acid"
  matches "alendronate").
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal

from service.fhir.canonical import ATC

TextMatch = Literal["exact", "words", "none"]

_NON_WORD = re.compile(r"[^0-9a-z]+")


@lru_cache(maxsize=8192)
def normalise(text: str) -> str:
    """Lower case, punctuation to single spaces, trimmed: "Left  Hip," -> "left hip"."""
    return _NON_WORD.sub(" ", text.lower()).strip()


@dataclass
class _CompiledValueSet:
    codes: set[tuple[str, str]] = field(default_factory=set)
    whole_systems: set[str] = field(default_factory=set)
    prefixes: list[tuple[str, str, bool]] = field(default_factory=list)  # system, prefix, self-included
    excluded: set[tuple[str, str]] = field(default_factory=set)
    names: set[str] = field(default_factory=set)            # normalised displays/designations
    displays: dict[tuple[str, str], str] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)


class Terminology:
    """ValueSet membership over codings and names. Build with `Terminology(valuesets)` or
    `Terminology.default()`; instances are immutable after construction apart from a private
    memo of answers, so sharing one per process is safe."""

    def __init__(self, valuesets: Iterable[dict[str, Any]]) -> None:
        self._sets: dict[str, _CompiledValueSet] = {}
        for vs in valuesets:
            if isinstance(vs, dict) and vs.get("resourceType") == "ValueSet" and vs.get("url"):
                self._sets[vs["url"]] = _compile(vs)
        self._resolve_imports()
        self._memo: dict[tuple[str, str, str], bool] = {}
        self._text_memo: dict[tuple[str, str, str], bool] = {}
        self._concept_memo: dict[tuple[Any, ...], tuple[bool, ...]] = {}
        self._display_memo: dict[tuple[str, str | None, str | None], str | None] = {}

    @classmethod
    def default(cls) -> Terminology:
        """The ValueSets in the repository's fhir_profiles/ValueSet/ (files read once per change)."""
        return cls(load_valuesets(profiles_dir() / "ValueSet"))

    # -- questions --------------------------------------------------------------------------
    def has(self, url: str) -> bool:
        """True when a ValueSet with this canonical URL is loaded."""
        return url in self._sets

    def urls(self) -> list[str]:
        """Canonical URLs of the loaded ValueSets."""
        return sorted(self._sets)

    def contains_code(self, url: str, system: str | None, code: str | None) -> bool:
        """True when system|code is a member of ValueSet `url` (False if the set is unknown)."""
        if not system or not code:
            return False
        key = (url, system, code)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._member(url, system, code, set())
        return hit

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
        """The display the ValueSet gives system|code, if it lists one."""
        key = (url, system, code)
        if key not in self._display_memo:
            self._display_memo[key] = self._display(url, system, code)
        return self._display_memo[key]

    def _display(self, url: str, system: str | None, code: str | None) -> str | None:
        seen: set[str] = set()
        stack = [url]
        while stack:
            current = stack.pop()
            if current in seen or current not in self._sets:
                continue
            seen.add(current)
            vs = self._sets[current]
            found = vs.displays.get((system or "", code or ""))
            if found:
                return found
            stack.extend(vs.imports)
        return None

    # -- internals --------------------------------------------------------------------------
    def _names(self, url: str) -> set[str]:
        vs = self._sets.get(url)
        return vs.names if vs else set()

    def _member(self, url: str, system: str, code: str, seen: set[str]) -> bool:
        vs = self._sets.get(url)
        if vs is None or url in seen:
            return False
        seen.add(url)
        if (system, code) in vs.excluded:
            return False
        if (system, code) in vs.codes or system in vs.whole_systems:
            return True
        for p_system, prefix, self_included in vs.prefixes:
            if p_system == system and code.startswith(prefix) and (self_included or code != prefix):
                if code == prefix or p_system == ATC:
                    return True
        return any(self._member(other, system, code, seen) for other in vs.imports)

    def _resolve_imports(self) -> None:
        """Fold imported sets' names into the importer so text matching sees them too."""
        for url, vs in self._sets.items():
            seen, stack = {url}, list(vs.imports)
            while stack:
                other = stack.pop()
                if other in seen or other not in self._sets:
                    continue
                seen.add(other)
                vs.names |= self._sets[other].names
                stack.extend(self._sets[other].imports)


def _add_concept(vs: _CompiledValueSet, system: str, concept: dict[str, Any]) -> None:
    code = concept.get("code")
    if not code:
        return
    vs.codes.add((system, code))
    display = concept.get("display")
    if display:
        vs.displays[(system, code)] = display
        _add_name(vs, display)
    for designation in concept.get("designation") or ():
        value = designation.get("value")
        if value:
            _add_name(vs, value)


def _add_name(vs: _CompiledValueSet, name: str) -> None:
    """Add a member name; an acid's name also under its salt's name, as prescribers write it
    ("zoledronic acid" -> "zoledronate", "alendronic acid" -> "alendronate")."""
    norm = normalise(name)
    vs.names.add(norm)
    words = norm.split()
    if len(words) == 2 and words[1] == "acid" and words[0].endswith("ic") and len(words[0]) > 4:
        vs.names.add(words[0][:-2] + "ate")


def _compile(valueset: dict[str, Any]) -> _CompiledValueSet:
    vs = _CompiledValueSet()
    compose = valueset.get("compose") or {}
    for include in compose.get("include") or ():
        system = include.get("system") or ""
        vs.imports.extend(include.get("valueSet") or ())
        concepts = include.get("concept") or ()
        filters = include.get("filter") or ()
        for concept in concepts:
            _add_concept(vs, system, concept)
        for flt in filters:
            op, value = flt.get("op"), flt.get("value")
            if not value:
                continue
            if op in ("is-a", "descendent-of"):
                vs.prefixes.append((system, value, op == "is-a"))
            elif op == "=" and flt.get("property") in ("concept", "code"):
                vs.codes.add((system, value))
        if system and not concepts and not filters and not include.get("valueSet"):
            vs.whole_systems.add(system)
    for exclude in compose.get("exclude") or ():
        system = exclude.get("system") or ""
        for concept in exclude.get("concept") or ():
            if concept.get("code"):
                vs.excluded.add((system, concept["code"]))
    stack = list((valueset.get("expansion") or {}).get("contains") or ())
    while stack:
        item = stack.pop()
        if item.get("system") and item.get("code") and not item.get("abstract"):
            _add_concept(vs, item["system"], item)
        stack.extend(item.get("contains") or ())
    vs.names.discard("")
    return vs


def profiles_dir() -> Path:
    """The repository's fhir_profiles/ folder; the installed `fhir_profiles` package otherwise."""
    here = Path(__file__).resolve().parents[2] / "fhir_profiles"
    if here.is_dir():
        return here
    try:
        from importlib.resources import files
        return Path(str(files("fhir_profiles")))
    except (ImportError, TypeError):
        return here


def load_valuesets(folder: Path) -> tuple[dict[str, Any], ...]:
    """Every ValueSet JSON file in `folder` (sorted by name; other resource types skipped).
    Re-read only when a file is added, removed or modified. Raises OSError / ValueError
    (json.JSONDecodeError) on an unreadable or malformed file."""
    folder = Path(folder)
    if not folder.is_dir():
        return ()
    signature = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json")))
    return _read_valuesets(str(folder), signature)


@lru_cache(maxsize=8)
def _read_valuesets(folder: str, signature: tuple[tuple[str, int], ...]) -> tuple[dict[str, Any], ...]:
    out = []
    for name, _ in signature:
        data = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("resourceType") == "ValueSet":
            out.append(data)
    return tuple(out)
