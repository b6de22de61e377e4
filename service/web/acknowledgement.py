"""Acknowledging a Flag: a clinician says "seen" without ending it (only the rules end a
rule-raised Flag, when its situation no longer holds). R4's Flag has no element for it, so it
is a workflow tag on the Flag (Resource.meta.tag, "tags are used to relate resources to
process and workflow", https://hl7.org/fhir/R4/resource.html#tags), whose display says who
and when; the update that adds it gets a new version, Provenance and an AuditEvent like any
other. Re-evaluation keeps it (the rules rewrite code, evidence and period, not meta).
Pure functions, no I/O.
"""
from __future__ import annotations

import copy
from datetime import date
from typing import Any

from service.fhir.canonical import IG

WORKFLOW_TAGS = f"{IG}/CodeSystem/toh-workflow-tags"
ACKNOWLEDGED = "acknowledged"


def acknowledged_by(flag: dict[str, Any]) -> str | None:
    """The acknowledgement tag's text ("Acknowledged by X on 2026-11-30"), or None."""
    for tag in (flag.get("meta") or {}).get("tag") or ():
        if tag.get("system") == WORKFLOW_TAGS and tag.get("code") == ACKNOWLEDGED:
            return str(tag.get("display") or "Acknowledged")
    return None


def acknowledge(flag: dict[str, Any], who: str, day: date) -> dict[str, Any]:
    """A copy of flag with the acknowledgement tag (an earlier one is replaced)."""
    result = copy.deepcopy(flag)
    meta = dict(result.get("meta") or {})
    tags = [t for t in meta.get("tag") or () if not (t.get("system") == WORKFLOW_TAGS and t.get("code") == ACKNOWLEDGED)]
    tags.append({"system": WORKFLOW_TAGS, "code": ACKNOWLEDGED,
                 "display": f"Acknowledged by {who} on {day.isoformat()}"})
    meta["tag"] = tags
    result["meta"] = meta
    return result
