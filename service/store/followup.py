"""The follow-up tables: which CarePlans and Tasks the service manages (and what it last wrote
in them), the due-work table the sweep claims from, and the reminder queue.

- care_plans / care_plan_tasks: one row per CarePlan / Task the service made, with the status
  and due window it last wrote. A stored resource holding another value was changed by someone
  else (a clinician), and the service leaves that value alone.
- due_work: one row per (kind, subject) that falls due at `due_at`: kind "task" (a follow-up
  Task's next transition: ready, then overdue) or "patient" (the next date the patient's
  assessment or plan can change by time alone). The sweep claims rows with
  `FOR UPDATE SKIP LOCKED` (PostgreSQL) or under SQLite's write lock (BEGIN IMMEDIATE).
- reminders: the outbox of reminders (a follow-up falls due, a follow-up is overdue), written
  in the sweep's transaction; a sender claims `pending` rows whose `next_attempt_at` has come,
  sends them outside any transaction, and records `sent_at` / `attempts` / `last_error`.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (Column, Connection, Index, Integer, String, Table, Text, UniqueConstraint, delete,
                        insert, select, update)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.store.schema import RowId, UTCDateTime, metadata

care_plans = Table(
    "care_plans", metadata,
    Column("careplan_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("condition_id", String(64), nullable=False),
    Column("generation", Integer, nullable=False),   # 1, then 2 if re-planned after a revocation
    Column("plan_url", String(255), nullable=False),
    Column("onset", String(10), nullable=False),      # the episode onset the plan counts from
    Column("status", String(32), nullable=False),     # the CarePlan.status the service last wrote
    UniqueConstraint("condition_id", "generation", name="uq_care_plans_condition"),
)
Index("ix_care_plans_patient", care_plans.c.patient_id)

care_plan_tasks = Table(
    "care_plan_tasks", metadata,
    Column("task_id", String(64), primary_key=True),
    Column("careplan_id", String(64), nullable=False),
    Column("action_id", String(64), nullable=False),  # the PlanDefinition action it carries out
    Column("status", String(32), nullable=False),     # the Task.status the service last wrote
    Column("window_start", String(10), nullable=False),
    Column("window_end", String(10), nullable=False),
    UniqueConstraint("careplan_id", "action_id", name="uq_care_plan_tasks_action"),
)

due_work = Table(
    "due_work", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),       # "task" or "patient"
    Column("subject", String(64), nullable=False),    # the Task or Patient id
    Column("due_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("kind", "subject", name="uq_due_work_subject"),
)
Index("ix_due_work_due", due_work.c.due_at, due_work.c.id)

reminders = Table(
    "reminders", metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(255), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),       # "follow-up-due" or "follow-up-overdue"
    Column("patient_id", String(64), nullable=False),
    Column("about", String(128), nullable=False),     # "Task/<id>"
    Column("due_on", String(10), nullable=False),     # the clinical date it fell due
    Column("created_at", UTCDateTime(), nullable=False),
    Column("payload", Text, nullable=False),          # JSON: text, task, flag, window
    Column("status", String(16), nullable=False),     # pending | sent | failed | cancelled
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
)
Index("ix_reminders_pending", reminders.c.status, reminders.c.next_attempt_at)
Index("ix_reminders_about", reminders.c.about)


@dataclass(frozen=True)
class PlanRow:
    """A CarePlan the service manages."""

    careplan_id: str
    patient_id: str
    condition_id: str
    generation: int
    plan_url: str
    onset: str
    status: str


@dataclass(frozen=True)
class TaskRow:
    """A Task the service manages, with the status and window it last wrote."""

    task_id: str
    careplan_id: str
    action_id: str
    status: str
    window_start: str
    window_end: str


@dataclass(frozen=True)
class DueItem:
    """A claimed row of due_work."""

    id: int
    kind: str
    subject: str
    due_at: datetime
    attempts: int


class FollowUps:
    """The follow-up tables over one connection (the unit of work's transaction)."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    # -- plans and tasks ------------------------------------------------------------------
    def plans_of(self, patient_id: str) -> list[PlanRow]:
        """The patient's managed plans, oldest first."""
        rows = self.conn.execute(select(care_plans).where(care_plans.c.patient_id == patient_id)
                                 .order_by(care_plans.c.condition_id, care_plans.c.generation))
        return [PlanRow(**row._mapping) for row in rows]

    def plan(self, careplan_id: str) -> PlanRow | None:
        """The managed plan with this CarePlan id, if any."""
        row = self.conn.execute(select(care_plans).where(care_plans.c.careplan_id == careplan_id)).first()
        return None if row is None else PlanRow(**row._mapping)

    def add_plan(self, row: PlanRow) -> None:
        """Record a CarePlan the service created (raises IntegrityError on a duplicate)."""
        self.conn.execute(insert(care_plans).values(**row.__dict__))

    def set_plan_status(self, careplan_id: str, status: str) -> None:
        """Record the CarePlan.status the service just wrote."""
        self.conn.execute(update(care_plans).where(care_plans.c.careplan_id == careplan_id).values(status=status))

    def tasks_of(self, careplan_id: str) -> list[TaskRow]:
        """The managed Tasks of a plan."""
        rows = self.conn.execute(select(care_plan_tasks).where(care_plan_tasks.c.careplan_id == careplan_id)
                                 .order_by(care_plan_tasks.c.window_start, care_plan_tasks.c.action_id))
        return [TaskRow(**row._mapping) for row in rows]

    def task(self, task_id: str) -> TaskRow | None:
        """The managed Task with this id, if any."""
        row = self.conn.execute(select(care_plan_tasks).where(care_plan_tasks.c.task_id == task_id)).first()
        return None if row is None else TaskRow(**row._mapping)

    def add_task(self, row: TaskRow) -> None:
        """Record a Task the service created."""
        self.conn.execute(insert(care_plan_tasks).values(**row.__dict__))

    def set_task_status(self, task_id: str, status: str) -> None:
        """Record the Task.status the service just wrote."""
        self.conn.execute(update(care_plan_tasks).where(care_plan_tasks.c.task_id == task_id)
                          .values(status=status))

    # -- due work ---------------------------------------------------------------------------
    def schedule(self, kind: str, subject: str, due_at: datetime | None) -> None:
        """Make (kind, subject) fall due at due_at (an upsert), or remove it when due_at is None."""
        if due_at is None:
            self.conn.execute(delete(due_work).where(due_work.c.kind == kind, due_work.c.subject == subject))
            return
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(due_work).values(kind=kind, subject=subject, due_at=due_at, attempts=0)
        self.conn.execute(stmt.on_conflict_do_update(
            index_elements=["kind", "subject"],
            set_={"due_at": stmt.excluded.due_at, "attempts": 0, "last_error": None}))

    def due_at(self, kind: str, subject: str) -> datetime | None:
        """When (kind, subject) falls due, or None if nothing is scheduled."""
        return self.conn.execute(select(due_work.c.due_at).where(
            due_work.c.kind == kind, due_work.c.subject == subject)).scalar_one_or_none()

    def claim(self, now: datetime, skip: Collection[int] = ()) -> DueItem | None:
        """The earliest row due at or before now that no other transaction holds, locked until
        this transaction ends (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the writer already
        holds the database's write lock). Rows whose id is in skip are passed over."""
        query = select(due_work).where(due_work.c.due_at <= now)
        if skip:
            query = query.where(due_work.c.id.notin_(list(skip)))
        query = query.order_by(due_work.c.due_at, due_work.c.id).limit(1)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = self.conn.execute(query).first()
        return None if row is None else DueItem(row.id, row.kind, row.subject, row.due_at, row.attempts)

    def claim_statement(self, now: datetime) -> Any:
        """The claim query (for EXPLAIN in the benchmark)."""
        query = select(due_work).where(due_work.c.due_at <= now).order_by(due_work.c.due_at, due_work.c.id).limit(1)
        return query.with_for_update(skip_locked=True) if self.dialect == "postgresql" else query

    def done(self, item: DueItem) -> None:
        """Remove a claimed row (the handler may schedule the subject again afterwards)."""
        self.conn.execute(delete(due_work).where(due_work.c.id == item.id))

    def failed(self, item_id: int, retry_at: datetime, error: str) -> None:
        """Record a failed attempt and when to try again."""
        self.conn.execute(update(due_work).where(due_work.c.id == item_id).values(
            attempts=due_work.c.attempts + 1, due_at=retry_at, last_error=error[:2000]))

    def count_due(self, now: datetime) -> int:
        """How many rows are due at or before now."""
        from sqlalchemy import func
        return int(self.conn.execute(select(func.count()).select_from(due_work)
                                     .where(due_work.c.due_at <= now)).scalar_one())

    # -- reminders ----------------------------------------------------------------------------
    def queue_reminder(self, *, key: str, kind: str, patient_id: str, about: str, due_on: str,
                       payload: dict[str, Any], now: datetime) -> bool:
        """Queue a reminder once per key; returns False if that key was queued before."""
        maker = pg_insert if self.dialect == "postgresql" else sqlite_insert
        stmt = maker(reminders).values(
            dedupe_key=key, kind=kind, patient_id=patient_id, about=about, due_on=due_on, created_at=now,
            payload=json.dumps(payload, separators=(",", ":")), status="pending", attempts=0,
            next_attempt_at=now).on_conflict_do_nothing(index_elements=["dedupe_key"])
        return bool(self.conn.execute(stmt).rowcount)

    def cancel_reminders(self, about: str) -> None:
        """Cancel the pending reminders about a resource ("Task/<id>"): it is done or cancelled."""
        self.conn.execute(update(reminders).where(reminders.c.about == about, reminders.c.status == "pending")
                          .values(status="cancelled"))

    def reminders_about(self, abouts: Iterable[str]) -> list[dict[str, Any]]:
        """The reminder rows about these resources, oldest first (for reports and tests)."""
        rows = self.conn.execute(select(reminders).where(reminders.c.about.in_(list(abouts)))
                                 .order_by(reminders.c.id))
        return [dict(row._mapping) for row in rows]
