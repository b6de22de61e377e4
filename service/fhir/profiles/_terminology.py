"""The package's terminology for required bindings: service.fhir.terminology, held strictly.

What a ValueSet contains is decided by service.fhir.terminology.ValueSets (the clinical rules ask
the same object type). The validator adds strictness: a ValueSet that can only be approximated
(a whole external code system, a filter it cannot evaluate, an unknown import) raises
ConformanceError when the package is loaded, so a bad ValueSet is found at start-up, not when a
write is checked; and a ValueSet the package does not hold raises UnknownValueSet.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.fhir.terminology import Code, ValueSets, strip_version

from ._errors import ConformanceError, UnknownValueSet

__all__ = ["Code", "Terminology", "strip_version"]


class Terminology:
    """The local CodeSystems and ValueSets, with expansion and membership tests."""

    def __init__(self, code_systems: Iterable[dict[str, Any]],
                 value_sets: Iterable[dict[str, Any]]) -> None:
        """Compile the resources; raises ConformanceError for a ValueSet it cannot expand."""
        self.value_sets = ValueSets(value_sets, code_systems)
        if self.value_sets.problems:
            raise ConformanceError(self.value_sets.problems[0])

    def knows(self, valueset_url: str) -> bool:
        """True if the ValueSet is held locally."""
        return self.value_sets.knows(valueset_url)

    def _held(self, valueset_url: str) -> str:
        if not self.value_sets.knows(valueset_url):
            raise UnknownValueSet(strip_version(valueset_url))
        return valueset_url

    def expand(self, valueset_url: str) -> frozenset[Code]:
        """All (system, code) pairs of a local ValueSet. Prefix (ATC) filters contribute their
        root code and every code of that system listed in any local ValueSet that falls under
        it; contains() accepts any code under the root. Raises UnknownValueSet if not local."""
        return self.value_sets.expand(self._held(valueset_url))

    def contains(self, valueset_url: str, system: str | None, code: str | None) -> bool:
        """True if (system, code) is in the ValueSet. Raises UnknownValueSet if not local."""
        return self.value_sets.contains(self._held(valueset_url), system, code)

    def contains_code(self, valueset_url: str, code: str) -> bool:
        """True if a bare `code` (system implied, as in FHIR `code` elements) is in the ValueSet.
        Raises UnknownValueSet if not local."""
        return any(c == code for _, c in self.expand(valueset_url))
