from __future__ import annotations

import pytest

from clinical_factories import small_terminology
from service.clinical import Terminology
from service.fhir.profiles import Conformance


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    """A Terminology of small ValueSets written in the tests (not fhir_profiles/)."""
    return small_terminology()


@pytest.fixture(scope="session")
def guide() -> Conformance:
    """The TOH guide (fhir_profiles/), loaded once for the session (about 0.2 s)."""
    return Conformance.load()


@pytest.fixture(scope="session")
def guide_terminology(guide: Conformance) -> Terminology:
    """The rules' Terminology over the guide's ValueSets, built as create_app builds it."""
    return Terminology.from_value_sets(guide.terminology.value_sets)
