"""fhir_profiles/ is a well-formed FHIR package: R4-model-valid JSON, one resource per file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from service.fhir import canonical
from service.fhir.profiles import Conformance

PROFILES_DIR = Path(__file__).resolve().parents[3] / "fhir_profiles"
RESOURCE_FILES = sorted(p for p in PROFILES_DIR.glob("*/*.json"))


def test_package_manifest() -> None:
    manifest = json.loads((PROFILES_DIR / "package.json").read_text())
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert manifest["canonical"] == canonical.IG


@pytest.mark.parametrize("path", RESOURCE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_file_is_a_valid_resource_named_after_it(path: Path) -> None:
    resource = json.loads(path.read_text())
    assert path.name == f"{resource['resourceType']}-{resource['id']}.json"
    if path.parent.name != "examples":
        assert path.parent.name == resource["resourceType"]
        assert resource["url"] == f"{canonical.IG}/{resource['resourceType']}/{resource['id']}"
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_every_ig_canonical_constant_resolves(conformance: Conformance) -> None:
    prefixes = ("VS_", "SD_", "EXT_", "PD_", "TOH_CODES")
    urls = {name: value for name, value in vars(canonical).items()
            if name.startswith(prefixes) and value.startswith(canonical.IG + "/")}
    assert len(urls) > 20
    missing = {name: url for name, url in urls.items() if conformance.get(url) is None}
    assert missing == {}


def test_structure_definitions_carry_snapshots(conformance: Conformance) -> None:
    sds = [r for r in conformance.resources if r["resourceType"] == "StructureDefinition"]
    assert len(sds) == 12
    for sd in sds:
        assert sd["snapshot"]["element"][0]["path"] == sd["type"]
        assert sd["differential"]["element"]


def test_bindings_point_at_local_valuesets(conformance: Conformance) -> None:
    """Every binding a profile adds (differential) names a ValueSet this package holds."""
    for sd in (r for r in conformance.resources if r["resourceType"] == "StructureDefinition"):
        for element in sd["differential"]["element"]:
            if "binding" in element:
                assert conformance.get(element["binding"]["valueSet"]) is not None, element["id"]
