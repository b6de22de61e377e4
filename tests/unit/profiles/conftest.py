"""Fixtures for the profile tests: the loaded package and fresh copies of the examples."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.fhir.profiles import Conformance

PROFILES_DIR = Path(__file__).resolve().parents[3] / "fhir_profiles"
EXAMPLES_DIR = PROFILES_DIR / "examples"


@pytest.fixture(scope="session")
def conformance() -> Conformance:
    return Conformance.load(PROFILES_DIR)


@pytest.fixture(scope="session")
def _examples() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(EXAMPLES_DIR.glob("*.json"))}


@pytest.fixture
def example(_examples: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """example("Condition-toh-left-hip") -> a deep copy to break."""
    return lambda stem: copy.deepcopy(_examples[stem])

