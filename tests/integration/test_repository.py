"""The repository on SQLite and PostgreSQL: versions, history, locking, rollback."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from service.fhir.errors import BadRequest, Conflict, Gone, NotFound, PreconditionFailed, Unprocessable
from service.store import Change, Database
from service.store.schema import resource_versions, resources


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **fields}


def test_create_assigns_id_and_first_version(database: Database) -> None:
    with database.unit_of_work() as uow:
        stored, created = uow.repo.create(patient(id="client-chosen", gender="female"))
        uow.commit()
    assert created and stored.version == 1 and stored.res_id != "client-chosen"
    with database.unit_of_work(write=False) as uow:
        body = uow.repo.read("Patient", stored.res_id).resource()
    assert body["gender"] == "female"
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].startswith("2026-01-05T09:00:00")


def test_update_keeps_every_version_and_history_is_newest_first(database: Database, clock) -> None:
    with database.unit_of_work() as uow:
        stored, _ = uow.repo.create(patient(gender="male"))
        pid = stored.res_id
        for n, gender in enumerate(["female", "other", "unknown"], start=2):
            clock.advance(timedelta(days=1))
            new, created = uow.repo.update("Patient", pid, patient(id=pid, gender=gender), if_match=n - 1)
            assert not created and new.version == n
        uow.commit()
    with database.unit_of_work(write=False) as uow:
        assert uow.repo.vread("Patient", pid, 1).resource()["gender"] == "male"
        assert uow.repo.vread("Patient", pid, 3).resource()["gender"] == "other"
        versions, total = uow.repo.history("Patient", pid)
        assert total == 4 and [v.version for v in versions] == [4, 3, 2, 1]
        with pytest.raises(NotFound):
            uow.repo.vread("Patient", pid, 5)


def test_stale_if_match_changes_nothing(database: Database) -> None:
    with database.unit_of_work() as uow:
        pid = uow.repo.create(patient(gender="male"))[0].res_id
        uow.repo.update("Patient", pid, patient(id=pid, gender="female"), if_match=1)
        with pytest.raises(PreconditionFailed):
            uow.repo.update("Patient", pid, patient(id=pid, gender="other"), if_match=1)
        with pytest.raises(PreconditionFailed):
            uow.repo.delete("Patient", pid, if_match=1)
        uow.commit()
    with database.unit_of_work(write=False) as uow:
        current = uow.repo.read("Patient", pid)
    assert current.version == 2 and current.resource()["gender"] == "female"


def test_put_creates_with_client_id_and_rejects_mismatch(database: Database) -> None:
    with database.unit_of_work() as uow:
        stored, created = uow.repo.update("Patient", "pat-1", patient(id="pat-1"))
        assert created and stored.version == 1
        with pytest.raises(BadRequest):
            uow.repo.update("Patient", "pat-1", patient(id="pat-2"))
        with pytest.raises(PreconditionFailed):
            uow.repo.update("Patient", "new-one", patient(id="new-one"), if_match=1)
        uow.commit()


def test_delete_then_read_is_gone_and_update_resurrects(database: Database) -> None:
    with database.unit_of_work() as uow:
        pid = uow.repo.create(patient())[0].res_id
        deleted = uow.repo.delete("Patient", pid)
        assert deleted is not None and deleted.version == 2 and deleted.deleted
        assert uow.repo.delete("Patient", pid) is None  # already deleted: no new version
        with pytest.raises(Gone):
            uow.repo.read("Patient", pid)
        with pytest.raises(Gone):
            uow.repo.vread("Patient", pid, 2)
        # R4 http.html#delete: deleting what never existed is 200/204; nothing is written
        assert uow.repo.delete("Patient", "never-was") is None
        assert uow.repo.current("Patient", "never-was") is None
        with pytest.raises(PreconditionFailed):
            uow.repo.delete("Patient", "never-was", if_match=1)
        back, created = uow.repo.update("Patient", pid, patient(id=pid))
        assert back.version == 3 and not created
        uow.commit()


def test_invalid_content_stores_nothing(database: Database) -> None:
    with database.unit_of_work() as uow:
        with pytest.raises(Unprocessable) as err:
            uow.repo.create({"resourceType": "Observation", "status": "final"})  # no code
        assert any("Observation.code" in i.expression for i in err.value.issues)
        uow.commit()
    with database.unit_of_work(write=False) as uow:
        assert uow.conn.execute(select(func.count()).select_from(resources)).scalar_one() == 0


def test_rollback_leaves_nothing_behind(database: Database) -> None:
    class Failing:
        def on_write(self, conn: Any, change: Change) -> None:
            if change.res_type == "Condition":
                raise RuntimeError("hook failed")

    database.add_hook(Failing())
    with pytest.raises(RuntimeError):
        with database.unit_of_work() as uow:
            uow.repo.create(patient())
            uow.repo.create({"resourceType": "Condition", "subject": {"reference": "Patient/x"}})
            uow.commit()
    with database.unit_of_work(write=False) as uow:
        assert uow.conn.execute(select(func.count()).select_from(resources)).scalar_one() == 0
        assert uow.conn.execute(select(func.count()).select_from(resource_versions)).scalar_one() == 0


def test_hooks_see_each_write_in_the_same_transaction(database: Database) -> None:
    seen: list[tuple[str, int, bool]] = []

    class Recorder:
        def on_write(self, conn: Any, change: Change) -> None:
            count = conn.execute(select(func.count()).select_from(resource_versions)).scalar_one()
            seen.append((change.method, change.version, change.resource is None))
            assert count >= change.version  # the version row is visible to the hook

    database.add_hook(Recorder())
    with database.unit_of_work() as uow:
        pid = uow.repo.create(patient())[0].res_id
        uow.repo.update("Patient", pid, patient(id=pid, gender="male"))
        uow.repo.delete("Patient", pid)
        uow.commit()
    assert seen == [("POST", 1, False), ("PUT", 2, False), ("DELETE", 3, True)]


def test_a_version_written_behind_our_back_is_a_conflict(database: Database) -> None:
    with database.unit_of_work() as uow:
        stored = uow.repo.create(patient())[0]
        uow.commit()
    with database.unit_of_work() as uow:  # another process already wrote version 2's history row
        rid = uow.conn.execute(select(resources.c.rid)).scalar_one()
        uow.conn.execute(insert(resource_versions).values(
            res_type="Patient", res_id=stored.res_id, version=2, rid=rid, last_updated=stored.last_updated,
            method="PUT", deleted=False, content="{}"))
        uow.commit()
    with database.unit_of_work() as uow:
        with pytest.raises(Conflict):
            uow.repo.update("Patient", stored.res_id, patient(id=stored.res_id, gender="male"))


def test_concurrent_updates_with_same_if_match_one_wins(database: Database) -> None:
    with database.unit_of_work() as uow:
        pid = uow.repo.create(patient())[0].res_id
        uow.commit()
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def writer(n: int) -> None:
        barrier.wait()
        try:
            with database.unit_of_work() as uow:
                uow.repo.update("Patient", pid, patient(id=pid, gender=["male", "female"][n % 2]), if_match=1)
                uow.commit()
            outcomes.append("ok")
        except PreconditionFailed:
            outcomes.append("412")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["412"] * 5 + ["ok"]
    with database.unit_of_work(write=False) as uow:
        versions, total = uow.repo.history("Patient", pid)
    assert total == 2 and [v.version for v in versions] == [2, 1]


def test_migrate_is_idempotent(database: Database) -> None:
    database.migrate()
    database.migrate()
    with database.unit_of_work(write=False) as uow:
        assert uow.conn.execute(select(func.count()).select_from(resources)).scalar_one() == 0


def test_concurrent_updates_without_if_match_all_land_in_order(database: Database) -> None:
    with database.unit_of_work() as uow:
        pid = uow.repo.create(patient())[0].res_id
        uow.commit()
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def writer() -> None:
        barrier.wait()
        try:
            with database.unit_of_work() as uow:
                uow.repo.update("Patient", pid, patient(id=pid, gender="male"))
                uow.commit()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with database.unit_of_work(write=False) as uow:
        versions, total = uow.repo.history("Patient", pid)
    assert total == 6 and sorted(v.version for v in versions) == [1, 2, 3, 4, 5, 6]


def test_analyze_gives_the_planner_statistics_of_what_was_loaded(database: Database) -> None:
    """Database.analyze (run after `toh import`): PostgreSQL's planner then counts the rows just
    loaded instead of planning for empty tables; SQLite is left as it is (no sqlite_stat1)."""
    from sqlalchemy import text
    with database.unit_of_work() as uow:
        for n in range(40):
            uow.repo.create(patient(id=f"p{n}"))
        uow.commit()
    database.analyze()
    with database.engine.connect() as conn:
        if database.dialect == "postgresql":
            estimated = conn.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'resources'")).scalar_one()
            assert estimated == conn.execute(select(func.count()).select_from(resources)).scalar_one() == 40
        else:
            assert conn.execute(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")).scalar_one() == 0
