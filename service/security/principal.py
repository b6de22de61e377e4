"""Who is asking: the principal made once from a verified token at the edge, then handed down
as a plain value (no web framework here)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from service.security.scopes import Scope, parse_scopes


class Reach(enum.Enum):
    """How far a principal may go with one action on one type."""

    NONE = 0        # refused
    PATIENT = 1     # only inside the compartment of the token's patient
    ALL = 2         # any patient's data


@dataclass(frozen=True)
class Principal:
    """The subject of a verified token: `sub`, the client (`client_id`/`azp`), its resource
    scopes, the launch-context patient (`patient` claim) and `fhirUser` when given."""

    subject: str
    client_id: str | None = None
    scopes: tuple[Scope, ...] = ()
    scope_text: str = ""
    patient: str | None = None
    fhir_user: str | None = None
    claims: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_claims(cls, claims: dict[str, object]) -> Principal:
        """The principal of a verified token's claims (sub is required by the verifier)."""
        scope = claims.get("scope") if claims.get("scope") is not None else claims.get("scp")
        text = " ".join(scope) if isinstance(scope, list) else str(scope or "")
        client = claims.get("client_id") or claims.get("azp")
        patient = claims.get("patient")
        fhir_user = claims.get("fhirUser")
        return cls(subject=str(claims["sub"]), client_id=str(client) if client else None,
                   scopes=parse_scopes(text), scope_text=text,
                   patient=str(patient) if patient else None,
                   fhir_user=str(fhir_user) if fhir_user else None, claims=dict(claims))

    def reach(self, action: str, res_type: str) -> Reach:
        """How far this principal may do action (c r u d s) on res_type: a system/ or user/
        scope reaches every patient; a patient/ scope only its patient's compartment (and
        nothing without a patient claim)."""
        best = Reach.NONE
        for scope in self.scopes:
            if not scope.grants(action, res_type):
                continue
            if scope.context != "patient":
                return Reach.ALL
            if self.patient:
                best = Reach.PATIENT
        return best

    def reaches_everything(self, action: str) -> bool:
        """Whether a system/ or user/ wildcard scope grants action on every (unprotected) type."""
        return any(s.context != "patient" and s.res_type == "*" and action in s.actions for s in self.scopes)


SERVICE = Principal(subject="toh-service", client_id="toh-service")
"""The service itself, the agent of the writes it makes on its own (Flags, plans, Tasks)."""
