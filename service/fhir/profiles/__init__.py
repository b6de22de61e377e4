"""Profile validation and local terminology for the TOH implementation guide (fhir_profiles/).

Pure Python: no Flask, no database. Typical use:

    conformance = Conformance.load()            # once, at start-up
    issues = conformance.validate(resource)     # against the profiles in meta.profile
    if has_errors(issues): raise Unprocessable(issues=issues)
    conformance.contains(VS_TRACKED_JOINTS, SNOMED, "24136001")   # -> True

Errors:

    ConformanceError        the package cannot be loaded (bad file, duplicate URL, no snapshot,
     |                      a ValueSet that cannot be expanded locally)
     +-- UnknownValueSet    expand()/contains() on a ValueSet the package does not hold
"""
from __future__ import annotations

from ._conformance import Conformance, default_directory, has_errors
from ._errors import ConformanceError, UnknownValueSet

__all__ = ["Conformance", "ConformanceError", "UnknownValueSet", "default_directory", "has_errors"]
