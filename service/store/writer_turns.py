"""Writers to one SQLite file take turns through a lock file, so the write lock never sits idle
while a writer sleeps in SQLite's busy handler.

SQLite lets one writer in at a time (BEGIN IMMEDIATE). A writer that finds the lock taken waits
in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 then 100 ms between
tries (sqliteDefaultBusyCallback in SQLite's main.c): it does not learn that the lock was
released, so the lock stays free for up to the rest of its current sleep. Two gunicorn workers
taking turns at transaction Bundles each holding the lock about 125 ms left it idle about a tenth
of the time (`python bench/bench_writer_turns.py`).

So before BEGIN IMMEDIATE a writer takes an exclusive flock(2) on `<database file>-writer`, and
gives it back as soon as its transaction has committed or rolled back. flock is per open file, so
threads of one process exclude each other as processes do, and the kernel releases it when a
process dies (SIGKILL included), so no turn outlives its writer. A waiting writer asks again every
TURN_POLL_SECONDS; after the busy timeout it goes on to BEGIN IMMEDIATE without its turn, and
SQLite's own lock decides (it answers 'database is locked' if the holder still holds it). The turn
is a hint that makes waits shorter: SQLite's lock alone keeps writers apart, so a writer that does
not take turns (the sqlite3 shell, say) is still safe.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

TURN_POLL_SECONDS = 0.0005
_KEY = "toh_writer_turn"   # in the DB-API connection's info: the lock file's descriptor while it holds the turn


class WriterTurns:
    """The turns of the writers of one SQLite database file.

    path: the lock file (created if missing, mode 0600); timeout: seconds a writer waits for its
    turn before it goes on to SQLite's own lock (the busy timeout)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout

    def take(self, info: MutableMapping[str, Any]) -> None:
        """Wait for the turn and record it in info (a connection's info dict), or give up
        after self.timeout seconds (logged; the writer then relies on SQLite's lock alone). A
        lock file that cannot be opened (a read-only folder) means no turns: nothing is waited."""
        if _KEY in info:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(TURN_POLL_SECONDS)
                    continue
                os.close(fd)
                log.warning("waited %.0f s for the writer's turn on %s; going on to SQLite's lock", self.timeout,
                            self.path)
                return
            except OSError:   # a filesystem without flock: no turns
                os.close(fd)
                return
            info[_KEY] = fd
            return


def begin_immediate(turns: WriterTurns | None, info: MutableMapping[str, Any], execute: Callable[[str], Any]) -> None:
    """SQLite's BEGIN IMMEDIATE through execute (a cursor's or a Connection's), once the writer
    has its turn (turns None: no turns), the turn recorded in info (a connection's info dict)
    and given back if BEGIN fails; end_turn gives it back after COMMIT or ROLLBACK."""
    if turns is not None:
        turns.take(info)
    try:
        execute("BEGIN IMMEDIATE")
    except BaseException:
        end_turn(info)
        raise


def writer_turns(url: URL, timeout: float) -> WriterTurns | None:
    """The turns of a SQLite file database's writers (lock file `<file>-writer`), None for any
    other database (an in-memory SQLite database has one connection; PostgreSQL locks rows)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return WriterTurns(f"{url.database}-writer", timeout)


def end_turn(info: MutableMapping[str, Any]) -> None:
    """Give back the turn recorded in info, if any (closing the descriptor releases the lock)."""
    fd = info.pop(_KEY, None)
    if fd is not None:
        os.close(fd)
