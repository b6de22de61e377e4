"""Provenance for every write (https://hl7.org/fhir/R4/provenance.html), recorded in the
writer's own transaction as a before-commit step, after the steps that write (the clinical
watch), so it sees every write of the transaction.

One Provenance per transaction and agent: the versions the client wrote (agent = the token's
subject, on behalf of its fhirUser or client), and the versions the service wrote itself while
handling them (Flags, plans, Tasks: agent = the service). Each target is the exact version
(`Type/id/_history/n`), so a resource's `_history` reads side by side with
`Provenance?target=Type/id`. The Provenance resources written here get none of their own.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from service.security import Principal
from service.store import Change, UnitOfWork

DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PROVENANCE_AGENT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
SERVICE_AGENT = {"display": "toh-service", "identifier": {"system": "urn:toh:agent", "value": "toh-service"}}


def _activity(change: Change) -> str:
    """v3-DataOperation: DELETE, CREATE for a first version (POST, or a PUT that creates), else UPDATE."""
    if change.method == "DELETE":
        return "DELETE"
    return "CREATE" if change.previous is None else "UPDATE"


def provenance(changes: Sequence[Change], principal: Principal | None, recorded: datetime) -> dict[str, Any]:
    """The Provenance of these writes by principal (None: the service itself)."""
    activities = sorted({_activity(c) for c in changes})
    agent: dict[str, Any] = {"type": {"coding": [{"system": PROVENANCE_AGENT, "code": "author"}]}}
    if principal is None:
        agent["who"] = SERVICE_AGENT
    else:
        agent["who"] = {"display": principal.subject, "identifier": {"system": "urn:toh:agent",
                                                                     "value": principal.subject}}
        if principal.fhir_user:
            agent["who"]["reference"] = principal.fhir_user
        if principal.client_id:
            agent["onBehalfOf"] = {"display": principal.client_id,
                                   "identifier": {"system": "urn:toh:client", "value": principal.client_id}}
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{c.res_type}/{c.res_id}/_history/{c.version}"} for c in changes],
        "recorded": recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": a} for a in activities]}
        if len(activities) > 1 else {"coding": [{"system": DATA_OPERATION, "code": activities[0]}]},
        "agent": [agent],
    }


class ProvenanceStep:
    """The before-commit step that records the Provenance of a transaction's writes."""

    def before_commit(self, uow: UnitOfWork) -> None:
        """Write one Provenance for the client's writes and one for the service's own."""
        if not uow.record_provenance:
            return
        changes = list(uow.changes)   # the Provenance written below are not among them
        by_client = changes[:uow.steps_started_at] if uow.principal is not None else []
        by_service = changes[len(by_client):]
        now = uow.clock.now()
        for group, who in ((by_client, uow.principal), (by_service, None)):
            if group:
                uow.repo.create(provenance(group, who, now))
