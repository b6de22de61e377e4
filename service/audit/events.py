"""AuditEvents after IHE Basic Audit Log Patterns (BALP, https://profiles.ihe.net/ITI/BALP/):
one per FHIR interaction, built as plain JSON from a plain description of what happened.

    audit_event(Interaction(...), event_id, recorded) -> the AuditEvent resource

Type `rest` (DICOM/HL7 audit-event-type), subtype the RESTful interaction
(http://hl7.org/fhir/restful-interaction), action C/R/U/D/E, outcome 0/4/8 (success, minor
failure = the client's 4xx, serious failure = our 5xx), the agents (the token's subject and
its client, with the scopes as policy; the service as the server), the source (this
service), the network address, and the entities (the resource with its version; a search's
query, base64 as BALP says; the patient).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from service.security import Principal

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition"
AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SERVICE_NAME = "toh-service"

# restful-interaction -> AuditEvent.action (BALP: create C, read/vread/search/history R, ...)
ACTIONS = {"create": "C", "read": "R", "vread": "R", "search-type": "R", "search-system": "R",
           "history-instance": "R", "history-type": "R", "history-system": "R", "update": "U",
           "patch": "U", "delete": "D", "operation": "E", "batch": "E", "transaction": "E",
           "capabilities": "R"}
_PROFILES = {"C": "IHE.BasicAudit.Create", "R": "IHE.BasicAudit.Read", "U": "IHE.BasicAudit.Update",
             "D": "IHE.BasicAudit.Delete", "E": "IHE.BasicAudit.Execute"}
_QUERY_PROFILE = "IHE.BasicAudit.Query"


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def event_json(event: dict[str, Any]) -> str:
    """An AuditEvent as the compact JSON text the audit table keeps (its `content` column).

    orjson, about fifteen times faster than the json module on an event (a read's AuditEvent,
    ~2 KB: 1.6 against 25 us; bench/RESULTS.md, "Where a read's time goes"); non-ASCII text as
    UTF-8. A string orjson refuses (a lone surrogate, from a hostile token or URL) is written
    by the json module instead, as a \\uXXXX escape. Raises TypeError for a value neither
    can write (not JSON)."""
    try:
        return orjson.dumps(event).decode()
    except orjson.JSONEncodeError:
        return _COMPACT.encode(event)


def outcome_code(status: int) -> str:
    """AuditEvent.outcome for an HTTP status: 0 success, 4 the client's error, 8 ours."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


@dataclass(frozen=True)
class Interaction:
    """What happened, as the edge saw it (no framework types)."""

    subtype: str                         # restful-interaction code
    status: int                          # the HTTP status answered
    principal: Principal | None          # None when the token was missing or refused
    address: str | None = None           # the client's network address
    entity: str | None = None            # Type/id[/_history/v] acted on
    query: str | None = None             # a search's query string
    patient: str | None = None           # the patient's id, when there is one
    operation: str | None = None         # $name of an operation
    description: str | None = None       # why it failed (no PHI: the OperationOutcome's text)
    request_id: str | None = None
    source: str = SERVICE_NAME
    extra_entities: tuple[str, ...] = field(default=())

    @property
    def action(self) -> str:
        return ACTIONS.get(self.subtype, "E")

    @property
    def outcome(self) -> str:
        return outcome_code(self.status)


def audit_event(what: Interaction, event_id: str, recorded: datetime) -> dict[str, Any]:
    """The BALP AuditEvent of one interaction (see module docstring)."""
    profile = _QUERY_PROFILE if what.subtype.startswith("search") else _PROFILES[what.action]
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": event_id,
        "meta": {"profile": [f"{BALP}/{profile}"]},
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": INTERACTION, "code": what.subtype}],
        "action": what.action,
        "recorded": recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": what.outcome,
        "agent": _agents(what),
        "source": {"site": what.source, "observer": {"display": SERVICE_NAME},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    if what.operation:
        event["subtype"].append({"system": "urn:toh:operation", "code": what.operation})
    if what.outcome != "0":
        event["outcomeDesc"] = f"HTTP {what.status}" + (f": {what.description}" if what.description else "")
    entities = _entities(what)
    if entities:
        event["entity"] = entities
    return event


def _agents(what: Interaction) -> list[dict[str, Any]]:
    who = what.principal
    client: dict[str, Any] = {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                              "requestor": True}
    if who is None:
        client["who"] = {"display": "anonymous (no accepted token)"}
    else:
        client["who"] = {"identifier": {"value": who.subject}, "display": who.subject}
        if who.fhir_user:
            client["who"]["reference"] = who.fhir_user
        if who.client_id:
            client["altId"] = who.client_id
        if who.scope_text:
            client["policy"] = [f"urn:smart:scope:{s}" for s in who.scope_text.split()]
    if what.address:
        client["network"] = {"address": what.address, "type": "2"}
    server = {"type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
              "who": {"display": SERVICE_NAME}, "requestor": False}
    agents = [client, server]
    if who is not None and who.client_id:
        agents.insert(1, {"type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                          "who": {"identifier": {"value": who.client_id}, "display": who.client_id},
                          "requestor": False})
    return agents


def _entities(what: Interaction) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    for reference in (what.entity, *what.extra_entities):
        if reference:
            entities.append({"what": {"reference": reference},
                             "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                             "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
    if what.query is not None:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "query": base64.b64encode(what.query.encode()).decode()})
    if what.patient:
        entities.append({"what": {"reference": f"Patient/{what.patient}"},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if what.request_id:
        entities.append({"what": {"identifier": {"system": "urn:toh:request-id", "value": what.request_id}},
                         "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                         "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"}})
    return entities


CDS_FEEDBACK = "https://cds-hooks.hl7.org/2.0#feedback"
APPLICATION_ACTIVITY = {"system": DCM, "code": "110100", "display": "Application Activity"}


def cds_feedback_event(service_id: str, card: str, outcome: str, outcome_timestamp: str, event_id: str,
                       recorded: datetime, *, issuer: str, subject: str | None = None,
                       accepted_suggestions: tuple[str, ...] = (), reason: dict[str, Any] | None = None,
                       user_comment: str | None = None, address: str | None = None,
                       source: str = SERVICE_NAME) -> dict[str, Any]:
    """The AuditEvent of one CDS Hooks feedback item (CDS Hooks 2.0, "Feedback"): what the
    clinician did with a card of `service_id`. type DCM 110100 Application Activity, subtype
    the outcome (accepted | overridden), action E, outcome 0; the agent is the EHR (the JWT's
    `iss`, and its `sub` when given); the entity is the card (its uuid), with the accepted
    suggestions, the override reason (a Coding, as JSON) and the clinician's comment as details."""
    details: list[dict[str, Any]] = [{"type": "outcomeTimestamp", "valueString": outcome_timestamp}]
    details += [{"type": "acceptedSuggestion", "valueString": s} for s in accepted_suggestions]
    if reason:
        details.append({"type": "overrideReason", "valueString": json.dumps(reason, sort_keys=True)})
    if user_comment:
        details.append({"type": "userComment", "valueString": user_comment})
    ehr: dict[str, Any] = {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                           "who": {"identifier": {"system": "urn:ietf:params:oauth:jwt:iss", "value": issuer},
                                   "display": issuer}, "requestor": True}
    if subject:
        ehr["altId"] = subject
    if address:
        ehr["network"] = {"address": address, "type": "2"}
    return {
        "resourceType": "AuditEvent", "id": event_id,
        "type": APPLICATION_ACTIVITY,
        "subtype": [{"system": CDS_FEEDBACK, "code": outcome}, {"system": "urn:toh:cds-service", "code": service_id}],
        "action": "E",
        "recorded": recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": "0",
        "agent": [ehr, {"type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
                        "who": {"display": SERVICE_NAME}, "requestor": False}],
        "source": {"site": source, "observer": {"display": SERVICE_NAME},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
        "entity": [{"what": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{card}"}},
                    "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                    "description": f"CDS Hooks card of {service_id}", "detail": details}],
    }


USER_AUTHENTICATION = {"system": DCM, "code": "110114", "display": "User Authentication"}
LOGIN = {"system": DCM, "code": "110122", "display": "Login"}


def sign_in_event(event_id: str, recorded: datetime, *, status: int, method: str, principal: Principal | None,
                  address: str | None = None, description: str | None = None, request_id: str | None = None,
                  source: str = SERVICE_NAME) -> dict[str, Any]:
    """The AuditEvent of one attempt to sign in to the staff pages (DICOM "User
    Authentication" 110114, subtype "Login" 110122, action E): outcome 0 when a session was
    started, else 4 with `description` (why, no token content) as outcomeDesc. `method` says
    how (e.g. "token" or "oidc https://idp.example"), kept as the entity's description; the
    agent is the signed-in principal, or "anonymous" when the attempt was refused."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": event_id,
        "type": USER_AUTHENTICATION, "subtype": [LOGIN], "action": "E",
        "recorded": recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome_code(status),
        "agent": _agents(Interaction(subtype="login", status=status, principal=principal, address=address)),
        "source": {"site": source, "observer": {"display": SERVICE_NAME},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
        "entity": [{"what": {"identifier": {"system": "urn:toh:sign-in", "value": method}},
                    "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                    "description": f"staff sign-in ({method})"}],
    }
    if status >= 400:
        event["outcomeDesc"] = f"HTTP {status}" + (f": {description}" if description else "")
    if request_id:
        event["entity"].append({"what": {"identifier": {"system": "urn:toh:request-id", "value": request_id}},
                                "type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                                "role": {"system": OBJECT_ROLE, "code": "3", "display": "Report"}})
    return event
