"""The sweep under several processes on one PostgreSQL database, and after a SIGKILL.

Every patient's TOH began on 2025-03-01; swept as of 2025-07-01 each plan has four due items
(from the guide's PlanDefinition and the default lead 7 / grace 14 days): the 6-week review
ready (04-05) and overdue (04-27), the 3-month review ready (05-25) and overdue (06-16).
"Exactly once" is read from the store itself: each Task has one version with status ready,
one follow-up-overdue Flag per overdue Task (never rewritten), one reminder per event.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service import create_app
from service.clock import FixedClock
from service.fhir.canonical import CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, SNOMED, TOH_CODES
from service.workflows.care_plans import FOLLOW_UP_FLAG_KEY_SYSTEM
from service.workflows.sweep import sweep
from tests.databases import empty_tables

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SWEEP_AT = datetime(2025, 7, 1, 9, tzinfo=timezone.utc)
FORK = multiprocessing.get_context("fork")
PATIENTS = 24


def _condition(patient: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": f"toh-{patient}", "subject": {"reference": f"Patient/{patient}"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VER_STATUS, "code": "confirmed"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [{"coding": [{"system": SNOMED, "code": "24136001"}],
                          "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {
                              "coding": [{"system": SNOMED, "code": "7771000"}]}}]}],
            "onsetDateTime": "2025-03-01"}


def _app(url: str, at: datetime) -> Any:
    return create_app({"database_url": url, "base_url": "http://toh.test/fhir", "migrate_on_start": False},
                      clock=FixedClock(at))


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    empty_tables(pg_database_url)
    app = create_app({"database_url": pg_database_url, "base_url": "http://toh.test/fhir"},
                     clock=FixedClock(datetime(2025, 3, 5, 9, tzinfo=timezone.utc)))   # installs the guide
    database = app.extensions["toh"].database
    with database.unit_of_work() as uow:
        for n in range(PATIENTS):
            uow.repo.update("Patient", f"p{n}", {"resourceType": "Patient", "id": f"p{n}"})
            uow.repo.update("Condition", f"toh-p{n}", _condition(f"p{n}"))
        uow.commit()
    database.dispose()
    return pg_database_url


def _sweeper(url: str, start: Any, out: Any, delay: float) -> None:
    """A sweeping process (forked): build the app, wait for the others, sweep."""
    app = _app(url, SWEEP_AT)
    database = app.extensions["toh"].database
    if delay:
        for kind, handler in list(database.due_handlers.items()):
            def slow(uow: Any, item: Any, now: Any, handler: Any = handler) -> Any:
                done = handler(uow, item, now)
                time.sleep(delay)          # the item's writes are made, not yet committed
                return done
            database.due_handlers[kind] = slow
    start.wait()
    report = sweep(database, SWEEP_AT)
    out.put([line for line in report.lines()[:-1]])


def _store_counts(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT res_id, content FROM resource_versions WHERE res_type = 'Task'")).all()
        flags = conn.execute(text("SELECT res_id, version, content FROM resources WHERE res_type = 'Flag'")).all()
        reminders = conn.execute(text("SELECT kind, about FROM reminders")).all()
        due = conn.execute(text("SELECT count(*) FROM due_work WHERE due_at <= :t"), {"t": SWEEP_AT}).scalar_one()
    engine.dispose()
    ready = Counter(res_id for res_id, content in versions if json.loads(content)["status"] == "ready")
    overdue = Counter()
    rewritten = 0
    for _res_id, version, content in flags:
        flag = json.loads(content)
        for ident in flag.get("identifier", []):
            if ident["system"] == FOLLOW_UP_FLAG_KEY_SYSTEM:
                overdue[ident["value"]] += 1
                rewritten += version != 1
    return {"ready": ready, "overdue": overdue, "rewritten": rewritten, "due": due,
            "reminders": Counter((k, a) for k, a in reminders)}


def _assert_each_once(counts: dict[str, Any]) -> None:
    assert len(counts["ready"]) == 2 * PATIENTS and set(counts["ready"].values()) == {1}
    assert len(counts["overdue"]) == 2 * PATIENTS and set(counts["overdue"].values()) == {1}
    assert counts["rewritten"] == 0
    assert len(counts["reminders"]) == 4 * PATIENTS and set(counts["reminders"].values()) == {1}
    assert counts["due"] == 0


def test_four_sweeps_in_parallel_handle_each_item_once(pg_url: str) -> None:
    start, out = FORK.Barrier(4), FORK.Queue()
    workers = [FORK.Process(target=_sweeper, args=(pg_url, start, out, 0.01)) for _ in range(4)]
    for worker in workers:
        worker.start()
    lines = [line for _ in workers for line in out.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(lines) == 4 * PATIENTS and len(set(lines)) == len(lines)   # every action once, overall
    assert sum("ready" in line for line in lines) == 2 * PATIENTS
    _assert_each_once(_store_counts(pg_url))


def test_a_sweep_killed_mid_run_loses_nothing_and_doubles_nothing(pg_url: str) -> None:
    start, out = FORK.Barrier(1), FORK.Queue()
    victim = FORK.Process(target=_sweeper, args=(pg_url, start, out, 0.05))
    victim.start()
    engine = create_engine(pg_url)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM reminders")).scalar_one()
        if done >= PATIENTS:
            break
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)      # in the middle of an item (each holds 50 ms before commit)
    victim.join(timeout=30)
    engine.dispose()
    assert victim.exitcode == -signal.SIGKILL
    before = _store_counts(pg_url)
    assert PATIENTS <= sum(before["reminders"].values()) < 4 * PATIENTS, "the sweep was not killed mid-run"
    app = _app(pg_url, SWEEP_AT)
    report = sweep(app.extensions["toh"].database, SWEEP_AT)
    app.extensions["toh"].database.dispose()
    assert not report.failed
    _assert_each_once(_store_counts(pg_url))
