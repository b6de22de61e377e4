"""The notification tables: the Subscriptions the service delivers to, their signing secrets,
and the outbox of notifications (service/workflows/notifications.py decides what goes in it,
service/workflows/delivery.py sends it).

- subscriptions: one row per Subscription resource, kept in line with it by a write hook
  (SubscriptionMirror) in the writer's transaction: status, criteria (split into type and
  parameters), channel, owner (the token subject that made it), the event counter and the
  signing secret. The secret lives only here: the service takes it out of the resource
  before the resource is stored (`seal`), so no read, search or history ever shows it.
- outbox: one row per notification, written in the transaction of the change that caused it.
  A deliverer claims due rows (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: under BEGIN
  IMMEDIATE) by pushing `next_attempt_at` a lease ahead and stamping its own `lease` token,
  commits, renews the lease of each row as its send starts (a row waits in a claim behind
  other sends; one another deliverer took over meanwhile is not sent), sends outside any
  transaction, and records the outcome only if it still holds the lease. A deliverer that dies mid-send leaves the row due again when the lease runs out: the
  next one sends it again with the same `webhook_id`, never loses it.
"""
from __future__ import annotations

import base64
import json
import secrets as _secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (Column, Connection, Index, Integer, String, Table, Text, bindparam, delete, func, or_,
                        select, update)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.fhir.canonical import BACKPORT_PAYLOAD_CONTENT, EXT_SUBSCRIPTION_OWNER, EXT_SUBSCRIPTION_SECRET
from service.fhir.resources import extension_string
from service.store.repository import Change, StoredResource
from service.store.schema import RowId, UTCDateTime, metadata

subscriptions = Table(
    "subscriptions", metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("owner", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("res_type", String(64), nullable=False),    # the criteria's type
    Column("criteria", Text, nullable=False),          # the criteria as written: Type?a=b&c=d
    Column("channel", String(16), nullable=False),     # rest-hook | email | other
    Column("endpoint", Text, nullable=False),
    Column("content", String(16), nullable=False),     # id-only | full-resource | empty
    Column("headers", Text, nullable=False),           # JSON list of "Name: value"
    Column("secret", Text, nullable=True),
    Column("events", Integer, nullable=False, default=0),   # events since the subscription started
)
Index("ix_subscriptions_type", subscriptions.c.res_type, subscriptions.c.status)

outbox = Table(
    "outbox", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("webhook_id", String(64), nullable=False, unique=True),   # stable across retries
    Column("dedupe_key", String(255), nullable=False, unique=True),  # one notification per event
    Column("subscription_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),        # handshake | event-notification
    Column("focus", String(255), nullable=True),       # Type/id/_history/n of the change
    Column("patient_id", String(64), nullable=True),
    Column("event_number", Integer, nullable=False),
    Column("payload", Text, nullable=False),           # JSON: the notification Bundle and a summary
    Column("created_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),      # pending | delivered | dead | cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease", String(36), nullable=True),        # the token of the deliverer holding it
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("communication_id", String(64), nullable=True),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)


_NEXT_EVENT = (update(subscriptions).where(subscriptions.c.subscription_id == bindparam("sid"))
               .values(events=subscriptions.c.events + 1).returning(subscriptions.c.events))


def generate_secret() -> str:
    """A new Standard Webhooks signing secret: 'whsec_' + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def without_extension(resource: dict[str, Any], url: str) -> dict[str, Any]:
    """A shallow copy of resource without the extensions of this url."""
    kept = [e for e in resource.get("extension") or () if not (isinstance(e, dict) and e.get("url") == url)]
    out = {k: v for k, v in resource.items() if k != "extension"}
    if kept:
        out["extension"] = kept
    return out


def owner_of(resource: dict[str, Any]) -> str | None:
    """The owner a Subscription names (its subscription-owner extension), if any."""
    return extension_string(resource, EXT_SUBSCRIPTION_OWNER)


def payload_content(channel: dict[str, Any]) -> str:
    """The notification content a Subscription's channel asks for: the Backport IG's
    backport-payload-content extension on channel.payload (empty | id-only | full-resource),
    id-only when a payload type is given without it, empty when there is no payload."""
    raw = channel.get("_payload")
    payload_ext: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for ext in payload_ext.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == BACKPORT_PAYLOAD_CONTENT:
            return str(ext.get("valueCode"))
    return "id-only" if channel.get("payload") else "empty"


def mirror_row(resource: dict[str, Any], secret: str | None) -> dict[str, Any]:
    """The subscriptions row of a (stored, sealed) Subscription resource."""
    channel = resource.get("channel") or {}
    criteria = str(resource.get("criteria") or "")
    return {"subscription_id": resource["id"], "owner": owner_of(resource), "status": resource.get("status"),
            "res_type": criteria.partition("?")[0], "criteria": criteria,
            "channel": str(channel.get("type") or ""), "endpoint": str(channel.get("endpoint") or ""),
            "content": payload_content(channel), "headers": json.dumps(list(channel.get("header") or ())),
            "secret": secret}


@dataclass(frozen=True)
class SubscriptionRow:
    """A Subscription as the outbox step and the deliverer read it."""

    subscription_id: str
    owner: str | None
    status: str
    res_type: str
    criteria: str
    channel: str
    endpoint: str
    content: str
    headers: str
    secret: str | None
    events: int

    @property
    def header_list(self) -> list[str]:
        return [str(h) for h in json.loads(self.headers or "[]")]


@dataclass(frozen=True)
class OutboxRow:
    """One notification of the outbox."""

    id: int
    webhook_id: str
    dedupe_key: str
    subscription_id: str
    kind: str
    focus: str | None
    patient_id: str | None
    event_number: int
    payload: str
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    lease: str | None
    last_error: str | None
    delivered_at: datetime | None
    communication_id: str | None


class SubscriptionMirror:
    """Keeps `subscriptions` in line with the Subscription resources, and keeps their secrets out
    of the stored resources. Registered with the Database as a sealer (Subscription) and a write
    hook; the secret of a write is carried from seal() to on_write() in `pending`."""

    def seal(self, conn: Connection, resource: dict[str, Any], previous: StoredResource | None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what to store, what to answer) for a Subscription about to be stored: the secret
        extension is never stored; a rest-hook subscription with none, and no secret kept from
        before, gets a generated one, shown in this answer only."""
        given = extension_string(resource, EXT_SUBSCRIPTION_SECRET)
        stored = without_extension(resource, EXT_SUBSCRIPTION_SECRET)
        shown = resource
        if given is None:
            kept = conn.execute(select(subscriptions.c.secret).where(
                subscriptions.c.subscription_id == resource["id"])).scalar_one_or_none()
            if kept is None and (resource.get("channel") or {}).get("type") == "rest-hook":
                given = generate_secret()
                shown = {**resource, "extension": [*(resource.get("extension") or ()),
                                                   {"url": EXT_SUBSCRIPTION_SECRET, "valueString": given}]}
            else:
                given = kept
        self._upsert(conn, mirror_row(stored, given))
        return stored, shown

    def on_write(self, conn: Connection, change: Change) -> None:
        """Remove the row of a deleted Subscription (the secret goes with it)."""
        if change.res_type == "Subscription" and change.resource is None:
            conn.execute(delete(subscriptions).where(subscriptions.c.subscription_id == change.res_id))
            conn.execute(update(outbox).where(outbox.c.subscription_id == change.res_id,
                                              outbox.c.status == "pending").values(status="cancelled"))

    @staticmethod
    def _upsert(conn: Connection, row: dict[str, Any]) -> None:
        maker = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = maker(subscriptions).values(**row, events=0)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["subscription_id"],
            set_={k: getattr(stmt.excluded, k) for k in row if k != "subscription_id"}))


class Outbox:
    """The subscriptions and outbox tables over one connection (a unit of work's transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    # -- subscriptions -------------------------------------------------------------------
    def subscription(self, subscription_id: str) -> SubscriptionRow | None:
        row = self.conn.execute(select(subscriptions).where(
            subscriptions.c.subscription_id == subscription_id)).first()
        return None if row is None else SubscriptionRow(**row._mapping)

    def active_for(self, res_types: set[str]) -> list[SubscriptionRow]:
        """The active Subscriptions whose criteria name one of these types, by id."""
        if not res_types:
            return []
        rows = self.conn.execute(select(subscriptions).where(
            subscriptions.c.status == "active", subscriptions.c.res_type.in_(sorted(res_types)))
            .order_by(subscriptions.c.subscription_id))
        return [SubscriptionRow(**row._mapping) for row in rows]

    def owned_by(self, owner: str) -> list[str]:
        """Ids of the Subscriptions this subject owns."""
        return [r[0] for r in self.conn.execute(select(subscriptions.c.subscription_id).where(
            subscriptions.c.owner == owner).order_by(subscriptions.c.subscription_id))]

    def next_event_number(self, subscription_id: str) -> int:
        """Count one more event of the subscription and return its number (1, 2, ...)."""
        return int(self.conn.execute(_NEXT_EVENT, {"sid": subscription_id}).scalar_one())

    def set_status(self, subscription_id: str, status: str) -> None:
        self.conn.execute(update(subscriptions).where(subscriptions.c.subscription_id == subscription_id)
                          .values(status=status))

    # -- the outbox ------------------------------------------------------------------------
    def enqueue(self, *, key: str, subscription_id: str, kind: str, focus: str | None, patient_id: str | None,
                event_number: int, payload: dict[str, Any], now: datetime) -> bool:
        """Queue a notification once per key (due now); False if that key was queued before."""
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(outbox).values(
            webhook_id=f"msg_{uuid.uuid4().hex}", dedupe_key=key[:255], subscription_id=subscription_id, kind=kind,
            focus=focus, patient_id=patient_id, event_number=event_number,
            payload=json.dumps(payload, separators=(",", ":")), created_at=now, status="pending", attempts=0,
            next_attempt_at=now).on_conflict_do_nothing(index_elements=["dedupe_key"])
        return bool(self.conn.execute(stmt).rowcount)

    def claim(self, now: datetime, lease_for: timedelta, limit: int = 10) -> tuple[str, list[OutboxRow]]:
        """Claim up to limit due rows (pending, next_attempt_at <= now), oldest first: each is
        given this claim's lease token and is due again only after lease_for (so a deliverer
        that dies mid-send is replaced). PostgreSQL skips rows another transaction holds."""
        query = (select(outbox).where(outbox.c.status == "pending", outbox.c.next_attempt_at <= now)
                 .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit))
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = [OutboxRow(**r._mapping) for r in self.conn.execute(query)]
        token = str(uuid.uuid4())
        if rows:
            self.conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                              .values(lease=token, next_attempt_at=now + lease_for))
        return token, rows

    def renew(self, row_id: int, token: str, until: datetime) -> bool:
        """Extend this claim's lease of a row to until (as its send starts); False when another
        deliverer has taken the row over or it is no longer pending: then it must not be sent."""
        return bool(self.conn.execute(update(outbox).where(
            outbox.c.id == row_id, outbox.c.lease == token, outbox.c.status == "pending")
            .values(next_attempt_at=until)).rowcount)

    def holds(self, row_id: int, token: str) -> bool:
        """Whether the claim with this token still holds the row (its lease was not taken over);
        on PostgreSQL the row stays locked until this transaction ends."""
        query = select(outbox.c.id).where(outbox.c.id == row_id, outbox.c.lease == token,
                                          outbox.c.status == "pending")
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return self.conn.execute(query).first() is not None

    def record(self, row_id: int, *, status: str, attempts: int, next_attempt_at: datetime,
               error: str | None, delivered_at: datetime | None = None,
               communication_id: str | None = None) -> None:
        """Record an attempt's outcome and release the lease."""
        values: dict[str, Any] = {"status": status, "attempts": attempts, "next_attempt_at": next_attempt_at,
                                  "lease": None, "last_error": None if error is None else error[:2000],
                                  "delivered_at": delivered_at}
        if communication_id is not None:
            values["communication_id"] = communication_id
        self.conn.execute(update(outbox).where(outbox.c.id == row_id).values(**values))

    def cancel_pending(self, subscription_id: str) -> int:
        """Cancel the pending notifications of a subscription (it was disabled)."""
        return int(self.conn.execute(update(outbox).where(
            outbox.c.subscription_id == subscription_id, outbox.c.status == "pending")
            .values(status="cancelled", lease=None)).rowcount)

    def row(self, row_id: int) -> OutboxRow | None:
        found = self.conn.execute(select(outbox).where(outbox.c.id == row_id)).first()
        return None if found is None else OutboxRow(**found._mapping)

    def rows(self, *, status: str | None = None, subscription_id: str | None = None,
             limit: int = 100) -> list[OutboxRow]:
        """Outbox rows, newest first, optionally of one status or subscription."""
        query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(outbox.c.status == status)
        if subscription_id is not None:
            query = query.where(outbox.c.subscription_id == subscription_id)
        return [OutboxRow(**r._mapping) for r in self.conn.execute(query)]

    def replay(self, row_id: int, now: datetime) -> bool:
        """Make a dead (or cancelled) notification pending again, due now, attempts from zero;
        False if there is no such row or it is not dead/cancelled."""
        return bool(self.conn.execute(update(outbox).where(
            outbox.c.id == row_id, or_(outbox.c.status == "dead", outbox.c.status == "cancelled"))
            .values(status="pending", attempts=0, next_attempt_at=now, lease=None)).rowcount)

    def queue(self, now: datetime) -> tuple[int, float]:
        """(notifications waiting for delivery, age in seconds of the oldest of them; 0 when
        none): the pending rows, due or waiting for a retry."""
        depth, oldest = self.conn.execute(select(func.count(), func.min(outbox.c.created_at))
                                          .where(outbox.c.status == "pending")).one()
        if not depth or oldest is None:
            return 0, 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return int(depth), max(0.0, (now - oldest).total_seconds())

    def count(self, status: str) -> int:
        return int(self.conn.execute(select(func.count()).select_from(outbox)
                                     .where(outbox.c.status == status)).scalar_one())


__all__ = ["Outbox", "OutboxRow", "SubscriptionMirror", "SubscriptionRow", "generate_secret", "outbox",
           "owner_of", "payload_content", "subscriptions", "without_extension"]
