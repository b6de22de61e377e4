"""Parsing and validating FHIR R4 JSON: the one module that imports fhir.resources.

fhir.resources has no R4 package, so content is validated with its R4B models, which
match R4 for every type the service reasons about. The R4 types that R4B replaced
(MedicinalProduct*, Substance* details, the evidence syntheses) or redefined
(Evidence, EvidenceVariable) are checked against their R4 StructureDefinitions
(service.fhir.r4_structures: elements, cardinality, JSON kinds, data types). fhir.resources does not check
codes, so every resource is also checked against R4's own required bindings
(service.fhir.required_codes).
"""
from __future__ import annotations

import typing
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import pydantic
import uuid_utils
from fhir.resources.R4B import get_fhir_model_class

from service.fhir import required_codes
from service.fhir.content import parse_json
from service.fhir.errors import BadRequest, Issue, NotFound, Unprocessable
from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.fhir.references import is_id


# The resource types an EHR sends in a patient's record (US Core's and Synthea's) and those the
# service writes itself: the service's gunicorn worker builds their models before it takes its
# first request (warm_models, from service.gunicorn_worker).
ROUTINE_TYPES: tuple[str, ...] = (
    "AllergyIntolerance", "AuditEvent", "CarePlan", "CareTeam", "Claim", "Communication", "Condition",
    "Device", "DiagnosticReport", "DocumentReference", "Encounter", "ExplanationOfBenefit", "Flag", "Goal",
    "ImagingStudy", "Immunization", "Location", "Medication", "MedicationAdministration",
    "MedicationRequest", "MedicationStatement", "Observation", "Organization", "Patient", "Practitioner",
    "PractitionerRole", "Procedure", "Provenance", "ServiceRequest", "Subscription", "Task")


# R4 types whose R4B model was redefined, so R4 content would be wrongly rejected by it.
R4B_REDEFINED = frozenset({"Evidence", "EvidenceVariable"})


def r4_only_types() -> frozenset[str]:
    """The R4 resource types that have no R4B model, or one R4B redefined: checked against
    their R4 StructureDefinitions (service.fhir.r4_structures) instead."""
    return frozenset(t for t in R4_RESOURCE_TYPES if t in R4B_REDEFINED or _model(t) is None)


def check_type(resource_type: str) -> str:
    """Return resource_type if it is an R4 resource type; raises NotFound otherwise."""
    if resource_type not in R4_RESOURCE_TYPES:
        raise NotFound(f"Unknown resource type '{resource_type}'", code="not-supported")
    return resource_type


def extension_string(resource: dict[str, Any] | None, url: str) -> str | None:
    """The valueString of a resource's first top-level extension with this url, if any."""
    for ext in (resource or {}).get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == url and isinstance(ext.get("valueString"), str):
            return str(ext["valueString"])
    return None


__all__ = ["check_id", "check_type", "extension_string", "is_addressable_id", "parse_json", "validate", "warm_models"]


def is_addressable_id(resource_id: str) -> bool:
    """Whether resource_id is a FHIR id ([A-Za-z0-9-.]{1,64}) that a URL can address: the
    pattern allows '.' and '..', but URL resolution removes them (RFC 3986 section 5.2.4)."""
    return is_id(resource_id) and resource_id not in (".", "..")


def check_id(resource_id: str) -> str:
    """Return resource_id if it is a valid, addressable FHIR id; raises BadRequest otherwise."""
    if not is_addressable_id(resource_id):
        raise BadRequest(f"{resource_id!r} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}}, not '.' or '..')")
    return resource_id


def new_id() -> str:
    """A new resource id (also an AuditEvent's): a UUID of version 7 (RFC 9562, section 5.7), 36
    characters, a valid FHIR id (https://hl7.org/fhir/R4/datatypes.html#id).

    Its first 48 bits are the Unix time in milliseconds, the other 74 (after version and variant)
    random, counting up among the ids a process makes within one millisecond, so ids made later
    sort after earlier ones. The store's B-tree indexes keyed by id
    (resources, versions, and every reference to a new resource in the search index) then take
    each new id at the end of its range, not at a random leaf: a 186-resource transaction
    Bundle wrote 881 pages to SQLite's WAL, under its write lock, instead of 1,074 with random
    (version 4) ids (issue 11; bench/RESULTS.md, "The write lock, fifth round"). An id tells when the resource was created, to the millisecond,
    which its meta.lastUpdated says anyway; the random bits keep ids unguessable. Made by the
    uuid-utils package (Rust's uuid crate): ids made within one millisecond count up from a
    random start rather than push the timestamp ahead (the uuid6 package's uuid7 added a
    millisecond per id, so a busy worker's ids ran seconds into the future), and it needs no
    system call per id. Python 3.14 has uuid.uuid7."""
    return str(uuid_utils.uuid7())


@lru_cache(maxsize=None)
def _model(resource_type: str) -> type[Any] | None:
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None


def warm_models(resource_types: Iterable[str] = ROUTINE_TYPES) -> int:
    """Build the R4(B) models of resource_types and of every element type they reach, now.

    fhir.resources imports a model's module, and pydantic builds its validator, the first time
    content of that type is validated: about 0.35 s spread over a worker's first bundle, which
    the first EHR to write after a start would wait for. The service's gunicorn worker calls
    this once the application is loaded, before it accepts connections; one-off commands do
    not (they would pay for models they never use). Idempotent and cheap once done (the
    models are cached per process). Returns how many model classes the types reach (165 for
    ROUTINE_TYPES, built in 0.3-0.6 s)."""
    return _warm(tuple(sorted(set(resource_types))))


@lru_cache(maxsize=8)
def _warm(resource_types: tuple[str, ...]) -> int:
    seen: set[type[Any]] = set()
    todo = [m for m in (_model(t) for t in resource_types if t not in R4B_REDEFINED) if m is not None]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo.extend(t.get_model_klass() for t in _element_types(field.annotation))
    return len(seen)


def _element_types(annotation: Any) -> Iterable[Any]:
    """The fhir_core element types (classes with get_model_klass) inside a field's annotation."""
    if hasattr(annotation, "get_model_klass"):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _element_types(arg)


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        else:
            path += f".{part}"
    return path


def validate(resource: dict[str, Any], expected_type: str | None = None) -> str:
    """Check resource against the R4 model and return its type.

    Raises BadRequest for a missing or unexpected resourceType or id, NotFound for an
    unknown type and Unprocessable (one issue per problem, with its FHIRPath) for content
    that the model rejects or codes that a required R4 binding does not allow.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("The resource has no resourceType", code="structure")
    if expected_type is not None and resource_type != expected_type:
        raise BadRequest(f"resourceType '{resource_type}' does not match the URL's type '{expected_type}'")
    check_type(resource_type)
    if "id" in resource and (not isinstance(resource["id"], str) or not is_addressable_id(resource["id"])):
        raise BadRequest(f"'{resource['id']}' is not a valid FHIR id", expression=[f"{resource_type}.id"])
    issues = _model_issues(resource, resource_type)
    located = {e for issue in issues for e in issue.expression}
    issues += [i for i in required_codes.check(resource, resource_type) if i.expression[0] not in located]
    if issues:
        raise Unprocessable(issues[0].diagnostics, issues=issues)
    return resource_type


def _model_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    """One issue per problem the R4(B) model finds; the types R4B lacks or redefined are
    checked against their R4 StructureDefinitions (service.fhir.r4_structures)."""
    model = None if resource_type in R4B_REDEFINED else _model(resource_type)
    if model is None:
        from service.fhir.r4_structures import structure_issues
        return structure_issues(resource, _validate_nested)
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        return [Issue("error", "structure" if e["type"] == "extra_forbidden" else "value",
                      f"{_fhirpath(resource_type, e['loc'])}: {e['msg']}".split("\n")[0],
                      (_fhirpath(resource_type, e["loc"]),))
                for e in exc.errors()]
    return []


def _validate_nested(resource: dict[str, Any]) -> None:
    validate(resource)
