"""The patient's resources out of a hook call's prefetch (CDS Hooks 2.0, "Prefetch Template":
a key the EHR could not or would not satisfy is absent; a key with no data is null).

    read_prefetch(prefetch, patient_id) -> (resources, the templates still to be read)

A Bundle gives its entries' resources (an OperationOutcome entry is left out); a single
resource gives itself. Only resources about the patient are kept (subject or patient names
`Patient/<id>`, relative or absolute), and the Medications an order names: what the EHR sends
for another patient is never read as this one's.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .services import TEMPLATES, Template

PATIENT_ELEMENTS = ("subject", "patient")


def names_patient(resource: Mapping[str, Any], patient_id: str) -> bool:
    """True when the resource's subject or patient is Patient/<patient_id> (any base, any version)."""
    for element in PATIENT_ELEMENTS:
        value = resource.get(element)
        text = value.get("reference") if isinstance(value, dict) else None
        if not isinstance(text, str):
            continue
        path = text.split("/_history/")[0].rstrip("/")
        if path == f"Patient/{patient_id}" or path.endswith(f"/Patient/{patient_id}"):
            return True
    return False


def patients_resources(resources: Iterable[Any], patient_id: str) -> list[dict[str, Any]]:
    """The resources about the patient, plus every Medication (orders name them)."""
    return [r for r in resources if isinstance(r, dict) and (
        r.get("resourceType") == "Medication" or names_patient(r, patient_id))]


def bundle_resources(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries (no OperationOutcome), or [value] for a resource."""
    if value.get("resourceType") != "Bundle":
        return [dict(value)]
    found = []
    for entry in value.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
            found.append(resource)
    return found


def read_prefetch(prefetch: Mapping[str, Any], patient_id: str) -> tuple[list[dict[str, Any]], list[Template]]:
    """(the patient's resources under the keys the EHR sent, the templates it did not send)."""
    found: list[dict[str, Any]] = []
    missing: list[Template] = []
    for template in TEMPLATES:
        if template.key not in prefetch:
            missing.append(template)
            continue
        value = prefetch[template.key]
        if value is not None:
            found.extend(patients_resources(bundle_resources(value), patient_id))
    return found, missing
