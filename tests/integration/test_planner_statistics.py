"""PostgreSQL's planner statistics and the write path (issue 18, loading `toh synth` bundles).

A transaction Bundle's If-None-Exist (``Patient?identifier=system|value``) must look the record
number up in an index, whatever the size of the store: without statistics, or with statistics
that take res_type, param and system as independent, PostgreSQL expected one row for the
Patients of one record-number system and scanned all of them (every earlier patient) for each
bundle. And the service itself analyzes the tables that autovacuum has left stale (it may be
off, as on the benchmark machine, or behind during a long load).
See https://www.postgresql.org/docs/15/planner-stats.html.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from service.store import Database
from service.store.search import SearchEngine
from tests.databases import scratch_postgres

pytestmark = pytest.mark.postgres

MRN = "https://clinic.example.org/NamingSystem/mrn"
PATIENTS = 3_000
OBSERVATION_TOKENS = 400_000


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with scratch_postgres("toh_stats") as found:
        database = Database(found)
        database.migrate()
        with database.engine.begin() as conn:   # as on the benchmark machine: no autovacuum
            for table in ("resources", "search_token"):
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        database.dispose()
        yield found


def _changes_counted(database: Database, table: str, at_least: int) -> None:
    """Wait (up to 10 s) until PostgreSQL's cumulative statistics, which a backend reports up to
    a second after its commit, count at_least rows changed in table since its last ANALYZE."""
    deadline = time.monotonic() + 10
    with database.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        while True:
            mods = conn.execute(text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = :t"),
                                {"t": table}).scalar_one()
            if mods >= at_least or time.monotonic() > deadline:
                assert mods >= at_least, f"{table}: {mods} changes counted, expected {at_least}"
                return
            time.sleep(0.2)


def _index_conditions(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(index name, index condition) of every scan of a search_token index in a JSON plan."""
    found = []
    if str(plan.get("Index Name", "")).startswith("ix_search_token"):
        found.append((plan["Index Name"], plan.get("Index Cond", "")))
    for child in plan.get("Plans", ()):
        found.extend(_index_conditions(child))
    return found


def test_a_record_number_is_looked_up_by_its_code_in_a_store_of_many_patients(url: str) -> None:
    database = Database(url)
    SearchEngine().init_database(database)   # the conditional-request finder of create_app
    try:
        with database.engine.begin() as conn:
            conn.execute(text("TRUNCATE search_token"))
            # every Patient's record number, of one system, among many Observation codes
            conn.execute(text(
                "INSERT INTO search_token (rid, res_type, param, system, code, code_ci) "
                "SELECT i, 'Patient', 'identifier', :mrn, 'MRN-' || i, 'mrn-' || i "
                "FROM generate_series(1, :n) AS i"), {"mrn": MRN, "n": PATIENTS})
            conn.execute(text(
                "INSERT INTO search_token (rid, res_type, param, system, code) "
                "SELECT i, 'Patient', 'gender', 'http://hl7.org/fhir/administrative-gender', "
                "CASE WHEN i % 2 = 0 THEN 'female' ELSE 'male' END FROM generate_series(1, :n) AS i"), {"n": PATIENTS})
            # the patients' records: Observations (code, category, status) and rule Flags
            conn.execute(text(
                "INSERT INTO search_token (rid, res_type, param, system, code) "
                "SELECT :n + i, 'Observation', (ARRAY['code', 'category', 'status'])[i % 3 + 1], "
                "'http://loinc.org', (i % 50)::text FROM generate_series(1, :m) AS i"),
                {"n": PATIENTS, "m": OBSERVATION_TOKENS})
            conn.execute(text(
                "INSERT INTO search_token (rid, res_type, param, system, code, code_ci) "
                "SELECT :n + :m + i, 'Flag', 'identifier', 'urn:flag-key', 'K' || i, 'k' || i "
                "FROM generate_series(1, :n) AS i"), {"n": PATIENTS, "m": OBSERVATION_TOKENS})
        _changes_counted(database, "search_token", 3 * PATIENTS + OBSERVATION_TOKENS)
        assert "search_token" in database.analyze_stale()
        assert "search_token" not in database.analyze_stale()   # fresh now: left alone

        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if "search_token" in statement:
                captured.append((statement, parameters))

        with database.unit_of_work() as uow:
            event.listen(database.engine, "before_cursor_execute", capture)
            try:
                assert uow.repo.find_ids("Patient", [("identifier", f"{MRN}|MRN-1717")]) == []
            finally:
                event.remove(database.engine, "before_cursor_execute", capture)
            assert len(captured) == 1
            statement, parameters = captured[0]
            plan = uow.conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
        if isinstance(plan, str):
            plan = json.loads(plan)
        scans = _index_conditions(plan[0]["Plan"])
        assert scans, plan
        # the value is part of every index condition: no scan of all the system's identifiers
        assert all("code" in cond for _, cond in scans), scans
    finally:
        database.dispose()


def test_the_service_analyzes_tables_that_its_writes_left_stale(url: str) -> None:
    database = Database(url)
    database.statistics_check_rows = 0   # no check after this first write
    try:
        with database.engine.begin() as conn:
            conn.execute(text("ANALYZE resources"))
            before = conn.execute(text("SELECT count(*) FROM resources")).scalar_one()
        with database.unit_of_work() as uow:
            for n in range(60 + before // 5):   # more than autovacuum's 50 rows + 10%
                uow.repo.create({"resourceType": "Patient", "identifier": [{"system": MRN, "value": f"W-{n}"}]})
            uow.commit()
        _changes_counted(database, "resources", 60)
        with database.engine.connect() as conn:
            analyzed = conn.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'resources'")
                                    ).scalar_one()
        database.statistics_check_rows = 1
        with database.unit_of_work() as uow:   # the next write's check finds the table stale
            uow.repo.create({"resourceType": "Patient"})
            uow.commit()
        assert database.statistics_thread is not None   # in the background: the write did not wait
        database.statistics_thread.join(30)
        with database.engine.connect() as conn:
            after = conn.execute(text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'resources'")
                                 ).scalar_one()
        assert after is not None and after != analyzed
    finally:
        database.dispose()


def test_no_check_until_enough_resources_are_written(url: str) -> None:
    database = Database(url)
    database.statistics_check_rows = 1_000
    calls: list[int] = []

    def counted() -> list[str]:
        calls.append(1)
        return []

    database.analyze_stale = counted  # type: ignore[method-assign]
    try:
        for _ in range(3):
            with database.unit_of_work() as uow:
                uow.repo.create({"resourceType": "Patient"})
                uow.commit()
        assert calls == []
        database.statistics_check_rows = 2
        with database.unit_of_work() as uow:
            uow.repo.create({"resourceType": "Patient"})
            uow.commit()
        assert database.statistics_thread is not None
        database.statistics_thread.join(30)
        assert calls == [1]
    finally:
        database.dispose()
