"""Every example in fhir_profiles/examples/ conforms to the profile it claims."""
from __future__ import annotations

import json

import pytest

from service.fhir.profiles import Conformance, default_directory

from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parents[3] / "fhir_profiles"
EXAMPLES_DIR = PROFILES_DIR / "examples"

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.json"))


def test_default_directory_is_the_repository_package() -> None:
    assert default_directory().resolve() == PROFILES_DIR.resolve()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_against_its_profile(conformance: Conformance, path) -> None:
    resource = json.loads(path.read_text())
    claimed = resource.get("meta", {}).get("profile", [])
    for url in claimed:
        assert url in conformance.profile_urls()
        assert conformance.validate(resource, url) == []
    assert conformance.validate(resource) == []


def test_every_profile_has_an_example(conformance: Conformance) -> None:
    claimed = {url for path in EXAMPLES
               for url in json.loads(path.read_text()).get("meta", {}).get("profile", [])}
    assert set(conformance.profile_urls()) == claimed
    assert len(claimed) == 9


def test_no_profile_constraint_is_skipped(conformance: Conformance) -> None:
    assert conformance.skipped_constraints == []
