"""SMART App Launch scopes (https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html)
and the roles this service ships as scope sets.

    parse_scopes("user/CarePlan.rs patient/Observation.read launch openid")
        -> (Scope('user', 'CarePlan', 'rs'), Scope('patient', 'Observation', 'rs'))

v2 scopes name the interactions by letter, in the order c r u d s and any subset of it
(`user/CarePlan.rs`, `system/Task.u`, `patient/*.cruds`); v1 scopes say `read` (= rs),
`write` (= cud) or `*` (= cruds). Anything else in the scope claim (openid, launch,
fhirUser, offline_access, malformed entries) grants nothing. The context decides whose data:
`system/` and `user/` reach every patient, `patient/` only the compartment of the patient
in the token's `patient` claim.

The audit trail is kept apart: a wildcard type (`*`) does not reach AuditEvent, which only a
scope naming it grants (so the EHR's `system/*.cruds` does not read who-read-what).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

ACTIONS = "cruds"
CONTEXTS = ("system", "user", "patient")
PROTECTED_TYPES = frozenset({"AuditEvent"})   # not reached by a wildcard
_SCOPE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]{1,63})\.(\*|read|write|c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": ACTIONS}


@dataclass(frozen=True)
class Scope:
    """One resource scope: context (system/user/patient), resource type or '*', actions 'cruds'."""

    context: str
    res_type: str
    actions: str

    def grants(self, action: str, res_type: str) -> bool:
        """Whether this scope allows action (one of c r u d s) on res_type."""
        if action not in self.actions:
            return False
        if self.res_type == "*":
            return res_type not in PROTECTED_TYPES
        return self.res_type == res_type


def parse_scope(text: str) -> Scope | None:
    """One scope string as a Scope, or None for what is not a resource scope."""
    match = _SCOPE.match(text)
    if match is None or match.group(3) == "":
        return None
    context, res_type, actions = match.groups()
    return Scope(context, res_type, _V1.get(actions, actions))


def parse_scopes(claim: str | list[str] | None) -> tuple[Scope, ...]:
    """Every resource scope of a token's `scope` claim (space-separated text, or a list)."""
    if claim is None:
        return ()
    if isinstance(claim, str):
        return _parse_text(claim)
    return tuple(scope for scope in (parse_scope(s) for s in claim if isinstance(s, str)) if scope is not None)


@lru_cache(maxsize=1024)
def _parse_text(claim: str) -> tuple[Scope, ...]:
    """parse_scopes of a space-separated claim, kept: a client sends the same token, and so the
    same claim, with every request (Scopes are immutable)."""
    return tuple(scope for scope in (parse_scope(s) for s in claim.split()) if scope is not None)


# The roles, as the scope sets `toh token --role` puts in a token (README lists them).
CLINICAL_READ = ("Patient", "Condition", "Observation", "MedicationRequest", "Medication", "CarePlan",
                 "Task", "Flag", "Provenance", "PlanDefinition", "Practitioner", "Organization",
                 "Encounter", "DiagnosticReport")
ROLES: dict[str, tuple[str, ...]] = {
    # EHR integration: read and write clinical data and Subscriptions (not the audit trail).
    "ehr": ("system/*.cruds",),
    # Clinic staff: read clinical data, update Tasks and Flags, manage Subscriptions.
    "staff": ("user/*.rs", "user/Task.u", "user/Flag.u", "user/Subscription.cruds"),
    # Auditors: plans, tasks, flags, the audit trail and the clinical data they point to; no writes.
    "auditor": tuple(f"user/{t}.rs" for t in CLINICAL_READ) + ("user/AuditEvent.rs",),
    # Administrators: read clinical data, manage everyone's Subscriptions, handle the Flags
    # (delivery failures) and Tasks.
    "admin": ("user/*.rs", "user/Task.u", "user/Flag.u", "system/Subscription.cruds"),
}
