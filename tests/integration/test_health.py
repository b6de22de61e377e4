"""`/healthz` answers 200 while the service and its database are up, and a 503
OperationOutcome when the database is gone (README, "Start the service")."""
from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, _free_port


def test_healthz_is_503_when_the_database_goes_down() -> None:
    from service import create_app
    name = f"toh_test_down_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        app = create_app({"database_url": PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"})
        client = app.test_client()
        up = client.get("/healthz")
        assert up.status_code == 200 and up.get_json() == {"status": "ok"}

        with admin.connect() as conn:       # the database disappears under the running service
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        for path in ("/healthz", "/fhir/Patient"):
            down = client.get(path)
            assert down.status_code == 503, (path, down.get_data(as_text=True))
            outcome = down.get_json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "transient"
        app.extensions["toh"].database.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_healthz_is_503_when_the_database_cannot_be_reached() -> None:
    from service import create_app
    nobody = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/toh"   # nothing listens there
    app = create_app({"database_url": nobody, "migrate_on_start": False})
    down = app.test_client().get("/healthz")
    assert down.status_code == 503 and down.get_json()["resourceType"] == "OperationOutcome"
    app.extensions["toh"].database.dispose()
