"""What a principal may do, applied to requests and the resources they touch. No web framework
and no database here: the REST views and the bundle processor ask, the guard answers or raises
Forbidden.

    guard = AccessGuard(principal, owners)       # owners(resource) -> ids of its patients
    guard.require("r", "CarePlan")               # -> Reach.ALL / Reach.PATIENT, or Forbidden
    guard.check("u", "Task", task_json)          # also: in the token patient's compartment?
    guard.search_compartment("Observation", None)  # the compartment a search must keep to

A `patient/` scope reaches only the Patient compartment of the token's patient (R4's
CompartmentDefinition: the Patient itself and the resource types it lists, through their
linking parameters); types outside that compartment are refused in a patient context.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from service.fhir.canonical import EXT_SUBSCRIPTION_OWNER
from service.fhir.errors import Forbidden
from service.fhir.resources import extension_string
from service.security.principal import Principal, Reach

ACTION_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
Owners = Callable[[dict[str, Any]], set[str]]
Content = dict[str, Any] | Callable[[], dict[str, Any] | None] | None   # a resource, or how to get it
# Types whose resources belong to whoever made them: only the owner, or an administrator (a
# system/ scope on the type), reads or changes one. The owner is the token's subject, kept in
# the resource's subscription-owner extension.
OWNED_TYPES = frozenset({"Subscription"})


def owner_of(resource: dict[str, Any] | None) -> str | None:
    """The owner an owned resource names, if any."""
    return extension_string(resource, EXT_SUBSCRIPTION_OWNER)


class AccessGuard:
    """The access decisions of one request's principal (see module docstring)."""

    def __init__(self, principal: Principal, owners: Owners, compartment_types: Collection[str]) -> None:
        self.principal = principal
        self.owners = owners
        types = frozenset(compartment_types)
        self.compartment_types = types if "Patient" in types else types | {"Patient"}

    def reach(self, action: str, res_type: str) -> Reach:
        """How far the principal reaches for action on res_type (never raises)."""
        reach = self.principal.reach(action, res_type)
        if reach is Reach.PATIENT and res_type not in self.compartment_types:
            return Reach.NONE
        return reach

    def require(self, action: str, res_type: str) -> Reach:
        """The principal's reach for action on res_type; raises Forbidden if it has none."""
        reach = self.reach(action, res_type)
        if reach is Reach.NONE:
            if self.principal.reach(action, res_type) is Reach.PATIENT:
                raise Forbidden(f"{res_type} is outside the Patient compartment, which a patient/ scope "
                                "is limited to")
            raise Forbidden(f"The token's scopes do not allow {ACTION_NAMES[action]} of {res_type}",
                            scope=f"user/{res_type}.{action}")
        return reach

    def administers(self, res_type: str) -> bool:
        """Whether the principal may reach every owner's resources of an owned type: a system/
        scope granting read on it (the EHR's `system/*.cruds`, the admin role)."""
        return any(s.context == "system" and s.grants("r", res_type) for s in self.principal.scopes)

    def owns(self, res_type: str, resource: dict[str, Any] | None) -> bool:
        """Whether the principal may touch this resource as its owner (always true for types
        that are not owned, and for an administrator)."""
        if res_type not in OWNED_TYPES or self.administers(res_type):
            return True
        return resource is not None and owner_of(resource) == self.principal.subject

    def claim(self, res_type: str, resource: dict[str, Any]) -> None:
        """Make the principal the owner of a resource it writes. An administrator's writes keep
        the owner the resource names, or none (the site's own, which only administrators see).
        Other types are left as they are."""
        if res_type not in OWNED_TYPES or self.administers(res_type):
            return
        kept = [e for e in resource.get("extension") or ()
                if not (isinstance(e, dict) and e.get("url") == EXT_SUBSCRIPTION_OWNER)]
        resource["extension"] = [*kept, {"url": EXT_SUBSCRIPTION_OWNER, "valueString": self.principal.subject}]

    def checks_existing(self, action: str, res_type: str) -> bool:
        """Whether a write must also check the version it replaces (a patient context, or an
        owned type written by one who is not an administrator)."""
        return (self.require(action, res_type) is Reach.PATIENT
                or (res_type in OWNED_TYPES and not self.administers(res_type)))

    def visible(self, res_type: str, resource: dict[str, Any] | None, action: str = "r") -> bool:
        """Whether action on this resource is allowed (type scope, ownership of an owned type
        and, in a patient context, the resource is in the patient's compartment); never raises."""
        if res_type in OWNED_TYPES and not self.owns(res_type, resource):
            return False
        reach = self.reach(action, res_type)
        if reach is Reach.ALL:
            return True
        return reach is Reach.PATIENT and resource is not None and self.principal.patient in self.owners(resource)

    def check(self, action: str, res_type: str, resource: Content) -> None:
        """Raise Forbidden unless action on resource is allowed. resource is the JSON (or a
        function giving it, called only in a patient context, where the compartment decides, and
        for an owned type, where its owner decides)."""
        if res_type in OWNED_TYPES and not self.administers(res_type):
            self.require(action, res_type)
            content = resource() if callable(resource) else resource
            if not self.owns(res_type, content):
                raise Forbidden(f"This {res_type} belongs to someone else: only its owner or an administrator "
                                "may read or change it")
        if self.require(action, res_type) is not Reach.PATIENT:
            return
        content = resource() if callable(resource) else resource
        if content is None or self.principal.patient not in self.owners(content):
            raise Forbidden(f"This {res_type} is not in the compartment of the token's patient")

    def search_compartment(self, res_type: str | None, compartment: tuple[str, str] | None,
                           action: str = "s") -> tuple[str, str] | None:
        """The compartment a search of res_type (None: a compartment-wide search) must be kept
        to: the asked one, or in a patient context the token's patient's. Raises Forbidden for
        a type it cannot search or another patient's compartment."""
        patient = self.principal.patient
        if res_type is not None and self.require(action, res_type) is Reach.ALL:
            return compartment
        if res_type is None and compartment is not None and compartment[0] == "Patient" \
                and self.reach("r", "Patient") is Reach.ALL:
            return compartment
        if compartment is None:
            return ("Patient", str(patient))
        if compartment != ("Patient", patient):
            raise Forbidden("A patient/ scope reaches only the compartment of the token's patient")
        return compartment

    def readable_types(self, types: Collection[str], action: str = "s") -> tuple[str, ...]:
        """Those of types the principal may search (in whatever reach), in their order."""
        return tuple(t for t in types if self.reach(action, t) is not Reach.NONE)

    def require_everything(self, action: str) -> None:
        """Raise Forbidden unless a system/ or user/ wildcard scope grants action on every type
        (system-wide history spans every type and patient)."""
        if not self.principal.reaches_everything(action):
            raise Forbidden(f"Only a token with user/*.{action} or system/*.{action} may do this across all types")
