"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, the Flask app and
client over it, a clock tests can move, and a real `toh serve` for client tests.

PostgreSQL: each pytest process creates its own database on 127.0.0.1:5432 (dropped at the
end) and every test starts from empty tables. Set TOH_TEST_PG_URL to use another server.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from service.clock import FixedClock
from service.store import Database
from tests import auth
from tests.databases import empty_tables

PG_ADMIN_URL = os.environ.get("TOH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session", autouse=True)
def tokens_by_default() -> Iterator[None]:
    """Every client of the suite sends a valid bearer token by default (tests/auth.py): the
    Flask test client, and requests/fhirpy/fhirclient towards loopback servers. Apps and
    `toh serve` processes made by tests accept it (TOH_JWT_SECRET is set for the run)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        auth.install(monkeypatch)
        yield


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test process, migrated, dropped afterwards."""
    name = f"toh_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    db.migrate()
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: a new SQLite file, or the session's PostgreSQL emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'toh.db'}"
    url = request.getfixturevalue("pg_database_url")
    empty_tables(url)
    return url


@pytest.fixture
def clock() -> FixedClock:
    """A clock that tests move by hand."""
    return FixedClock(datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc))


@pytest.fixture
def database(database_url: str, clock: FixedClock) -> Iterator[Database]:
    db = Database(database_url, clock=clock)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
def app(database_url: str, clock: FixedClock):  # type: ignore[no-untyped-def]
    from service import create_app
    application = create_app({"database_url": database_url, "base_url": "http://toh.test/fhir",
                              "max_payload_bytes": 2 * 1024 * 1024}, clock=clock)
    application.config["TESTING"] = True
    yield application
    application.extensions["toh"].database.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    """The Flask test client, sending the suite's default token (system/*.cruds)."""
    return app.test_client()


@pytest.fixture
def anonymous_client(app):  # type: ignore[no-untyped-def]
    """A Flask test client that sends no token (for tests of refusals)."""
    return app.test_client(token=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real `toh serve` process (gunicorn) on a free port."""

    def __init__(self, database_url: str, workdir: Path, workers: int = 2, extra_args: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        env = dict(os.environ, TOH_DATABASE_URL=database_url)
        self.log = open(workdir / f"server-{self.port}.log", "w")
        toh = Path(sys.executable).with_name("toh")
        command = [str(toh)] if toh.exists() else [sys.executable, "-m", "service.cli"]
        self.process = subprocess.Popen(
            command + ["serve", "--port", str(self.port), "--workers", str(workers), *extra_args],
            cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90  # generous: CI machines run two test processes at once
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still booting
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"toh serve did not start; see {self.log.name}: "
                           + Path(self.log.name).read_text()[-2000:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def live_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """`toh serve` over the test's database, stopped after the test."""
    server = LiveServer(database_url, tmp_path)
    yield server
    server.stop()
