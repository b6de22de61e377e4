"""The alembic migrations (service/store/migrations) as an operator meets them (README, "Upgrades"):
an empty database upgraded to the head, the previous release's schema holding data upgraded to
the head (data, history, search and assessments unchanged, and writable afterwards), each
downgrade, and a schema newer than the code refused by the app, `toh serve` and `toh migrate`.

PREVIOUS_RELEASE is the alembic revision of the last release, bumped at each release; HEAD is
whatever the scripts' head is, so the test covers every migration added since (0007_*...).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, select, text

from service import create_app
from service.clock import FixedClock
from service.store import Database, SchemaTooNew, known_revisions
import service.store.followup  # noqa: F401 - its tables join the schema's metadata
from service.store.schema import metadata as store_metadata
from service.store.search.tables import metadata as search_metadata
from tests.cohort import snapshot, stored_rows, write_cohort
from tests.databases import scratch_postgres

# The schema of the last release: main when issue 17 was done. Bump it when a release is tagged.
PREVIOUS_RELEASE = "0006_audit_events"
HEAD = known_revisions()[1]
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_postgres() as url:
        yield url


def declared_tables() -> MetaData:
    """Every table the code declares: the store's (resources, follow-up, audit) and the search index's."""
    combined = MetaData()
    for declared in (store_metadata, search_metadata):
        for table in declared.tables.values():
            table.to_metadata(combined)
    return combined


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_scripts_form_one_line_from_the_first_to_the_head() -> None:
    known, head = known_revisions()
    assert PREVIOUS_RELEASE in known and "0001" in known
    assert head == HEAD


def test_empty_database_to_head_matches_the_schema_and_back_to_empty(empty_url: str) -> None:
    """Upgrade creates exactly what service.store's tables declare (alembic's autogenerate
    comparison finds nothing to add, drop or alter); every downgrade runs, down to no tables."""
    database = Database(empty_url)
    try:
        assert database.schema_revision() is None
        database.migrate()
        assert database.schema_revision() == HEAD
        with database.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), declared_tables())
        assert differences == []
        database.migrate()                     # a second run changes nothing
        assert database.schema_revision() == HEAD
        database.downgrade(PREVIOUS_RELEASE)
        assert database.schema_revision() == PREVIOUS_RELEASE
        database.downgrade("base")
        assert database.schema_revision() is None
        assert tables(empty_url) <= {"alembic_version"}
        database.migrate()
        assert database.schema_revision() == HEAD
    finally:
        database.dispose()


def copy_rows(source_url: str, target_url: str) -> None:
    """Copy every row of every table the target has from the source, in the target's columns,
    then move PostgreSQL's sequences past the copied keys: the target then holds what a release
    with the target's schema would have held."""
    source, target = create_engine(source_url), create_engine(target_url)
    try:
        target_meta, source_meta = MetaData(), MetaData()
        target_meta.reflect(target)
        source_meta.reflect(source)
        with source.connect() as src, target.begin() as dst:
            for table in target_meta.sorted_tables:
                if table.name == "alembic_version" or table.name not in source_meta.tables:
                    continue
                columns = [c.name for c in table.columns if c.name in source_meta.tables[table.name].columns]
                origin = source_meta.tables[table.name]
                rows = [dict(r._mapping) for r in src.execute(select(*(origin.c[c] for c in columns)))]
                if rows:
                    dst.execute(table.insert(), rows)
                for column in table.primary_key.columns:
                    if column.autoincrement is True or (column.autoincrement == "auto" and len(table.primary_key.columns) == 1
                                                        and column.type.python_type is int):
                        dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                         f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"))
    finally:
        source.dispose()
        target.dispose()


def _migrate(url: str) -> None:
    database = Database(url)
    try:
        database.migrate()
    finally:
        database.dispose()


def test_two_processes_starting_together_both_migrate_an_empty_database(empty_url: str) -> None:
    """As the workers of `toh serve` do, each migrating on start: one migrates under the
    migration lock while the other waits for it, then finds the head. Neither fails: not with
    'database is locked' while a new SQLite file turns to WAL (service.store.db.wal_mode), nor
    in a deadlock on PostgreSQL, where a migration that waits for older transactions to end
    (CREATE INDEX CONCURRENTLY, tried for 0009) would wait for the other worker's."""
    context = multiprocessing.get_context("spawn")
    for trial in range(2):
        workers = [context.Process(target=_migrate, args=(empty_url,)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(180)
        assert [worker.exitcode for worker in workers] == [0, 0], f"trial {trial}"
        database = Database(empty_url)
        try:
            assert database.schema_revision() == HEAD
            database.downgrade("base")   # empty again for the next trial
        finally:
            database.dispose()


def test_previous_release_with_data_upgrades_to_head(pg_database_url: str, tmp_path: Path) -> None:
    """The previous release's schema with a cohort in it, upgraded to the head: every resource,
    version and lastUpdated is as it was, searches and assessments answer the same, a new write
    works (sequences and indexes are right); then down to the previous release and up again."""
    from tests.databases import empty_tables
    empty_tables(pg_database_url)
    clock = FixedClock(datetime(2025, 1, 1, 9, 0, tzinfo=timezone.utc))
    # The data, written through the service at the head (database A)...
    app = create_app({"database_url": pg_database_url, "base_url": "http://toh.test/fhir"}, clock=clock)
    try:
        patients = write_cohort(app.test_client(), clock)
        before = snapshot(app.test_client(), pg_database_url, patients)
    finally:
        app.extensions["toh"].database.dispose()
    assert len(before["versions"]) > len(before["resources"]) > 100 and before["searches"]["Flag?status=active&_sort=_id&_count=1000"]

    with scratch_postgres() as previous_url:
        # ...held by a database at the previous release's schema (database B)...
        old = Database(previous_url)
        old.migrate(PREVIOUS_RELEASE)
        copy_rows(pg_database_url, previous_url)
        assert old.schema_revision() == PREVIOUS_RELEASE
        # ...which `toh migrate` takes to the head.
        result = subprocess.run([sys.executable, "-m", "service.cli", "migrate", "--database-url", previous_url],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert old.schema_revision() == HEAD
        upgraded = create_app({"database_url": previous_url, "base_url": "http://toh.test/fhir"}, clock=clock)
        try:
            client = upgraded.test_client()
            assert snapshot(client, previous_url, patients) == before
            created = client.post("/fhir/Observation", json={
                "resourceType": "Observation", "status": "final", "code": {"text": "after the upgrade"},
                "subject": {"reference": f"Patient/{patients[0]}"}}, headers={"Content-Type": "application/fhir+json"})
            assert created.status_code == 201, created.get_json()
            found = client.get(f"/fhir/Observation?patient={patients[0]}&code:text=after").get_json()
            assert [e["resource"]["id"] for e in found["entry"]] == [created.get_json()["id"]]
        finally:
            upgraded.extensions["toh"].database.dispose()
        # Down to the previous release keeps the data that schema holds, and up again.
        at_head = stored_rows(previous_url)
        assert len(at_head["versions"]) > len(before["versions"])
        old.downgrade(PREVIOUS_RELEASE)
        assert old.schema_revision() == PREVIOUS_RELEASE
        assert stored_rows(previous_url) == at_head
        old.migrate()
        assert old.schema_revision() == HEAD
        old.dispose()


def future_schema(url: str) -> None:
    """Mark a migrated database as migrated by a release newer than this code."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'"))
    engine.dispose()


def test_a_schema_newer_than_the_code_is_refused(database_url: str, tmp_path: Path) -> None:
    """Whether it migrates on start or not, the app refuses a database a newer release migrated,
    and so do `toh serve` and `toh migrate`, saying why, changing nothing."""
    Database(database_url).migrate()
    future_schema(database_url)
    for migrate_on_start in (True, False):
        with pytest.raises(SchemaTooNew, match="9999_from_a_newer_release.*newer release"):
            create_app({"database_url": database_url, "migrate_on_start": migrate_on_start})
    env = dict(os.environ, TOH_DATABASE_URL=database_url)
    toh = Path(sys.executable).with_name("toh")
    for command in (["serve", "--port", "0"], ["migrate"]):
        result = subprocess.run([str(toh), *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 3, (command, result.stderr[-2000:])
        assert "refusing to run" in result.stderr and "9999_from_a_newer_release" in result.stderr
        assert f"its newest is '{HEAD}'" in result.stderr
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "9999_from_a_newer_release"
    engine.dispose()
    with pytest.raises(SchemaTooNew):
        Database(database_url).downgrade(PREVIOUS_RELEASE)
    engine = create_engine(database_url)
    with engine.begin() as conn:   # leave the session's PostgreSQL database usable by the next tests
        conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": HEAD})
    engine.dispose()
