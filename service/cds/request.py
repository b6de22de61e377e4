"""The body of a hook call, read and checked (CDS Hooks 2.0, "Calling a CDS Service"; the hooks
patient-view 1.0, order-sign 1.0 and order-select 1.0 for the context fields).

    parse_hook_request(body, service) -> HookRequest, or raises BadRequest

What is checked: `hook` is the service's, `hookInstance` is a string, `fhirServer` an http(s)
URL when given, `fhirAuthorization` only with `fhirServer` (cds-r-1) and with a Bearer
`access_token`, `context.patientId` a FHIR id; order-sign and order-select need
`context.draftOrders` (a Bundle) and order-select `context.selections` (a list of "Type/id").
`prefetch` is an object whose values are resources, Bundles or null.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.fhir.errors import BadRequest
from service.fhir.references import is_id

from .services import CdsService

ORDER_HOOKS = frozenset({"order-sign", "order-select"})


@dataclass(frozen=True)
class HookRequest:
    """A hook call, as the rules need it."""

    hook: str
    hook_instance: str
    patient_id: str
    fhir_server: str | None = None
    access_token: str | None = None             # fhirAuthorization.access_token
    prefetch: dict[str, Any] = field(default_factory=dict)
    draft_orders: tuple[dict[str, Any], ...] = ()
    selections: tuple[str, ...] = ()
    user_id: str | None = None


def _bad(text: str, where: str) -> BadRequest:
    return BadRequest(text, expression=[where])


def parse_hook_request(body: Any, service: CdsService) -> HookRequest:
    """The HookRequest of a JSON body sent to `service`; raises BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("A hook call's body is a JSON object")
    if body.get("hook") != service.hook:
        raise _bad(f"{service.id} answers the {service.hook} hook, not {body.get('hook')!r}", "hook")
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance:
        raise _bad("hookInstance must be a string (a UUID)", "hookInstance")
    server = body.get("fhirServer")
    if server is not None and (not isinstance(server, str) or not server.startswith(("https://", "http://"))):
        raise _bad("fhirServer must be an http(s) URL", "fhirServer")
    token = None
    authorization = body.get("fhirAuthorization")
    if authorization is not None:
        if server is None:
            raise _bad("fhirAuthorization needs fhirServer (cds-r-1)", "fhirAuthorization")
        if not isinstance(authorization, dict) or not isinstance(authorization.get("access_token"), str) \
                or str(authorization.get("token_type", "")).lower() != "bearer":
            raise _bad("fhirAuthorization needs an access_token of token_type Bearer", "fhirAuthorization")
        token = authorization["access_token"]
    context = body.get("context")
    if not isinstance(context, dict):
        raise _bad("context must be an object", "context")
    patient = context.get("patientId")
    if not isinstance(patient, str) or not is_id(patient):
        raise _bad("context.patientId must be a FHIR id", "context.patientId")
    prefetch = body.get("prefetch") or {}
    if not isinstance(prefetch, dict) or any(v is not None and not isinstance(v, dict) for v in prefetch.values()):
        raise _bad("prefetch must be an object whose values are FHIR resources or null", "prefetch")
    drafts: tuple[dict[str, Any], ...] = ()
    selections: tuple[str, ...] = ()
    if service.hook in ORDER_HOOKS:
        drafts = _draft_orders(context.get("draftOrders"))
    if service.hook == "order-select":
        chosen = context.get("selections")
        if not isinstance(chosen, list) or not all(isinstance(s, str) for s in chosen):
            raise _bad("context.selections must be a list of 'Type/id'", "context.selections")
        selections = tuple(chosen)
    user = context.get("userId")
    return HookRequest(service.hook, instance, patient, server, token, prefetch, drafts, selections,
                       user if isinstance(user, str) else None)


def _draft_orders(bundle: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _bad("context.draftOrders must be a Bundle", "context.draftOrders")
    found = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise _bad("every entry of context.draftOrders holds a resource", "context.draftOrders")
        found.append(resource)
    return tuple(found)
