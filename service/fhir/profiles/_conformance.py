"""The conformance package (fhir_profiles/) loaded into memory: terminology and profiles."""
from __future__ import annotations

import importlib.resources
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from service.fhir.errors import Issue

from ._elements import Element, compile_snapshot
from ._errors import ConformanceError
from ._terminology import Code, Terminology, strip_version
from ._validator import Walker

# Folders of fhir_profiles/ that hold conformance resources (examples/ and fsh/ are not loaded).
CONFORMANCE_FOLDERS = ("CodeSystem", "ValueSet", "ConceptMap", "StructureDefinition",
                       "PlanDefinition", "ActivityDefinition", "SearchParameter", "OperationDefinition")
BASE_SD = "http://hl7.org/fhir/StructureDefinition/"


def default_directory() -> Path:
    """The fhir_profiles/ directory: the installed package data, else the repository folder."""
    try:
        found = importlib.resources.files("fhir_profiles")
        candidates = [Path(str(found))] if isinstance(found, Path) else []
        spec = importlib.util.find_spec("fhir_profiles")
        if spec and spec.submodule_search_locations:
            candidates += [Path(p) for p in spec.submodule_search_locations]
        for candidate in candidates:
            if (candidate / "StructureDefinition").is_dir():
                return candidate
    except (ImportError, ValueError, TypeError, OSError):
        # OSError: an editable install's namespace path holds a path hook, not a folder,
        # and importlib.resources refuses it (NotADirectoryError).
        pass
    return Path(__file__).resolve().parents[3] / "fhir_profiles"


def read_resources(directory: Path) -> list[dict[str, Any]]:
    """Read every conformance resource under directory; raises ConformanceError on bad files."""
    resources = []
    for folder in CONFORMANCE_FOLDERS:
        for path in sorted((directory / folder).glob("*.json")):
            try:
                resource = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConformanceError(f"{path}: {exc}") from exc
            if not isinstance(resource, dict) or resource.get("resourceType") != folder:
                raise ConformanceError(f"{path}: expected a {folder}")
            resources.append(resource)
    return resources


class Conformance:
    """Profiles, ValueSets and CodeSystems of the TOH guide, ready to expand and validate.

    Build with Conformance.load(); immutable afterwards and safe to share between threads.
    """

    def __init__(self, resources: Iterable[dict[str, Any]]) -> None:
        """Index and compile the resources. Raises ConformanceError on duplicate canonical
        URLs, a StructureDefinition without snapshot, or a ValueSet that cannot be expanded."""
        self.resources: list[dict[str, Any]] = list(resources)
        self._by_url: dict[str, dict[str, Any]] = {}
        for resource in self.resources:
            url = resource.get("url")
            if not url:
                name = f"{resource.get('resourceType')}/{resource.get('id')}"
                raise ConformanceError(f"{name}: no url")
            if url in self._by_url:
                raise ConformanceError(f"duplicate canonical URL {url}")
            self._by_url[url] = resource
        self.terminology = Terminology(self._of_type("CodeSystem"), self._of_type("ValueSet"))
        # (profile url, constraint key, reason) for invariants fhirpathpy cannot compile
        self.skipped_constraints: list[tuple[str, str, str]] = []
        # invariant key -> a Python predicate evaluated instead of its FHIRPath (implement())
        self.natives: dict[str, Callable[[Any, Mapping[str, Any]], bool]] = {}
        self._trees: dict[str, Element] = {}
        for sd in self._of_type("StructureDefinition"):
            if not sd.get("snapshot", {}).get("element"):
                raise ConformanceError(f"StructureDefinition {sd['url']} has no snapshot")
            self._trees[sd["url"]] = compile_snapshot(sd, self.skipped_constraints)

    @classmethod
    def load(cls, directory: Path | None = None) -> Conformance:
        """Load fhir_profiles/ (default: default_directory()). Raises ConformanceError."""
        directory = directory or default_directory()
        if not (directory / "StructureDefinition").is_dir():
            raise ConformanceError(f"{directory} is not a conformance package")
        return cls(read_resources(directory))

    def _of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["resourceType"] == resource_type]

    # --- lookup -------------------------------------------------------------------------------
    def get(self, canonical: str) -> dict[str, Any] | None:
        """The conformance resource with this canonical URL (`|version` ignored), or None."""
        return self._by_url.get(strip_version(canonical))

    def profile_urls(self, resource_type: str | None = None) -> list[str]:
        """URLs of the resource profiles (not extensions), optionally for one resource type."""
        return sorted(sd["url"] for sd in self._of_type("StructureDefinition")
                      if sd.get("kind") == "resource" and sd.get("derivation") == "constraint"
                      and resource_type in (None, sd["type"]))

    def element(self, url: str) -> Element | None:
        """The compiled root element of a local StructureDefinition (for the validator)."""
        return self._trees.get(strip_version(url))

    def type_of(self, url: str) -> str | None:
        """The type a StructureDefinition URL constrains: local profiles and base R4 types."""
        sd = self.get(url)
        if sd is not None:
            return str(sd["type"])
        return url[len(BASE_SD):] if url.startswith(BASE_SD) else None

    # --- terminology --------------------------------------------------------------------------
    def expand(self, valueset_url: str) -> frozenset[Code]:
        """All (system, code) pairs of a local ValueSet. Raises UnknownValueSet (a LookupError)."""
        return self.terminology.expand(valueset_url)

    def contains(self, valueset_url: str, system: str | None, code: str | None) -> bool:
        """True if (system, code) is in the local ValueSet. Raises UnknownValueSet."""
        return self.terminology.contains(valueset_url, system, code)

    # --- validation ---------------------------------------------------------------------------
    def implement(self, key: str, predicate: Callable[[Any, Mapping[str, Any]], bool]) -> None:
        """Evaluate the invariant `key` with predicate(value, resource) instead of its FHIRPath:
        for an invariant whose meaning code elsewhere defines (the clinical rules' reading of
        a body site's side), so that the validator and that code cannot disagree. Setting the
        same predicate again is harmless; the predicate must be pure and thread-safe."""
        self.natives[key] = predicate

    def validate(self, resource: Mapping[str, Any], profile_url: str | None = None, *,
                 unknown_profile: str = "error") -> list[Issue]:
        """Validate against profile_url, or else against every profile in meta.profile.

        Returns the issues ([] when valid); errors and warnings both appear, see has_errors().
        A profile this package does not hold is reported as a `not-supported` issue with
        severity `unknown_profile` ("error" or "warning"); base R4 definitions
        (http://hl7.org/fhir/StructureDefinition/<Type>) are accepted without checks, since
        base validation is done by the R4 model. Never raises for bad content.
        """
        resource_type = resource.get("resourceType") if isinstance(resource, Mapping) else None
        if not isinstance(resource_type, str):
            return [Issue("error", "structure", "Not a FHIR resource: no resourceType", ())]
        if profile_url:
            claims = [(strip_version(profile_url), resource_type)]
        else:
            meta = resource.get("meta") or {}
            claims = [(strip_version(str(p)), f"{resource_type}.meta.profile[{i}]")
                      for i, p in enumerate(meta.get("profile") or ())]
        issues: list[Issue] = []
        for url, where in claims:
            for issue in self._validate_one(resource, resource_type, url, where, unknown_profile):
                if issue not in issues:
                    issues.append(issue)
        return issues

    def _validate_one(self, resource: Mapping[str, Any], resource_type: str, url: str,
                      where: str, unknown_profile: str) -> list[Issue]:
        tree = self._trees.get(url)
        profile_type = self.type_of(url)
        if tree is None and url == BASE_SD + resource_type:
            return []
        if tree is None or profile_type is None:
            return [Issue(unknown_profile, "not-supported",
                          f"Profile {url} is not known to this server", (where,))]
        if profile_type != resource_type:
            return [Issue("error", "invalid", f"Profile {url} constrains {profile_type}, "
                          f"not {resource_type}", (where,))]
        return Walker(self, resource).run(tree)


def has_errors(issues: Iterable[Issue]) -> bool:
    """True if any issue is an error or fatal (warnings and information do not reject)."""
    return any(i.severity in ("error", "fatal") for i in issues)
