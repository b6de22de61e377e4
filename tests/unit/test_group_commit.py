"""Group commit of audit rows (service.store.group_commit): rows submitted while a commit runs
go together in the next one, each submitter returns only once its own rows are committed, and a
row the database refuses fails only its own submitter.

The "database" here is a list that a commit extends atomically or not at all; the threads are
ordered with events (the waits have generous timeouts only so that a bug hangs no test run)."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from service.store.group_commit import GroupCommit

WAIT = 30.0   # seconds; a safety net against a hang, never a measurement


class FakeDatabase:
    """Commits rows all together; refuses a transaction holding a row marked bad; the first
    commit can be held open until released."""

    def __init__(self) -> None:
        self.committed: list[dict[str, Any]] = []
        self.transactions: list[list[str]] = []
        self.vias: list[tuple[Any, str]] = []   # (via given, the thread that committed)
        self.hold_first = threading.Event()
        self.in_first = threading.Event()
        self.down = False
        self._lock = threading.Lock()

    def commit(self, rows: list[dict[str, Any]], via: Any = None) -> None:
        self.vias.append((via, threading.current_thread().name))
        first = not self.transactions and not self.in_first.is_set()
        if first:
            self.in_first.set()
            assert self.hold_first.wait(WAIT)
        if self.down:
            raise ConnectionError("the database is away")
        if any(row.get("bad") for row in rows):
            raise ValueError("duplicate id")
        with self._lock:
            self.committed.extend(rows)
            self.transactions.append([row["id"] for row in rows])


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the threads did not get there"
        time.sleep(0.001)


def _submitter(group: GroupCommit, db: FakeDatabase, rows: list[dict[str, Any]],
               outcome: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            group.submit(rows, via=f"connection of {threading.current_thread().name}")
            # on return, its rows must already be committed
            outcome[rows[0]["id"]] = all(row in db.committed for row in rows)
        except Exception as exc:  # noqa: BLE001 - recorded for the test's assertions
            outcome[rows[0]["id"]] = exc
    thread = threading.Thread(target=run, name=f"thread-{rows[0]['id']}")
    thread.start()
    return thread


def test_one_submit_commits_its_rows_before_returning() -> None:
    db = FakeDatabase()
    db.hold_first.set()
    GroupCommit(db.commit).submit([{"id": "a"}, {"id": "b"}])
    assert db.transactions == [["a", "b"]]


def test_rows_submitted_during_a_commit_go_together_in_the_next_one() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    outcome: dict[str, Any] = {}
    first = _submitter(group, db, [{"id": "r1"}], outcome)
    assert db.in_first.wait(WAIT)                       # r1's commit is running
    others = [_submitter(group, db, [{"id": f"r{i}"}], outcome) for i in range(2, 6)]
    _wait_until(lambda: group.waiting == 4)             # all four queued behind it
    assert outcome == {}                                # nobody answered before a commit
    db.hold_first.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert outcome == {f"r{i}": True for i in range(1, 6)}
    assert db.transactions[0] == ["r1"]
    assert sorted(db.transactions[1]) == ["r2", "r3", "r4", "r5"]   # one transaction for the four
    assert len(db.transactions) == 2
    # each transaction ran in the thread of one of its submitters, on that thread's own connection
    assert db.vias[0][1] == "thread-r1" and db.vias[1][1] in {f"thread-r{i}" for i in range(2, 6)}
    assert all(via == f"connection of {thread}" for via, thread in db.vias)


def test_a_refused_row_fails_only_its_own_submit() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    outcome: dict[str, Any] = {}
    first = _submitter(group, db, [{"id": "r1"}], outcome)
    assert db.in_first.wait(WAIT)
    others = [_submitter(group, db, [{"id": "r2"}], outcome),
              _submitter(group, db, [{"id": "bad", "bad": True}], outcome),
              _submitter(group, db, [{"id": "r3"}], outcome)]
    _wait_until(lambda: group.waiting == 3)
    db.hold_first.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert outcome["r1"] is True and outcome["r2"] is True and outcome["r3"] is True
    assert isinstance(outcome["bad"], ValueError)
    assert sorted(row["id"] for row in db.committed) == ["r1", "r2", "r3"]


def test_a_database_away_fails_every_submit_of_the_batch_and_the_next_submit_works() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    outcome: dict[str, Any] = {}
    db.down = True
    first = _submitter(group, db, [{"id": "r1"}], outcome)
    assert db.in_first.wait(WAIT)
    others = [_submitter(group, db, [{"id": f"r{i}"}], outcome) for i in (2, 3)]
    _wait_until(lambda: group.waiting == 2)
    db.hold_first.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert all(isinstance(outcome[k], ConnectionError) for k in ("r1", "r2", "r3"))
    assert db.committed == []
    db.down = False
    group.submit([{"id": "r4"}])                        # the group is not left stuck
    assert [row["id"] for row in db.committed] == ["r4"]


def test_many_threads_every_row_committed_once() -> None:
    db = FakeDatabase()
    db.hold_first.set()
    group = GroupCommit(db.commit)
    outcome: dict[str, Any] = {}
    threads = [_submitter(group, db, [{"id": f"t{i}-{j}"}], outcome) for i in range(16) for j in range(20)]
    for thread in threads:
        thread.join(WAIT)
    assert set(outcome.values()) == {True} and len(outcome) == 320
    ids = [row["id"] for row in db.committed]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 320


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_what_the_commit_raises_reaches_its_submitter(error: type[BaseException]) -> None:
    def commit(_rows: list[dict[str, Any]], _via: Any) -> None:
        raise error()
    with pytest.raises(error):
        GroupCommit(commit).submit([{"id": "a"}])
