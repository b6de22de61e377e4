"""Who is notified of what, and what a notification says (pure), plus the before-commit step
that puts notifications in the outbox in the writer's own transaction.

Spec followed: R4 Subscription (https://hl7.org/fhir/R4/subscription.html; `criteria` is a
search on this server, so matching is exactly the server's search, run on the changed
resources by `_id`), and the Subscriptions R4 Backport IG's notification Bundle
(http://hl7.org/fhir/uv/subscriptions-backport, "R4 Notifications"): a `history` Bundle whose
first entry is a Parameters resource in the backport-subscription-status-r4 form (status,
type, events-since-subscription-start, one notification-event with event-number, timestamp
and focus), then, for `full-resource` content, the resource as written.

Matching follows R4: every create or update whose result matches the criteria notifies (a
deletion does not); one notification per (subscription, resource version).
"""
from __future__ import annotations

import html
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from service.fhir.canonical import BACKPORT_NOTIFICATION_R4, BACKPORT_STATUS_R4, EXT_SUBSCRIPTION_SECRET
from service.fhir.errors import BadRequest, Unprocessable
from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.notify import EndpointPolicy, EndpointRefused
from service.store import Change, UnitOfWork
from service.store.notifications import Outbox, SubscriptionRow, payload_content
from service.store.repository import format_instant

# Standard Webhooks' schedule: the first attempt at once, then these waits after each failure.
RETRY_DELAYS = (timedelta(0), timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
                timedelta(hours=5), timedelta(hours=10), timedelta(hours=14), timedelta(hours=20), timedelta(hours=24))
JITTER = 0.1          # each wait is moved by up to +-10% (so retries of many do not arrive together)
CONTENTS = ("empty", "id-only", "full-resource")
RESULT_PARAMETERS = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
                               "_contained", "_containedType", "_format", "_pretty", "_cursor"})
MATCH_CHUNK = 100     # _id values per matching search (within TOH_SEARCH_MAX_VALUES)

Matcher = Callable[[Any, str, list[tuple[str, str]]], list[str]]   # (conn, type, params) -> ids


# -- the retry schedule ------------------------------------------------------------------
def next_attempt(attempts: int, now: datetime, *, retry_after: float | None = None,
                 rng: random.Random | None = None) -> datetime | None:
    """When to try again after `attempts` failed attempts (1 = the first failed), or None when
    the schedule is spent (10 attempts: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h,
    24 h after the one before, each +-10%). A receiver's Retry-After (seconds) is honoured when
    it asks for longer than the schedule."""
    if attempts >= len(RETRY_DELAYS):
        return None
    delay = RETRY_DELAYS[attempts].total_seconds()
    delay *= 1 + (rng or random).uniform(-JITTER, JITTER)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=delay)


# -- what a Subscription is --------------------------------------------------------------
def split_criteria(criteria: str) -> tuple[str, list[tuple[str, str]]]:
    """("Task", [("status", "ready")]) of "Task?status=ready"; raises BadRequest when it is not
    a resource type with an optional query."""
    res_type, _, query = criteria.strip().partition("?")
    if res_type not in R4_RESOURCE_TYPES:
        raise BadRequest(f"Subscription.criteria must start with a resource type, not {res_type!r}",
                         expression=["Subscription.criteria"])
    return res_type, parse_qsl(query, keep_blank_values=True)


class SubscriptionRules:
    """The checks a Subscription must pass when it is written (a validator of the store)."""

    def __init__(self, parse: Callable[[str, list[tuple[str, str]]], Any], policy: EndpointPolicy) -> None:
        self.parse = parse          # SearchEngine.parse
        self.policy = policy

    def __call__(self, resource: dict[str, Any]) -> None:
        """Raise BadRequest (criteria) or Unprocessable (channel, endpoint, secret) for a bad
        Subscription; other resources pass."""
        if resource.get("resourceType") != "Subscription":
            return
        res_type, params = split_criteria(str(resource.get("criteria") or ""))
        result = sorted({name for name, _ in params if name.split(":")[0] in RESULT_PARAMETERS})
        if result:
            raise BadRequest(f"Subscription.criteria may hold search criteria only, not {', '.join(result)}",
                             expression=["Subscription.criteria"])
        query = self.parse(res_type, params)
        query.raise_if_strict(True)     # an unknown or unsupported parameter is a 400
        channel = resource.get("channel") or {}
        kind = channel.get("type")
        endpoint = str(channel.get("endpoint") or "")
        where = ["Subscription.channel"]
        if kind == "rest-hook":
            if payload_content(channel) not in CONTENTS:
                raise Unprocessable(f"The payload content must be one of {', '.join(CONTENTS)}", expression=where)
            if channel.get("payload") not in (None, "application/fhir+json", "application/json"):
                raise Unprocessable("A rest-hook payload must be application/fhir+json (or none)", expression=where)
            try:
                self.policy.check_url(endpoint)
            except EndpointRefused as exc:
                raise Unprocessable(str(exc), code="security", expression=["Subscription.channel.endpoint"]) from None
        elif kind == "email":
            address = endpoint.removeprefix("mailto:")
            if not endpoint.startswith("mailto:") or "@" not in address or any(c in address for c in ",;<> \r\n"):
                raise Unprocessable("An email channel's endpoint must be one mailto: address",
                                    expression=["Subscription.channel.endpoint"])
        else:
            raise Unprocessable(f"channel.type {kind!r} is not supported here (rest-hook, email)",
                                code="not-supported", expression=where)
        secret = next((e.get("valueString") for e in resource.get("extension") or ()
                       if isinstance(e, dict) and e.get("url") == EXT_SUBSCRIPTION_SECRET), None)
        if secret is not None and (not isinstance(secret, str) or len(secret) < 32):
            raise Unprocessable("A signing secret must be at least 32 characters ('whsec_' + base64 of 24+ bytes)",
                                expression=["Subscription.extension"])


# -- what a notification says -------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """A change a subscription matched: the resource as written and its version."""

    res_type: str
    res_id: str
    version: int
    resource: dict[str, Any]
    created: bool

    @property
    def focus(self) -> str:
        return f"{self.res_type}/{self.res_id}/_history/{self.version}"


def notification_bundle(*, base: str, subscription_id: str, status: str, kind: str, events_since_start: int,
                        timestamp: datetime, event: Event | None = None, content: str = "id-only",
                        event_number: int | None = None) -> dict[str, Any]:
    """The Backport IG's R4 notification Bundle (see module docstring). kind: handshake |
    event-notification | heartbeat; content: empty | id-only | full-resource."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{subscription_id}"}},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    entries: list[dict[str, Any]] = []
    if event is not None and event_number is not None:
        parts: list[dict[str, Any]] = [{"name": "event-number", "valueString": str(event_number)},
                                       {"name": "timestamp", "valueInstant": format_instant(timestamp)}]
        if content != "empty":
            parts.append({"name": "focus", "valueReference": {"reference": f"{base}/{event.res_type}/{event.res_id}"}})
        params.append({"name": "notification-event", "part": parts})
        if content == "full-resource":
            entries.append({"fullUrl": f"{base}/{event.res_type}/{event.res_id}", "resource": event.resource,
                            "request": {"method": "POST" if event.created else "PUT",
                                        "url": event.res_type if event.created else f"{event.res_type}/{event.res_id}"},
                            "response": {"status": "201" if event.created else "200"}})
    status_entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": {"resourceType": "Parameters", "meta": {"profile": [BACKPORT_STATUS_R4]},
                                 "parameter": params},
                    "request": {"method": "GET", "url": f"{base}/Subscription/{subscription_id}/$status"},
                    "response": {"status": "200"}}
    return {"resourceType": "Bundle", "meta": {"profile": [BACKPORT_NOTIFICATION_R4]}, "type": "history",
            "timestamp": format_instant(timestamp), "entry": [status_entry, *entries]}


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the local Patient a resource is about (subject, patient, for), if any."""
    if resource.get("resourceType") == "Patient":
        return str(resource.get("id"))
    for element in ("subject", "patient", "for"):
        ref = (resource.get(element) or {}).get("reference") if isinstance(resource.get(element), dict) else None
        if isinstance(ref, str) and "Patient/" in ref:
            return ref.rsplit("Patient/", 1)[1].split("/")[0]
    return None


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


def summary(resource: dict[str, Any]) -> dict[str, str]:
    """What an email says about a resource, with the minimum of patient detail: what (the flag's
    sentence, the follow-up's name), when (the Flag's period, the Task's due window), its status
    and the patient's id. Names are not read here."""
    res_type = str(resource.get("resourceType"))
    out = {"type": res_type, "id": str(resource.get("id")), "status": str(resource.get("status") or "")}
    patient = patient_of(resource)
    if patient:
        out["patient"] = patient
    if res_type == "Flag":
        out["what"] = _text(resource.get("code")) or "A flag was raised"
        out["when"] = str((resource.get("period") or {}).get("start") or "")
        out["headline"] = "Flag raised" if resource.get("status") == "active" else f"Flag {out['status']}"
    elif res_type == "Task":
        out["what"] = _text(resource.get("code")) or str(resource.get("description") or "A follow-up")
        window = (resource.get("restriction") or {}).get("period") or {}
        out["when"] = " to ".join(str(v) for v in (window.get("start"), window.get("end")) if v)
        out["headline"] = {"ready": "Follow-up due", "requested": "Follow-up planned"}.get(
            out["status"], f"Follow-up {out['status']}")
    else:
        out["what"] = _text(resource.get("code")) or f"{res_type} {out['id']}"
        out["when"] = str((resource.get("meta") or {}).get("lastUpdated") or "")
        out["headline"] = f"{res_type} {'changed' if out['status'] else 'written'}"
    return out


def email_parts(about: dict[str, str], *, link: str | None, patient_name: str | None = None
                ) -> tuple[str, str, str]:
    """(subject, plain text, HTML) of the email for a summary(); the name only when given."""
    who = f"patient {about['patient']}" if about.get("patient") else ""
    if patient_name:
        who = f"{patient_name} ({who})"
    subject = f"{about['headline']}: {about['what']}" + (f" - {who}" if who else "")
    lines = [f"{about['headline']}: {about['what']}"]
    if about.get("when"):
        lines.append(f"When: {about['when']}")
    if who:
        lines.append(f"Patient: {who}")
    if about.get("status"):
        lines.append(f"Status: {about['status']}")
    if link:
        lines.append(f"Open: {link}")
    text = "\n".join(lines) + "\n\n-- TOH follow-up service\n"
    esc = html.escape
    rows = "".join(f"<p>{esc(line)}</p>" for line in lines[1:-1 if link else None])
    anchor = f'<p><a href="{esc(link, quote=True)}">Open the patient\'s page</a></p>' if link else ""
    body = (f"<html><body><h2>{esc(about['headline'])}</h2><p><strong>{esc(about['what'])}</strong></p>"
            f"{rows}{anchor}<p><small>TOH follow-up service</small></p></body></html>")
    return subject[:200], text, body


# -- the before-commit step -----------------------------------------------------------------
def latest_events(changes: Sequence[Change]) -> dict[str, list[Event]]:
    """Type -> the last version written of each resource (deletions left out), in order."""
    last: dict[tuple[str, str], Change] = {}
    first_seen: dict[tuple[str, str], bool] = {}
    for change in changes:
        key = (change.res_type, change.res_id)
        first_seen.setdefault(key, change.previous is None or change.previous.deleted)
        last[key] = change
    out: dict[str, list[Event]] = {}
    for key, change in last.items():
        if change.resource is None:
            continue
        out.setdefault(change.res_type, []).append(Event(change.res_type, change.res_id, change.version,
                                                         change.resource, first_seen[key]))
    return out


class OutboxStep:
    """Writes one outbox row per (matching active Subscription, resource version) of the
    transaction, and one handshake row per Subscription written with status `requested`.
    Registered after the clinical watch, the care plans and Provenance, so it sees every write."""

    def __init__(self, matcher: Matcher, base_url: str) -> None:
        self.matcher = matcher      # SearchEngine.find_ids
        self.base_url = base_url.rstrip("/")

    def before_commit(self, uow: UnitOfWork) -> None:
        """Queue the notifications of this transaction's writes (none when uow.notify is off)."""
        if not uow.notify or not uow.changes:
            return
        uow.repo.flush()
        events = latest_events(uow.changes)
        outbox = Outbox(uow.conn)
        now = uow.clock.now()
        for event in events.get("Subscription", ()):
            if event.resource.get("status") == "requested":
                self._handshake(outbox, event, now)
        matched: dict[str, list[Event]] = {}     # one search per distinct criteria
        for sub in outbox.active_for(set(events)):
            if sub.criteria not in matched:
                matched[sub.criteria] = self._matches(uow, sub.criteria, events[sub.res_type])
            for event in matched[sub.criteria]:
                self.queue(outbox, sub, event, now)

    def _matches(self, uow: UnitOfWork, criteria: str, candidates: list[Event]) -> list[Event]:
        res_type, params = split_criteria(criteria)
        by_id = {e.res_id: e for e in candidates}
        ids = list(by_id)
        found: set[str] = set()
        for start in range(0, len(ids), MATCH_CHUNK):
            chunk = ids[start:start + MATCH_CHUNK]
            found.update(self.matcher(uow.conn, res_type, [*params, ("_id", ",".join(chunk))]))
        return [by_id[i] for i in ids if i in found]

    def queue(self, outbox: Outbox, sub: SubscriptionRow, event: Event, now: datetime) -> bool:
        """Queue one event notification for sub (once per subscription and version)."""
        key = f"event:{sub.subscription_id}:{event.focus}"
        number = outbox.next_event_number(sub.subscription_id)
        bundle = notification_bundle(base=self.base_url, subscription_id=sub.subscription_id, status="active",
                                     kind="event-notification", events_since_start=number, timestamp=now,
                                     event=event, content=sub.content, event_number=number)
        return outbox.enqueue(key=key, subscription_id=sub.subscription_id, kind="event-notification",
                              focus=event.focus, patient_id=patient_of(event.resource), event_number=number,
                              payload={"bundle": bundle, "summary": summary(event.resource)}, now=now)

    def _handshake(self, outbox: Outbox, event: Event, now: datetime) -> None:
        sub = outbox.subscription(event.res_id)
        if sub is None:
            return
        bundle = notification_bundle(base=self.base_url, subscription_id=sub.subscription_id, status="requested",
                                     kind="handshake", events_since_start=sub.events, timestamp=now)
        outbox.enqueue(key=f"handshake:{event.focus}", subscription_id=sub.subscription_id, kind="handshake",
                       focus=event.focus, patient_id=None, event_number=0, payload={"bundle": bundle}, now=now)


def owners_filter(ids: Iterable[str]) -> tuple[str, str]:
    """The `_id` search parameter that keeps a Subscription search to these ids ("-" matches
    none: ids are never "-" alone in practice, and it is a valid id to search for)."""
    kept = sorted(ids)
    return ("_id", ",".join(kept) if kept else "-")
