"""Liveness and readiness (README, "Health, readiness and metrics"):

- `/healthz` answers 200 while the process answers, whatever the database does (an orchestrator
  must not restart a process for its database's outage);
- `/readyz` answers 200 only when the database answers, its schema is at this code's migrations
  and the scheduler runs (when TOH_SCHEDULER asks for it); otherwise a 503 OperationOutcome with
  one `transient` issue per failed check. FHIR requests answer 503 while the database is gone.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, _free_port


def _ready(client: Any) -> tuple[int, Any]:
    response = client.get("/readyz")
    return response.status_code, response.get_json()


def _failed_checks(outcome: dict[str, Any]) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    assert {issue["code"] for issue in outcome["issue"]} == {"transient"}
    return sorted(issue["diagnostics"].split(":")[0] for issue in outcome["issue"])


def test_ready_with_a_running_scheduler_and_not_without(database_url: str) -> None:
    from service import create_app
    from service.scheduling import start_background
    app = create_app({"database_url": database_url, "sweep_interval_seconds": 3600})
    client = app.test_client()
    svc = app.extensions["toh"]
    try:
        status, outcome = _ready(client)            # TOH_SCHEDULER on, but nothing started it
        assert status == 503 and _failed_checks(outcome) == ["scheduler"]
        svc.scheduler = start_background(svc)
        status, body = _ready(client)
        assert status == 200, body
        assert body == {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "scheduler": "ok"}}
        svc.scheduler.shutdown(wait=False)
        status, outcome = _ready(client)
        assert status == 503 and _failed_checks(outcome) == ["scheduler"]
    finally:
        if svc.scheduler is not None and svc.scheduler.running:
            svc.scheduler.shutdown(wait=False)
        svc.database.dispose()


def test_a_schema_behind_the_code_is_not_ready(tmp_path: Path) -> None:
    from service import create_app
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    app = create_app({"database_url": url, "scheduler": False})
    client = app.test_client()
    assert _ready(client)[0] == 200
    with app.extensions["toh"].database.engine.begin() as conn:   # as if the code were upgraded first
        conn.execute(text("UPDATE alembic_version SET version_num = '0005_follow_up'"))
    status, outcome = _ready(client)
    assert status == 503 and _failed_checks(outcome) == ["migrations"]
    assert "0005_follow_up" in outcome["issue"][0]["diagnostics"] and "toh migrate" in outcome["issue"][0]["diagnostics"]
    assert client.get("/healthz").status_code == 200      # alive all the same
    app.extensions["toh"].database.dispose()


def test_readyz_is_503_and_healthz_200_when_the_database_goes_down() -> None:
    from service import create_app
    name = f"toh_test_down_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        app = create_app({"database_url": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", "scheduler": False})
        client = app.test_client()
        assert _ready(client)[0] == 200
        up = client.get("/healthz")
        assert up.status_code == 200 and up.get_json() == {"status": "ok"}

        with admin.connect() as conn:       # the database disappears under the running service
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        status, outcome = _ready(client)
        assert status == 503 and _failed_checks(outcome) == ["database", "migrations"]
        down = client.get("/fhir/Patient")
        assert down.status_code == 503, down.get_data(as_text=True)
        assert down.get_json()["issue"][0]["code"] == "transient"
        assert client.get("/healthz").status_code == 200
        app.extensions["toh"].database.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_readyz_is_503_when_the_database_cannot_be_reached() -> None:
    from service import create_app
    nobody = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/toh"   # nothing listens there
    app = create_app({"database_url": nobody, "migrate_on_start": False, "scheduler": False})
    client = app.test_client()
    status, outcome = _ready(client)
    assert status == 503 and _failed_checks(outcome) == ["database", "migrations"]
    assert client.get("/healthz").status_code == 200
    app.extensions["toh"].database.dispose()


def test_health_readiness_and_metrics_need_no_token(anonymous_client: Any) -> None:
    assert anonymous_client.get("/healthz").status_code == 200
    assert anonymous_client.get("/readyz").status_code in (200, 503)   # answered, not 401
    assert anonymous_client.get("/metrics").status_code == 200
