from __future__ import annotations

import pytest

from clinical_factories import small_terminology
from service.clinical import Terminology


@pytest.fixture(scope="session")
def terminology() -> Terminology:
    """A Terminology of small ValueSets written in the tests (not fhir_profiles/)."""
    return small_terminology()
