"""A new SQLite database file is put in WAL mode even while another connection is writing to it
(service.store.db.wal_mode). Found when `python bench/bench_ingest.py` started `gunicorn -w 2` on
a new file: one worker failed to boot with 'database is locked' from `PRAGMA journal_mode=WAL`
while the other was creating the schema. SQLite only: WAL mode is SQLite's
(https://www.sqlite.org/wal.html#activating_and_configuring_wal_mode)."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.store import Database, db


def hold_reserved_lock(path: Path, seconds: float) -> threading.Thread:
    """A connection to a new database file at path holding its RESERVED lock (a schema being
    created, as a migrating worker does) for seconds; returns the thread that commits then."""
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE being_created (x)")

    def commit_later() -> None:
        time.sleep(seconds)
        writer.execute("COMMIT")
        writer.close()

    thread = threading.Thread(target=commit_later)
    thread.start()
    return thread


@pytest.mark.parametrize(("turn", "least", "most"), [
    # the premise: SQLite's busy handler does not wait for this lock (the fault's cause)
    (lambda cursor: cursor.execute("PRAGMA journal_mode=WAL"), 0.0, 0.4),
    # wal_mode asks again, and gives up after its timeout
    (lambda cursor: db.wal_mode(cursor, 0.2), 0.2, 0.9),
], ids=["sqlite-at-once", "wal_mode-after-its-timeout"])
def test_wal_mode_is_refused_while_a_new_file_is_being_written(
        tmp_path: Path, turn: Callable[[sqlite3.Cursor], object], least: float, most: float) -> None:
    path = tmp_path / "new.db"
    committer = hold_reserved_lock(path, 1.0)
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            turn(conn.cursor())
        assert least <= time.monotonic() - started < most
        conn.close()
    finally:
        committer.join()


def test_a_connection_waits_for_a_new_file_being_written_then_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    committer = hold_reserved_lock(path, 0.3)
    database = Database(f"sqlite:///{path}")
    try:
        started = time.monotonic()
        database.migrate()
        assert time.monotonic() - started >= 0.25   # it waited for the writer
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert database.schema_revision() == db.known_revisions()[1]
    finally:
        committer.join()
        database.dispose()
