"""SQLite's WAL is checkpointed after a write commits, not inside the commit, and in a thread of
its own, not in the request that wrote (service.store.db: Database._checkpoint_after_write).
SQLite only: the WAL checkpoint is SQLite's own mechanism (https://www.sqlite.org/wal.html#ckpt);
PostgreSQL has nothing like it to test."""
from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from service.store import Database, db
from tests.conftest import FixedClock


def patient_ids_in_the_database_file_alone(path: Path, tmp_path: Path) -> set[str]:
    """The Patients the main database file holds by itself, without its -wal file: those
    whose pages a checkpoint has copied there."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(path, alone)
    with sqlite3.connect(alone) as conn:
        return {row[0] for row in conn.execute("SELECT res_id FROM resources WHERE res_type = 'Patient'")}


def create_patient(database: Database) -> str:
    """A Patient written; returns once a checkpoint it started (if any) is over."""
    started = database.checkpoint_thread
    with database.unit_of_work() as uow:
        stored, _ = uow.repo.create({"resourceType": "Patient", "gender": "female"})
        uow.commit()
    if database.checkpoint_thread is not started:
        assert database.checkpoint_thread is not None
        database.checkpoint_thread.join(30)
    return stored.res_id


def test_a_write_is_checkpointed_after_its_commit_at_most_once_an_interval(
        tmp_path: Path, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "toh.db"
    database = Database(f"sqlite:///{path}", clock=clock)
    database.migrate()
    now = [1000.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: now[0])
    try:
        first = create_patient(database)
        assert first in patient_ids_in_the_database_file_alone(path, tmp_path)   # checkpointed
        second = create_patient(database)   # within the interval: left in the WAL
        assert second not in patient_ids_in_the_database_file_alone(path, tmp_path)
        now[0] += db.CHECKPOINT_INTERVAL
        third = create_patient(database)
        assert {second, third} <= patient_ids_in_the_database_file_alone(path, tmp_path)
        with database.engine.connect() as conn:   # SQLite's own checkpoint is only the backstop
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        assert pages == db.WAL_AUTOCHECKPOINT_PAGES
    finally:
        database.dispose()


def test_every_connection_has_the_page_cache_a_transaction_bundle_needs(tmp_path: Path, clock: FixedClock) -> None:
    """SQLite's default page cache (2 MiB) is smaller than what a patient's transaction Bundle
    touches in the search index; every pooled connection, writers' and readers', gets
    SQLITE_CACHE_KIB (a negative cache_size is in KiB: https://www.sqlite.org/pragma.html#pragma_cache_size)."""
    database = Database(f"sqlite:///{tmp_path / 'toh.db'}", clock=clock)
    database.migrate()
    try:
        with database.engine.connect() as first, database.engine.connect() as second:
            sizes = {conn.exec_driver_sql("PRAGMA cache_size").scalar_one() for conn in (first, second)}
        assert sizes == {-db.SQLITE_CACHE_KIB}
        assert db.SQLITE_CACHE_KIB * 1024 > 2 * 1024 * 1024
    finally:
        database.dispose()


def test_the_write_does_not_wait_for_its_checkpoint(tmp_path: Path, clock: FixedClock,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint copies pages and fsyncs the database file (15-28 ms here): the request
    that wrote must answer without waiting for it."""
    path = tmp_path / "toh.db"
    database = Database(f"sqlite:///{path}", clock=clock)
    database.migrate()
    now = [1000.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: now[0])
    release = threading.Event()
    checkpoint = Database._checkpoint_in_background

    def held(self: Database) -> None:
        release.wait(30)
        checkpoint(self)

    try:
        create_patient(database)   # the schema's pages in the database file
        now[0] += db.CHECKPOINT_INTERVAL
        monkeypatch.setattr(Database, "_checkpoint_in_background", held)
        with database.unit_of_work() as uow:
            stored, _ = uow.repo.create({"resourceType": "Patient", "gender": "female"})
            uow.commit()
        running = database.checkpoint_thread
        assert running is not None and running.is_alive()          # the write returned first
        assert stored.res_id not in patient_ids_in_the_database_file_alone(path, tmp_path)
        release.set()
        running.join(30)
        assert stored.res_id in patient_ids_in_the_database_file_alone(path, tmp_path)
    finally:
        release.set()
        database.dispose()
