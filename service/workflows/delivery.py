"""deliver(): one pass of the outbox: claim what is due, send it outside any transaction,
record each attempt.

    claim (a short transaction: FOR UPDATE SKIP LOCKED on PostgreSQL; a lease on every backend)
      -> send each row on its channel, several at once (a slow receiver holds only its own thread),
         each after renewing its lease (the lease covers one send, and a row may wait in the claim
         behind others longer than that; a row another pass took over meanwhile is not sent)
      -> record (a short transaction per row, only while the lease is still ours):
           the Communication of the delivery (one per notification, a note per attempt),
           delivered | the next try (RETRY_DELAYS with jitter, Retry-After honoured) |
           dead letter: Subscription `error` with the reason + an administrative Flag |
           410: Subscription `off`, its pending notifications cancelled;
           a handshake's success makes a `requested` Subscription `active`, its failure `error`.

A process killed between send and record leaves its rows leased; when the lease ends another
pass sends them again with the same webhook-id (at most one resend, never a loss). The writes
of the record step notify no one (uow.notify is off), so delivery records cannot trigger
deliveries.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from service.config import PATIENT_PAGE, site_root
from service.fhir.canonical import FLAG_CATEGORY, IG
from service.notify import EmailMessageParts, Outcome, RestHookSender, SmtpSender
from service.observability.metrics import outbox_metrics
from service.store import Database, UnitOfWork
from service.store.notifications import Outbox, OutboxRow, SubscriptionRow
from service.store.repository import format_instant
from service.workflows.notifications import email_parts, next_attempt

log = logging.getLogger(__name__)

NOTIFICATION_ID_SYSTEM = f"{IG}/NamingSystem/notification-id"      # Communication.identifier: webhook-id
DEAD_LETTER_SYSTEM = f"{IG}/NamingSystem/notification-dead-letter"  # admin Flag.identifier: Subscription id
LEASE_MARGIN = timedelta(seconds=15)


@dataclass
class Channels:
    """The senders and what emails need: the patient link template ('{root}', '{base}', '{id}';
    by default the patient's staff page) and whether to put the patient's name in them."""

    rest_hook: RestHookSender
    email: SmtpSender
    base_url: str
    patient_link: str = PATIENT_PAGE
    include_patient_name: bool = False
    parallel: int = 8

    @property
    def lease(self) -> timedelta:
        """How long a claim holds a row: longer than one send can take (connect, the answer's
        head within the read timeout, its body within the read timeout again)."""
        return timedelta(seconds=self.rest_hook.connect_timeout + 2 * self.rest_hook.read_timeout) + LEASE_MARGIN

    def link(self, patient_id: str) -> str:
        """The patient link of an email: the template with '{root}' the service's root URL,
        '{base}' the FHIR base URL (base_url) and '{id}' the Patient id."""
        return self.patient_link.format(root=site_root(self.base_url), base=self.base_url.rstrip("/"), id=patient_id)


@dataclass
class DeliveryReport:
    """What one pass did: (outbox id, subscription, kind, outcome text, new row status)."""

    now: datetime
    attempts: list[tuple[int, str, str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"notification {i} ({kind}) to Subscription/{sub}: {what} -> {status}"
               for i, sub, kind, what, status in self.attempts]
        delivered = sum(1 for a in self.attempts if a[4] == "delivered")
        return out + [f"deliver as of {self.now.isoformat()}: {len(self.attempts)} attempts, {delivered} delivered"]


def deliver(database: Database, channels: Channels, now: datetime, *, limit: int = 50) -> DeliveryReport:
    """One pass over the due notifications (at most limit of them); see module docstring.
    Raises what the database raises when it cannot be reached."""
    report = DeliveryReport(now)
    with database.unit_of_work() as uow:
        token, rows = Outbox(uow.conn).claim(now, channels.lease, limit)
        uow.conn.commit()
        uow.committed = True
    if not rows:
        return report
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(channels.parallel, len(rows)))) as pool:
        for result in pool.map(lambda row: _deliver_one(database, channels, row, token, now, started), rows):
            if result is not None:
                report.attempts.append(result)
    return report


def _deliver_one(database: Database, channels: Channels, row: OutboxRow, token: str, now: datetime,
                 started: float) -> tuple[int, str, str, str, str] | None:
    """Send one claimed row and record the attempt: its report line, or None when another pass
    has taken the row over (not sent) or the attempt failed in this process (logged).
    started: time.monotonic() when the pass began at now (the renewed lease counts from then)."""
    try:
        with database.unit_of_work() as uow:
            uow.notify = False
            outbox = Outbox(uow.conn)
            until = now + timedelta(seconds=time.monotonic() - started) + channels.lease
            if not outbox.renew(row.id, token, until):
                return None
            sub = outbox.subscription(row.subscription_id)
            name = _patient_name(uow, row.patient_id) if channels.include_patient_name and row.patient_id else None
            uow.conn.commit()
            uow.committed = True
        outcome = _send(channels, row, sub, name)
        status = _record(database, row, token, sub, outcome, now)
        outbox_metrics().attempt(_channel_label(sub), _outcome_label(status))
        return (row.id, row.subscription_id, row.kind, outcome.describe(), status)
    except Exception:  # one notification's failure must not stop the others
        log.exception("delivery of notification %s failed", row.id)
        return None


def _send(channels: Channels, row: OutboxRow, sub: SubscriptionRow | None, name: str | None) -> Outcome:
    """One attempt on the subscription's channel (no database here)."""
    if sub is None or sub.status == "off":
        return Outcome(False, "the subscription is deleted or off", permanent=True)
    payload = json.loads(row.payload)
    if sub.channel == "email":
        if row.kind == "handshake":
            return Outcome(True)      # nothing to ask of a mailbox
        about = payload.get("summary") or {}
        link = channels.link(about["patient"]) if about.get("patient") else None
        subject, text, html = email_parts(about, link=link, patient_name=name)
        return channels.email.send(sub.endpoint.removeprefix("mailto:"), EmailMessageParts(subject, text, html),
                                   msg_id=row.webhook_id)
    body = json.dumps(payload["bundle"], separators=(",", ":")).encode()
    return channels.rest_hook.send(sub.endpoint, body, msg_id=row.webhook_id, secret=sub.secret,
                                   headers=sub.header_list)


def _patient_name(uow: UnitOfWork, patient_id: str) -> str | None:
    found = uow.repo.read_many("Patient", [patient_id])
    if not found:
        return None
    for name in found[0].resource().get("name") or ():
        text = name.get("text") or " ".join([*name.get("given", ()), name.get("family", "")]).strip()
        if text:
            return str(text)
    return None


def _channel_label(sub: SubscriptionRow | None) -> str:
    """The metric label of a subscription's channel: rest-hook, email or other (bounded)."""
    channel = sub.channel if sub is not None else None
    return channel if channel in ("rest-hook", "email") else "other"


def _outcome_label(status: str) -> str:
    """The metric label of an attempt from the row's new status: delivered, retry (pending
    again), dead, cancelled, or lost-lease (another deliverer had taken the row over)."""
    return "retry" if status == "pending" else status if status in (
        "delivered", "dead", "cancelled", "lost-lease") else "other"


def outbox_probe(database: Database, now: datetime | None = None) -> None:
    """Measure the outbox's queue for /metrics (a scrape probe, service.observability.metrics):
    its depth and the age of its oldest waiting notification, from the database, so the figure
    is the same whichever instance is scraped. `now` defaults to the database's clock."""
    with database.unit_of_work(write=False) as uow:
        depth, oldest_age = Outbox(uow.conn).queue(now or database.clock.now())
    outbox_metrics().observe_queue(depth, oldest_age)


def _record(database: Database, row: OutboxRow, token: str, sub: SubscriptionRow | None, outcome: Outcome,
            now: datetime) -> str:
    """Record one attempt; returns the row's new status ('lost-lease' when another took it over)."""
    with database.unit_of_work() as uow:
        uow.notify = False
        outbox = Outbox(uow.conn)
        if not outbox.holds(row.id, token):
            return "lost-lease"
        attempts = row.attempts + 1
        if outcome.delivered:
            status, retry_at = "delivered", now
        elif sub is None or sub.status == "off":
            status, retry_at = "cancelled", now
        elif outcome.gone:
            status, retry_at = "cancelled", now
        else:
            later = None if outcome.permanent or row.kind == "handshake" else next_attempt(
                attempts, now, retry_after=outcome.retry_after)
            status, retry_at = ("pending", later) if later is not None else ("dead", now)
        communication_id = _communication(uow, row, attempts, outcome, status, now)
        outbox.record(row.id, status=status, attempts=attempts, next_attempt_at=retry_at,
                      error=None if outcome.delivered else outcome.describe(),
                      delivered_at=now if outcome.delivered else None, communication_id=communication_id)
        if sub is not None:
            _subscription_after(uow, outbox, row, sub, outcome, status)
        uow.commit()
    return status


def _subscription_after(uow: UnitOfWork, outbox: Outbox, row: OutboxRow, sub: SubscriptionRow, outcome: Outcome,
                        status: str) -> None:
    """What the attempt means for the Subscription resource."""
    if outcome.delivered:
        if sub.status in ("requested", "error"):
            _set_status(uow, sub.subscription_id, "active", None)
    elif outcome.gone:
        _set_status(uow, sub.subscription_id, "off", f"The receiver answered 410 Gone at {format_instant(uow.clock.now())}")
        outbox.cancel_pending(sub.subscription_id)
    elif status == "dead":
        reason = (f"The handshake failed: {outcome.describe()}" if row.kind == "handshake"
                  else f"Notification {row.webhook_id} could not be delivered after {row.attempts + 1} attempts: "
                       f"{outcome.describe()}")
        _set_status(uow, sub.subscription_id, "error", reason)
        if row.kind != "handshake":
            _raise_admin_flag(uow, sub, reason)


def _set_status(uow: UnitOfWork, subscription_id: str, status: str, error: str | None) -> None:
    found = uow.repo.current("Subscription", subscription_id, for_update=True)
    if found is None or found[1].deleted:
        return
    resource = found[1].resource()
    if resource.get("status") == status and resource.get("error") == error:
        return
    resource["status"] = status
    if error is None:
        resource.pop("error", None)
    else:
        resource["error"] = error
    uow.repo.update("Subscription", subscription_id, resource, system=True)


def _raise_admin_flag(uow: UnitOfWork, sub: SubscriptionRow, reason: str) -> None:
    """An active administrative Flag about the subscription (one while it stays active)."""
    key = f"{DEAD_LETTER_SYSTEM}|{sub.subscription_id}"
    if uow.repo.find_ids("Flag", [("identifier", key), ("status", "active")]):
        return
    uow.repo.create({
        "resourceType": "Flag", "status": "active",
        "identifier": [{"system": DEAD_LETTER_SYSTEM, "value": sub.subscription_id}],
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "admin", "display": "Administrative"}]}],
        "code": {"text": f"Notifications of Subscription/{sub.subscription_id} are failing: {reason}"[:1000]},
        "subject": {"display": f"Subscription/{sub.subscription_id} ({sub.channel})"},
        "period": {"start": format_instant(uow.clock.now())},
    })


def _communication(uow: UnitOfWork, row: OutboxRow, attempts: int, outcome: Outcome, status: str,
                   now: datetime) -> str:
    """Create or update the Communication recording this notification's delivery; returns its id."""
    note = {"time": format_instant(now), "text": f"attempt {attempts}: {outcome.describe()}"}
    fhir_status = {"delivered": "completed", "pending": "in-progress", "dead": "not-done",
                   "cancelled": "stopped"}[status]
    if row.communication_id:
        found = uow.repo.current("Communication", row.communication_id, for_update=True)
        if found is not None and not found[1].deleted:
            kept = found[1].resource()
            kept["status"] = fhir_status
            kept["note"] = [*kept.get("note", ()), note]
            _finish(kept, outcome, status, now)
            uow.repo.update("Communication", row.communication_id, kept, system=True)
            return row.communication_id
    about: list[dict[str, Any]] = [{"reference": f"Subscription/{row.subscription_id}"}]
    if row.focus and row.kind != "handshake":
        about.insert(0, {"reference": row.focus})
    resource: dict[str, Any] = {
        "resourceType": "Communication", "status": fhir_status,
        "identifier": [{"system": NOTIFICATION_ID_SYSTEM, "value": row.webhook_id}],
        "category": [{"text": "subscription-notification"}],
        "medium": [{"text": row.kind}],
        "about": about,
        "payload": [{"contentString": f"{row.kind} {row.event_number} of Subscription/{row.subscription_id}"}],
        "note": [note],
    }
    if row.patient_id:
        resource["subject"] = {"reference": f"Patient/{row.patient_id}"}
    _finish(resource, outcome, status, now)
    stored, _ = uow.repo.create(resource)
    return stored.res_id


def _finish(resource: dict[str, Any], outcome: Outcome, status: str, now: datetime) -> None:
    if status == "delivered":
        resource["sent"] = format_instant(now)
        resource.pop("statusReason", None)
    elif status in ("dead", "cancelled"):
        resource["statusReason"] = {"text": outcome.describe()[:1000]}


def replay(database: Database, row_id: int, now: datetime) -> bool:
    """Make a dead (or cancelled) notification due again now, its attempts counted from zero
    (`toh notifications replay ID`); False if there is no such dead or cancelled row."""
    with database.unit_of_work() as uow:
        done = Outbox(uow.conn).replay(row_id, now)
        uow.conn.commit()
        uow.committed = True
    return done
