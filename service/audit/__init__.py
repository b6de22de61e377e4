"""The audit trail and Provenance: BALP AuditEvents built from a plain description of an
interaction, and the before-commit step that records who wrote each version."""
from __future__ import annotations

from service.audit.events import Interaction, audit_event
from service.audit.provenance import ProvenanceStep, provenance

__all__ = ["Interaction", "ProvenanceStep", "audit_event", "provenance"]
