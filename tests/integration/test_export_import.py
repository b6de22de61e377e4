"""`toh export --out DIR [--history]` and `toh import DIR` (README, "Export and restore"): a
synthetic cohort, swept so that Tasks, Flags and reminders exist, is exported and imported into a
new database, which then holds the same resources, versions and lastUpdated, answers the same
searches, vreads and assessments, and has the same audit trail and follow-up bookkeeping. Bad
input changes nothing. SQLite and PostgreSQL.

Two cohorts (tests/cohort.py): a `toh synth` cohort (10 patients, fixed seed) POSTed through the
REST API, and a hand-made one with what `toh synth` bundles do not hold: client updates
(version 2 of a Condition) and deletions (tombstone versions).
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from service import cli, create_app
from service.clock import FixedClock
from service.store.bulk import service_tables, table_rows
from service.workflows.sweep import sweep
from tests.cohort import SEARCHES, SYNTH_SEARCHES, snapshot, stored_rows, write_cohort, write_synth_cohort
from tests.databases import scratch_postgres

pytestmark = pytest.mark.slow
SWEPT_AT = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)


@contextlib.contextmanager
def new_database(source_url: str, tmp_path: Path, name: str) -> Iterator[str]:
    """An empty database of the same kind as source_url (no tables)."""
    if source_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / name}.db"
        return
    with scratch_postgres("toh_import") as url:
        yield url


def service_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: list(table_rows(conn, t)) for t in service_tables()}
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Source:
    """A database holding a swept cohort: its URL, Patient ids, the searches to compare, and
    whether clients updated and deleted resources in it."""

    url: str
    patients: list[str]
    searches: Sequence[str]
    client_changes: bool


@pytest.fixture(params=["toh synth", "updates and deletions"])
def cohort(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[Source]:
    """The source database: a cohort written, then swept (Tasks ready or overdue, reminders)."""
    clock = FixedClock(SWEPT_AT)
    app = create_app({"database_url": database_url, "base_url": "http://toh.test/fhir"}, clock=clock)
    if request.param == "toh synth":
        patients = write_synth_cohort(app.test_client(), clock, tmp_path / "synth")
        source = Source(database_url, patients, SYNTH_SEARCHES, client_changes=False)
    else:
        patients = write_cohort(app.test_client(), clock)
        source = Source(database_url, patients, SEARCHES, client_changes=True)
    clock.set(SWEPT_AT)
    report = sweep(app.extensions["toh"].database, SWEPT_AT)
    assert report.handled and not report.failed
    app.extensions["toh"].database.dispose()
    yield source


def history_answers(client: Any, versions: list[tuple[Any, ...]]) -> dict[str, tuple[int, str | None, Any]]:
    """(status, ETag, body) of a vread of every version, and of a read, of each resource that has
    more than one version or was deleted (`versions`: stored_rows' version rows)."""
    changed = {(row[0], row[1]) for row in versions if row[2] > 1 or row[5]}
    paths = [f"/fhir/{t}/{i}/_history/{v}" for t, i, v, *_ in versions if (t, i) in changed]
    paths += [f"/fhir/{t}/{i}" for t, i in sorted(changed)]
    answers = {}
    for path in paths:
        response = client.get(path)
        answers[path] = (response.status_code, response.headers.get("ETag"), response.get_json())
    return answers


def swept(app: Any, now: datetime) -> list[tuple[str, str, list[str]]]:
    """What a sweep does, with the ids of the Flags it makes (new uuids) left out."""
    report = sweep(app.extensions["toh"].database, now)
    return [(i.kind, i.subject, [re.sub(r"Flag/[0-9a-f-]{36}", "Flag/new", a) for a in actions])
            for i, actions in report.handled]


def app_over(url: str) -> Any:
    return create_app({"database_url": url, "base_url": "http://toh.test/fhir"}, clock=FixedClock(SWEPT_AT))


def test_history_round_trip_keeps_everything(cohort: Source, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    source, patients = cohort.url, cohort.patients
    before_rows, before_service = stored_rows(source), service_rows(source)
    assert before_service["due_work"] and before_service["reminders"] and before_service["audit_events"]
    assert any(v[2] > 1 for v in before_rows["versions"])            # resources with a history
    assert any(v[5] for v in before_rows["versions"]) is cohort.client_changes       # tombstones
    out = tmp_path / "dump"
    assert cli.main(["export", "--out", str(out), "--history", "--database-url", source]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    assert counts["Patient"] == len(patients) and manifest["extension"]["history"] is True
    assert sum(counts.values()) == sum(1 for v in before_rows["versions"] if not v[5])   # every version but deletions
    lines = (out / "Observation.ndjson").read_text().splitlines()
    assert all(json.loads(line)["resourceType"] == "Observation" for line in lines)

    with new_database(source, tmp_path, "restored") as target:
        assert cli.main(["import", str(out), "--database-url", target]) == 0
        assert "imported" in capsys.readouterr().out
        assert stored_rows(target) == before_rows           # ids, versions, lastUpdated, methods, content
        assert service_rows(target) == before_service       # audit trail, plans, due work, reminders
        source_app, target_app = app_over(source), app_over(target)
        try:
            expected = snapshot(source_app.test_client(), source, patients, cohort.searches)
            restored = snapshot(target_app.test_client(), target, patients, cohort.searches)
            assert restored["searches"] == expected["searches"]
            assert restored["assessments"] == expected["assessments"]
            assert all(expected["searches"].values()), [q for q, ids in expected["searches"].items() if not ids]
            assert any(p["name"] == "flag" for a in expected["assessments"].values() for p in a["parameter"])
            history = history_answers(source_app.test_client(), before_rows["versions"])
            assert history_answers(target_app.test_client(), before_rows["versions"]) == history
            statuses = {status for status, _, _ in history.values()}
            assert 200 in statuses and (410 in statuses) is cohort.client_changes
            # the restored database carries on: the next sweep finds what the source would
            later = datetime(2026, 6, 1, tzinfo=timezone.utc)
            assert swept(target_app, later) == swept(source_app, later) != []
        finally:
            source_app.extensions["toh"].database.dispose()
            target_app.extensions["toh"].database.dispose()


def test_current_export_restores_the_current_versions(cohort: Source, tmp_path: Path) -> None:
    source, patients = cohort.url, cohort.patients
    current = stored_rows(source)["resources"]
    out = tmp_path / "dump"
    assert cli.main(["export", "--out", str(out), "--database-url", source]) == 0
    assert not (out / "_versions.ndjson").exists()
    with new_database(source, tmp_path, "restored") as target:
        assert cli.main(["import", str(out), "--database-url", target]) == 0
        restored = stored_rows(target)
        assert restored["resources"] == [row for row in current if not row[4]]     # deleted ones are not exported
        assert len(restored["versions"]) == len(restored["resources"])
        source_app, target_app = app_over(source), app_over(target)
        try:
            for pid in patients:
                path = f"/fhir/Patient/{pid}/$toh-assessment?asOf=2026-01-05"
                assert target_app.test_client().get(path).get_json() == source_app.test_client().get(path).get_json()
        finally:
            source_app.extensions["toh"].database.dispose()
            target_app.extensions["toh"].database.dispose()


def test_bad_input_changes_nothing(cohort: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = cohort.url
    out = tmp_path / "dump"
    assert cli.main(["export", "--out", str(out), "--history", "--database-url", source]) == 0
    assert cli.main(["export", "--out", str(out), "--database-url", source]) == 1      # not an empty folder
    assert "not empty" in capsys.readouterr().err
    before = stored_rows(source)
    assert cli.main(["import", str(out), "--database-url", source]) == 1               # not an empty database
    assert "not empty" in capsys.readouterr().err
    assert stored_rows(source) == before

    lines = (out / "Condition.ndjson").read_text().splitlines()
    broken = json.loads(lines[-1])
    broken["clinicalStatus"] = "active"            # not a CodeableConcept: R4 refuses it
    (out / "Condition.ndjson").write_text("\n".join(lines[:-1] + [json.dumps(broken)]) + "\n")
    with new_database(source, tmp_path, "refused") as target:
        assert cli.main(["import", str(out), "--database-url", target]) == 1
        assert f"Condition.ndjson line {len(lines)}" in capsys.readouterr().err
        assert stored_rows(target) == {"resources": [], "versions": []}
        assert all(rows == [] for rows in service_rows(target).values())
