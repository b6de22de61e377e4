"""GET [base]/metadata: a CapabilityStatement generated from what the app implements.

Interactions come from the REST table, operations from the registered `$` routes,
search parameters from the search engine and profiles from the loaded conformance
resources; nothing here is written by hand per type.
"""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, Response, current_app

from service.api.context import FHIR_PREFIX, base_url, services
from service.api.negotiation import json_response
from service.api.rest import INTERACTIONS, conditional_update as conditional_update_view
from service.fhir.canonical import IG
from service.fhir.r4_types import R4_RESOURCE_TYPES

bp = Blueprint("fhir_metadata", __name__)
_OPERATION = re.compile(r"/\$([A-Za-z][\w-]*)")


def _software_version() -> str:
    try:
        return version("toh-service")
    except PackageNotFoundError:
        return "0+unknown"


# Bulk Data's status and file URLs are routed like operations but are not ones.
_NOT_OPERATIONS = frozenset({"export-status", "export-file"})
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
_BULK_EXPORT = {"*": "export", "Patient": "patient-export", "Group": "group-export"}


def _operations() -> dict[str, set[str]]:
    """Operation name -> resource types it is routed for ('*' for any type, 'system' for the
    system level, e.g. /$export)."""
    found: dict[str, set[str]] = {}
    for rule in current_app.url_map.iter_rules():
        match = _OPERATION.search(rule.rule)
        if match and rule.rule.startswith(FHIR_PREFIX) and match.group(1) not in _NOT_OPERATIONS:
            parts = rule.rule.split("/")
            if len(parts) > 2 and parts[2].startswith("$"):
                res_type = "system"
            else:
                res_type = parts[2] if len(parts) > 2 and not parts[2].startswith("<") else "*"
            found.setdefault(match.group(1), set()).add(res_type)
    return found


# FHIR's own operations; the rest are the TOH guide's.
_FHIR_OPERATIONS = {"validate": "Resource-validate", "everything": "Patient-everything",
                    "apply": "PlanDefinition-apply"}


def _operation_definition(res_type: str, name: str) -> str:
    if name == "export":   # Bulk Data Access IG v2
        return f"{BULK_DATA}/OperationDefinition/{_BULK_EXPORT.get(res_type, 'export')}"
    if name in _FHIR_OPERATIONS:
        return f"http://hl7.org/fhir/OperationDefinition/{_FHIR_OPERATIONS[name]}"
    return f"{IG}/OperationDefinition/{res_type}-{name}"


def capability_statement() -> dict[str, Any]:
    """Build the CapabilityStatement for the running application."""
    svc = services()
    type_codes = list(dict.fromkeys(i.code for i in INTERACTIONS if i.level == "type"))
    system_codes = list(dict.fromkeys(i.code for i in INTERACTIONS if i.level == "system"))
    conditional_update = any(i.view is conditional_update_view for i in INTERACTIONS)
    searchable = "fhir_search" in current_app.blueprints
    profiles_by_type: dict[str, list[str]] = {}
    for url in svc.conformance.profile_urls():
        profiles_by_type.setdefault(svc.conformance.type_of(url) or "", []).append(url)
    operations = _operations()
    resources = []
    for res_type in sorted(R4_RESOURCE_TYPES):
        entry: dict[str, Any] = {
            "type": res_type,
            "interaction": [{"code": c} for c in type_codes]
            + ([{"code": "search-type"}] if searchable else []),
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": conditional_update,
            "conditionalDelete": "not-supported",
        }
        if res_type in profiles_by_type:
            entry["supportedProfile"] = sorted(profiles_by_type[res_type])
        params = svc.search.capability_params(res_type) if searchable else []
        if params:
            entry["searchParam"] = params
        ops = [{"name": name, "definition": _operation_definition(res_type, name)}
               for name, types in sorted(operations.items()) if res_type in types or "*" in types]
        if ops:
            entry["operation"] = ops
        resources.append(entry)
    rest: dict[str, Any] = {
        "mode": "server",
        "security": _security(svc.settings),
        "resource": resources,
        "interaction": [{"code": c} for c in system_codes],
    }
    system_ops = [{"name": name, "definition": _operation_definition("*", name)}
                  for name, types in sorted(operations.items()) if "system" in types]
    if system_ops:
        rest["operation"] = system_ops
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": svc.clock.now().date().isoformat(),
        "kind": "instance",
        "software": {"name": "toh-service", "version": _software_version()},
        "implementation": {"description": "TOH follow-up FHIR service", "url": base_url()},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
    if "export" in operations:
        statement["instantiates"] = [f"{BULK_DATA}/CapabilityStatement/bulk-data"]
    return statement


def _security(settings: Any) -> dict[str, Any]:
    """rest.security: SMART on FHIR bearer tokens, with the OAuth endpoints when configured
    (http://hl7.org/fhir/smart-app-launch/conformance.html)."""
    security: dict[str, Any] = {
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 bearer tokens with SMART scopes"}],
        "description": "Every request but metadata, .well-known/smart-configuration and /healthz needs "
                       "Authorization: Bearer <JWT> with SMART v1 or v2 scopes (see `toh token`).",
    }
    uris = [{"url": name, "valueUri": value} for name, value in (
        ("token", settings.token_endpoint), ("authorize", settings.authorization_endpoint)) if value]
    if uris:
        security["extension"] = [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                                  "extension": uris}]
    return security


@bp.get("/metadata")
def metadata() -> Response:
    """GET [base]/metadata."""
    return json_response(capability_statement())
