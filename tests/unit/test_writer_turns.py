"""SQLite writers take turns through a lock file (service.store.writer_turns): a writer waits for
the turn of another, gets it once that transaction has committed or rolled back, and no turn
outlives its connection or its process. The turns exist only for SQLite files."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.store import Database
from service.store.db import make_engine
from service.store.writer_turns import WriterTurns, end_turn, writer_turns


def turn_is_free(path: str) -> bool:
    """Whether another open file could take the turn now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_only_sqlite_files_have_turns(tmp_path: Path) -> None:
    assert writer_turns(make_url(f"sqlite:///{tmp_path}/a.db"), 1).path == f"{tmp_path}/a.db-writer"  # type: ignore[union-attr]
    assert writer_turns(make_url("sqlite://"), 1) is None
    assert writer_turns(make_url("sqlite:///:memory:"), 1) is None
    assert writer_turns(make_url("postgresql+psycopg://u@127.0.0.1/db"), 1) is None


def test_a_writer_waits_for_the_turn_until_the_other_commits(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/w.db")
    lock_file = f"{tmp_path}/w.db-writer"
    with database.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    order: list[str] = []
    first_in = threading.Event()
    second_started = threading.Event()

    def second() -> None:
        second_started.set()
        with database.unit_of_work() as uow:
            order.append("second began")
            uow.conn.execute(text("INSERT INTO t VALUES (2)"))
            uow.commit()

    with database.unit_of_work() as uow:
        first_in.set()
        assert not turn_is_free(lock_file), "a write transaction holds the turn"
        waiter = threading.Thread(target=second)
        waiter.start()
        second_started.wait(5)
        time.sleep(0.2)   # the second writer is waiting for the turn meanwhile
        uow.conn.execute(text("INSERT INTO t VALUES (1)"))
        order.append("first committing")
        uow.commit()
    waiter.join(10)
    assert order == ["first committing", "second began"]
    assert turn_is_free(lock_file), "both turns were given back"
    with database.engine.connect() as conn:
        assert list(conn.execute(text("SELECT n FROM t ORDER BY rowid")).scalars()) == [1, 2]
    database.dispose()


def test_a_rolled_back_transaction_gives_the_turn_back(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/r.db")
    with pytest.raises(RuntimeError):
        with database.unit_of_work():
            raise RuntimeError("the request failed")
    assert turn_is_free(f"{tmp_path}/r.db-writer")
    database.dispose()


def test_a_turn_left_by_a_caller_ends_when_its_connection_returns_to_the_pool(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/p.db")
    with engine.connect() as conn:
        conn = conn.execution_options(toh_write=True)
        conn.begin()
        assert not turn_is_free(f"{tmp_path}/p.db-writer")
        conn.commit()   # committed without end_turn: the pool's checkin ends it
    assert turn_is_free(f"{tmp_path}/p.db-writer")
    engine.dispose()


def test_readers_take_no_turn(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/q.db")
    with database.unit_of_work(write=False) as uow:
        uow.conn.execute(text("SELECT 1"))
        assert turn_is_free(f"{tmp_path}/q.db-writer")
    database.dispose()


def test_the_turn_of_a_killed_process_is_free(tmp_path: Path) -> None:
    path = f"{tmp_path}/k.db-writer"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from service.store.writer_turns import WriterTurns\n"
        f"info = {{}}; WriterTurns({path!r}, 5).take(info); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not turn_is_free(path)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        info: dict[str, object] = {}
        WriterTurns(path, 5).take(info)
        assert info, "the turn was taken"
        end_turn(info)
    finally:
        holder.kill()


def test_a_writer_gives_up_waiting_after_the_timeout_and_relies_on_sqlite(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    path = f"{tmp_path}/t.db-writer"
    held: dict[str, object] = {}
    WriterTurns(path, 5).take(held)
    waiting: dict[str, object] = {}
    WriterTurns(path, 0.05).take(waiting)
    assert waiting == {}, "no turn was recorded"
    assert "going on to SQLite's lock" in caplog.text
    end_turn(held)
    assert turn_is_free(path)
