"""Errors of the conformance package.

    ConformanceError        fhir_profiles/ holds something the engine cannot load or evaluate
     +-- UnknownValueSet    (also a LookupError) a ValueSet URL that is not in the package
"""
from __future__ import annotations


class ConformanceError(Exception):
    """The conformance package cannot be loaded: bad JSON, duplicate URL, unusable ValueSet."""


class UnknownValueSet(ConformanceError, LookupError):
    """A ValueSet URL that is not held locally."""
