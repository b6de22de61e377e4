"""sweep(database, now): all time-based work, as of a moment.

The due work lives in the `due_work` table (service/store/followup.py): a follow-up Task's next
transition (ready when its window opens less the lead time; overdue after the grace period) and
a patient's next date on which the assessment or the plan can change by time alone (12 and 24
months unresolved; the PlanDefinition's deferred actions). The sweep asks the database what is
due, earliest first, and handles each item in its own unit of work:

    claim one row (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: under BEGIN IMMEDIATE)
      -> remove it -> the handler writes through the Repository (versions, index, the
         before-commit steps) and schedules the subject's next transition -> commit

so several processes can sweep at once (a row another holds is skipped, and a handler re-checks
the state it changes), and a crash loses at most the item in hand, which stays due and is
redone by the next sweep. After downtime the first sweep catches up in due order; what it
raises carries the clinical date it became true.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.fhir.errors import ServiceUnavailable
from service.store import Database, UnitOfWork
from service.store.followup import DueItem, FollowUps

log = logging.getLogger(__name__)

DueHandler = Callable[[UnitOfWork, DueItem, datetime], list[str]]
# A sweep waits at most this long for a row a request holds, then leaves the item for later:
# requests never wait on a sweep for a deadlock to be detected.
LOCK_TIMEOUT_MS = 500
RETRY_AFTER = timedelta(minutes=10)   # a failing item is tried again after attempts x this
MAX_ROUNDS = 5                        # rounds over items that met a lock held by a request


@dataclass
class SweepReport:
    """What one sweep did: the items handled, in order, with what each did."""

    now: datetime
    handled: list[tuple[DueItem, list[str]]] = field(default_factory=list)
    failed: list[tuple[DueItem, str]] = field(default_factory=list)
    deferred: int = 0     # items left for a later sweep (held by another writer)

    def lines(self) -> list[str]:
        """One line per action, for `toh sweep`."""
        out = [f"{item.due_at.isoformat()} {item.kind} {item.subject}: {what}"
               for item, actions in self.handled for what in actions]
        out += [f"FAILED {item.kind} {item.subject}: {error}" for item, error in self.failed]
        summary = (f"sweep as of {self.now.isoformat()}: {len(self.handled)} items, "
                   f"{sum(len(a) for _, a in self.handled)} actions, {len(self.failed)} failed")
        if self.deferred:
            summary += f", {self.deferred} left for the next sweep"
        return out + [summary]


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, ServiceUnavailable))


def sweep(database: Database, now: datetime, *, limit: int | None = None,
          stop: Callable[[], bool] | None = None) -> SweepReport:
    """Handle every due item (due_at <= now) once, earliest first; returns the report.
    `stop` is asked before each claim: once it says True (the process is shutting down) the
    sweep returns, having finished the item in hand and claimed no other.

    `database.due_handlers` maps a due-work kind to its handler (create_app registers them). A
    handler that raises is rolled back and its item retried later (attempts x RETRY_AFTER); an
    item whose rows a request holds is left for the next round or sweep. Never raises for one
    item's failure; raises what the database raises when it cannot be reached at all.
    """
    report = SweepReport(now)
    busy: set[int] = set()
    rounds = 0
    while (limit is None or len(report.handled) < limit) and not (stop is not None and stop()):
        outcome = _one(database, now, busy, report)
        if outcome is None:
            if not busy or rounds >= MAX_ROUNDS:
                break
            rounds += 1      # try the items that met a held lock again
            busy.clear()
    report.deferred = len(busy)
    return report


def _one(database: Database, now: datetime, busy: set[int], report: SweepReport) -> bool | None:
    """Claim and handle one item; None when nothing (but busy items) is due."""
    item: DueItem | None = None
    try:
        with database.unit_of_work() as uow:
            if database.dialect == "postgresql":
                uow.conn.execute(text(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
            followups = FollowUps(uow.conn, database.dialect)
            item = followups.claim(now, skip=busy)
            if item is None:
                return None
            handler = database.due_handlers.get(item.kind)
            followups.done(item)
            actions = handler(uow, item, now) if handler else [f"no handler for {item.kind!r}: dropped"]
            uow.commit()
        report.handled.append((item, actions))
        return True
    except Exception as exc:  # one item's failure must not stop the sweep
        if item is None:
            raise
        if _transient(exc):
            busy.add(item.id)
            return False
        log.exception("sweep: %s %s failed", item.kind, item.subject)
        report.failed.append((item, f"{type(exc).__name__}: {exc}"))
        with database.unit_of_work() as uow:
            FollowUps(uow.conn, database.dialect).failed(item.id, now + RETRY_AFTER * (item.attempts + 1),
                                                         f"{type(exc).__name__}: {exc}")
            uow.conn.commit()
            uow.committed = True
        return False
