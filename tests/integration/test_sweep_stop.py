"""A sweep asked to stop (the process got SIGTERM: service.scheduling.stop_background) finishes
the item in hand, claims no other, and leaves the rest due for the next process; the tick's
stop_background returns only once the sweep in progress has (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
from types import SimpleNamespace
from datetime import datetime, timedelta, timezone
from typing import Any

from service.store import Database, FollowUps
from service.workflows.sweep import sweep

NOW = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)


def _due(database: Database, subjects: list[str]) -> None:
    with database.unit_of_work() as uow:
        for n, subject in enumerate(subjects):
            FollowUps(uow.conn, database.dialect).schedule("probe", subject, NOW - timedelta(hours=n + 1))
        uow.conn.commit()
        uow.committed = True


def _still_due(database: Database) -> int:
    with database.unit_of_work(write=False) as uow:
        return FollowUps(uow.conn, database.dialect).count_due(NOW)


def test_stop_finishes_the_item_in_hand_and_claims_no_other(database: Database) -> None:
    _due(database, ["a", "b", "c", "d"])
    handled: list[str] = []
    stopping = threading.Event()

    def probe(_uow: Any, item: Any, _now: datetime) -> list[str]:
        handled.append(item.subject)
        stopping.set()                      # SIGTERM arrives while this item is in hand
        return ["probed"]

    database.add_due_handler("probe", probe)
    report = sweep(database, NOW, stop=stopping.is_set)
    assert handled == ["d"] and [i.subject for i, _ in report.handled] == ["d"]   # earliest due first
    assert _still_due(database) == 3
    assert [i.subject for i, _ in sweep(database, NOW).handled] == ["c", "b", "a"]   # the next process
    assert _still_due(database) == 0


def test_stop_background_waits_for_the_sweep_in_progress(database: Database, monkeypatch: Any) -> None:
    from service import scheduling

    _due(database, ["a", "b"])
    entered, release, handled = threading.Event(), threading.Event(), []

    def slow(_uow: Any, item: Any, _now: datetime) -> list[str]:
        entered.set()
        release.wait(10)
        handled.append(item.subject)
        return ["slow"]

    database.add_due_handler("probe", slow)
    services = SimpleNamespace(database=database, clock=SimpleNamespace(now=lambda: NOW),
                               settings=SimpleNamespace(sweep_interval_seconds=3600))
    monkeypatch.setattr(scheduling, "_stopping", threading.Event())
    scheduler = scheduling.start_background(services)  # type: ignore[arg-type]
    scheduler.modify_job("toh-sweep", next_run_time=datetime.now(timezone.utc))
    assert entered.wait(10), "the tick did not run"
    stopper = threading.Thread(target=scheduling.stop_background)
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive(), "stop_background returned while the sweep held an item"
    release.set()
    stopper.join(10)
    assert not stopper.is_alive() and handled == ["b"]
    assert _still_due(database) == 1 and not scheduler.running
