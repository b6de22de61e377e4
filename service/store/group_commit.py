"""Group commit: the audit rows of requests that arrive together committed in one transaction,
each request still waiting until its own rows are committed.

A read's AuditEvent is committed in a short transaction of its own before the read is
answered (README, "The audit trail"). Under load, the threads of a worker queue for the
database's write lock one after the other (SQLite has one writer at a time; its busy handler
sleeps between tries). ``GroupCommit.submit(rows)`` queues the rows; one of the waiting
threads, the leader, commits everything queued so far in one transaction and wakes the others
with the outcome; rows queued meanwhile go in the next transaction, led by one of their
own threads. A thread returns from ``submit`` only once a commit holding its rows has
returned, so a SIGKILL after an answer loses nothing answered (the same guarantee as one
transaction per request).

When a transaction of several requests' rows fails, each request's rows are tried again in a
transaction of their own, so one bad row (a duplicate id) fails only its own request. A
failure of the database itself (TRANSIENT_ERRORS) reaches every request of the batch.

This is the technique of database group commit (e.g. PostgreSQL's commit_delay, MySQL's
binlog group commit), without any added delay: a batch is whatever queued while the previous
commit ran.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

Rows = Sequence[dict[str, Any]]


class _Ticket:
    """One submit's rows (and the connection its thread offers to commit on) and its outcome:
    done (committed, or error set) or asked to lead."""

    __slots__ = ("rows", "via", "event", "error", "lead")

    def __init__(self, rows: Rows, via: Any) -> None:
        self.rows = rows
        self.via = via
        self.event = threading.Event()
        self.error: BaseException | None = None
        self.lead = False


class GroupCommit:
    """Commits queued rows with ``commit(rows, via)`` (one transaction: all committed on return,
    or it raises and none is), many submitters' rows at a time. ``via`` is what the leading
    submitter passed (its own connection, to commit on rather than taking another; or None)."""

    def __init__(self, commit: Callable[[list[dict[str, Any]], Any], None]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._leading = False

    @property
    def waiting(self) -> int:
        """How many submits are queued for the next transaction (not yet being committed)."""
        with self._lock:
            return len(self._queue)

    def submit(self, rows: Rows, via: Any = None) -> None:
        """Commit rows; returns once they are committed, raises what their commit raised. via:
        handed to commit() if this thread leads the transaction (used only in this thread)."""
        ticket = _Ticket(rows, via)
        with self._lock:
            self._queue.append(ticket)
            lead = not self._leading
            self._leading = True
        while not lead:
            ticket.event.wait()
            if not ticket.lead:
                break
            ticket.event.clear()
            ticket.lead, lead = False, True
        if lead:
            self._lead(ticket)
        if ticket.error is not None:
            raise ticket.error

    def _lead(self, mine: _Ticket) -> None:
        """Commit what is queued (mine among it), then hand the lead to the first still queued."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._run(batch, mine.via)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.event.set()
                else:
                    self._leading = False
            for ticket in batch:
                if ticket is not mine:
                    ticket.event.set()

    def _run(self, batch: list[_Ticket], via: Any) -> None:
        try:
            self._commit([row for ticket in batch for row in ticket.rows], via)
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the submitters below
            if len(batch) == 1:
                batch[0].error = exc
                return
        for ticket in batch:   # one at a time: only the culprit fails
            try:
                self._commit(list(ticket.rows), via)
            except BaseException as exc:  # noqa: BLE001 - raised in its submitter's thread
                ticket.error = exc
