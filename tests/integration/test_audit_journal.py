"""The audit journal of a SQLite file (service.store.audit_journal): reads' AuditEvents appended
to a file before the answer, moved into the table before anything reads the table, and never
lost or doubled: not through a SIGKILL of the appender or of a drainer, a torn record, drains
racing appends from several processes, nor a table that cannot be written.

SQLite only, by construction: PostgreSQL has no journal (a server several hosts share; its
appends commit to the table, tests/integration/test_audit.py runs them on both)."""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from service.store import audit_journal
from service.store.audit import COLUMNS, events_insert
from service.store.audit_journal import decode, encode
from service.store.db import Database
from tests.integration.test_audit import _audit_row


def _ids(url: str) -> list[str]:
    """The ids in the audit table, read by another engine (as an auditor's SQL would)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(text("SELECT id FROM audit_events")).scalars())
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    db = Database(url)
    db.migrate()
    db.dispose()
    return url


def test_records_survive_a_torn_one_between_them() -> None:
    """A record torn by a SIGKILL in the middle of its write(2) spoils its own line only: the
    records after it, written by other requests that were answered, are read whole."""
    records = [("a", "2026-01-05 09:00:00.000000", None, 1), ("b", "x\ny\u202e\u0000", None, 2)]
    data = encode(records[:1]) + encode(records[1:])[:9] + encode(records[1:])
    assert decode(data, 4) == ([records[0], records[1]], 1)
    assert decode(b'\n["only", "three", "values"]\n', 4) == ([], 1)


def test_a_reads_event_waits_in_the_journal_and_every_audit_search_sees_it(tmp_path: Path, clock: Any) -> None:
    from service import create_app
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    app = create_app({"database_url": url, "base_url": "http://toh.test/fhir"}, clock=clock)
    database = app.extensions["toh"].database
    try:
        client = app.test_client()
        assert client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"},
                          headers={"Content-Type": "application/fhir+json"}).status_code == 201
        assert client.get("/fhir/Patient/p1").status_code == 200
        journal = Path(f"{tmp_path / 'toh.db'}-audit")
        assert journal.stat().st_size > 0                       # the read's event: appended, not committed
        found = client.get("/fhir/AuditEvent?entity=Patient/p1&subtype=read").get_json()
        assert found["total"] == 1                              # the search drained the journal first
        assert journal.stat().st_size > 0                       # (now holding the search's own event)
        event_id = found["entry"][0]["resource"]["id"]
        assert client.get(f"/fhir/AuditEvent/{event_id}").status_code == 200
    finally:
        database.dispose()
    assert journal.stat().st_size == 0                          # dispose drained it: copied, emptied, moved
    assert not list(tmp_path.glob("toh.db-audit.sealed.*"))
    assert len(_ids(url)) == 4                                  # the write, the read, the search, the read of the event


def _append_then_die(url: str, count: int) -> None:
    db = Database(url)
    from datetime import datetime, timezone
    now = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    for i in range(count):
        db.append_audit([_audit_row(f"k{i}", now)])
    os.kill(os.getpid(), signal.SIGKILL)                        # no dispose, no drain


def test_appended_events_survive_a_sigkill_and_a_torn_record(sqlite_url: str, caplog: Any) -> None:
    """What append_audit returned from is kept through a SIGKILL of its process; the next
    process's drain moves it into the table, skipping (and logging) a torn record."""
    child = multiprocessing.get_context("fork").Process(target=_append_then_die, args=(sqlite_url, 50))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    journal = sqlite_url.removeprefix("sqlite:///") + "-audit"
    with open(journal, "ab") as handle:
        handle.write(b'\n["torn", "2026-01-05')                 # a write cut short by a kill
    db = Database(sqlite_url)
    try:
        with caplog.at_level(logging.WARNING, logger="service.store.audit_journal"):
            assert db.settle_audit() == 50
        assert "1 torn record" in caplog.text
        assert _ids(sqlite_url) == sorted(f"k{i}" for i in range(50))
    finally:
        db.dispose()


def test_a_drain_repeated_after_a_kill_inserts_nothing_twice_and_keeps_a_conflicting_event(
        sqlite_url: str, clock: Any, caplog: Any) -> None:
    """A drainer killed between its commit and emptying the journal leaves records already in
    the table: the next drain skips them. A different AuditEvent under an id already taken is
    not dropped in silence: it is kept in the .rejected file and logged."""
    db = Database(sqlite_url, clock=clock)
    journal_path = Path(sqlite_url.removeprefix("sqlite:///") + "-audit")
    try:
        db.append_audit([_audit_row("a", clock.now()), _audit_row("b", clock.now())])
        left = journal_path.read_bytes()
        assert db.settle_audit() == 2
        other = {**_audit_row("b", clock.now()), "entity": "Patient/p2"}     # another event under b's id
        journal_path.write_bytes(left + encode(events_insert(db.engine.dialect, [other])[1]))
        db.append_audit([_audit_row("c", clock.now())])
        with caplog.at_level(logging.ERROR, logger="service.store.audit_journal"):
            assert db.settle_audit() == 4
        assert _ids(sqlite_url) == ["a", "b", "c"]
        engine = create_engine(sqlite_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT entity FROM audit_events WHERE id = 'b'")).scalar_one() == "Patient/p1"
        engine.dispose()
        rejected = Path(f"{journal_path}.rejected").read_bytes()
        assert decode(rejected, len(COLUMNS))[0][0][7] == "Patient/p2"
        assert "1 audit record(s)" in caplog.text
    finally:
        db.dispose()


def test_a_drain_killed_while_it_sealed_leaves_nothing_doubled(sqlite_url: str, clock: Any) -> None:
    """Killed while copying the journal to a sealed part (a temporary copy left, the journal
    whole) or after renaming the part and before emptying the journal (the records twice): the
    next drain moves each record once and rejects none."""
    db = Database(sqlite_url, clock=clock)
    journal = Path(sqlite_url.removeprefix("sqlite:///") + "-audit")
    try:
        db.append_audit([_audit_row("a", clock.now()), _audit_row("b", clock.now())])
        whole = journal.read_bytes()
        Path(f"{journal}.sealed.00000000000000000001.1.tmp").write_bytes(whole[:40])   # a copy cut short
        Path(f"{journal}.sealed.00000000000000000002.1").write_bytes(whole)            # renamed, not emptied
        assert db.settle_audit() == 4
        assert _ids(sqlite_url) == ["a", "b"]
        assert sorted(p.name for p in journal.parent.iterdir() if ".sealed." in p.name) == []
        assert not Path(f"{journal}.rejected").exists()
    finally:
        db.dispose()


def _child_drains_after_a_fork_mid_drain(db: Database) -> None:
    journal = db.audit_journal
    assert journal is not None
    os._exit(0 if journal.background.acquire(blocking=False) and journal._fd == -1 else 1)


def test_a_child_forked_while_its_parent_drains_has_its_own_descriptor_and_drain(sqlite_url: str,
                                                                                 clock: Any) -> None:
    """A worker forked while the parent's background drain holds its lock (or with the parent's
    journal descriptor open) starts with its own: a lock held at the fork would stay held in the
    child, and an inherited descriptor shares the parent's flock."""
    db = Database(sqlite_url, clock=clock)
    try:
        db.append_audit([_audit_row("a", clock.now())])               # the parent's descriptor open
        assert db.audit_journal is not None and db.audit_journal.background.acquire(blocking=False)
        child = multiprocessing.get_context("fork").Process(target=_child_drains_after_a_fork_mid_drain, args=(db,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        db.audit_journal.background.release()
    finally:
        db.dispose()


def _append_many(url: str, prefix: str, threads: int, each: int) -> None:
    from datetime import datetime, timezone
    audit_journal.DRAIN_BYTES = 4096                           # drains often, racing the appends
    db = Database(url)
    now = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)

    def run(t: int) -> None:
        for i in range(each):
            db.append_audit([_audit_row(f"{prefix}-{t}-{i}", now)])

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    db.audit_journal.close()   # type: ignore[union-attr]
    os._exit(0)                                                 # leaves the rest in the journal


def test_appends_and_drains_of_several_processes_lose_and_double_nothing(sqlite_url: str) -> None:
    processes = [multiprocessing.get_context("fork").Process(target=_append_many, args=(sqlite_url, p, 4, 150))
                 for p in ("w1", "w2")]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert _ids(sqlite_url)                                     # drains ran while the appends went on
    db = Database(sqlite_url)
    try:
        db.settle_audit()
    finally:
        db.dispose()
    assert _ids(sqlite_url) == sorted(f"{p}-{t}-{i}" for p in ("w1", "w2") for t in range(4) for i in range(150))


def test_a_journal_due_is_drained_in_the_background(sqlite_url: str, clock: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_journal, "DRAIN_BYTES", 1)
    db = Database(sqlite_url, clock=clock)
    try:
        db.append_audit([_audit_row("a", clock.now())])
        assert db.drain_thread is not None
        db.drain_thread.join(30)
        assert _ids(sqlite_url) == ["a"]                       # no settle_audit: the append's drain
    finally:
        db.dispose()


def test_a_table_that_cannot_be_written_keeps_the_journal(sqlite_url: str, clock: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain that fails (the table away) raises the database's error and keeps every record
    for the next drain; an append that finds the journal due logs the failed drain and still
    returns, its record kept."""
    db = Database(sqlite_url, clock=clock)
    engine = create_engine(sqlite_url)
    try:
        db.append_audit([_audit_row("a", clock.now())])
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_away"))
        with pytest.raises(OperationalError):
            db.settle_audit()
        monkeypatch.setattr(audit_journal, "DRAIN_BYTES", 1)
        db.append_audit([_audit_row("b", clock.now())])             # due, its drain fails: logged, kept
        assert db.drain_thread is not None
        db.drain_thread.join(30)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events_away RENAME TO audit_events"))
        assert db.settle_audit() == 2
        assert _ids(sqlite_url) == ["a", "b"]
    finally:
        engine.dispose()
        db.dispose()


def test_a_part_is_read_and_inserted_a_chunk_at_a_time(sqlite_url: str, clock: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain's memory is a chunk of the part, whatever its size: records cut by a chunk's end
    are read whole with the next chunk."""
    monkeypatch.setattr(audit_journal, "_CHUNK", 7)
    db = Database(sqlite_url, clock=clock)
    try:
        db.append_audit([_audit_row(f"e{i}", clock.now()) for i in range(5)])
        assert db.settle_audit() == 5
        assert _ids(sqlite_url) == [f"e{i}" for i in range(5)]
    finally:
        db.dispose()


def test_a_journal_that_cannot_be_written_sends_the_events_to_the_table(sqlite_url: str, clock: Any) -> None:
    Path(sqlite_url.removeprefix("sqlite:///") + "-audit").mkdir()   # open(2) fails: EISDIR
    db = Database(sqlite_url, clock=clock)
    try:
        db.append_audit([_audit_row("a", clock.now())])
        assert _ids(sqlite_url) == ["a"]
        assert db.settle_audit() == 0
    finally:
        db.dispose()


def test_a_snapshot_for_export_sees_the_journals_events(sqlite_url: str, clock: Any) -> None:
    from service.store.bulk import audit_contents
    db = Database(sqlite_url, clock=clock)
    try:
        db.append_audit([_audit_row("a", clock.now())])
        with db.snapshot() as conn:
            assert [json.loads(c)["id"] for c in audit_contents(conn)] == ["a"]
    finally:
        db.dispose()
