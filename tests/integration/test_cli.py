"""The `toh` command without a real server: `toh serve`'s options and defaults (gunicorn is
replaced by a recorder, so nothing listens), `toh migrate` and `toh reindex`.
`toh serve` with real servers and clients is in tests/e2e/test_serve.py."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from service import cli
from service.config import Settings
from service.gunicorn_config import child_exit
# Imported before any `toh serve` runs in this process, as in any test process that built an app:
# serve then leaves prometheus-client in its single-process mode (multiproc.prepare).
from service.observability import metrics as _metrics  # noqa: F401
from service.observability import multiproc

FHIR = {"Content-Type": "application/fhir+json"}
SERVE_VARIABLES = ("TOH_HOST", "TOH_PORT", "TOH_WORKERS", "TOH_THREADS", "TOH_DATABASE_URL", "TOH_DATA_DIR",
                   "TOH_BASE_URL", "TOH_MIGRATE_ON_START")


class Gunicorn:
    """Stands in for gunicorn: keeps the factory and options `toh serve` hands it."""

    def __init__(self) -> None:
        self.factory: Callable[[], Any] | None = None
        self.options: dict[str, Any] = {}
        self.ran = False

    def __call__(self, factory: Callable[[], Any], options: dict[str, Any]) -> Gunicorn:
        self.factory, self.options = factory, options
        return self

    def run(self) -> None:
        self.ran = True

    def app(self) -> Any:
        assert self.factory is not None
        return self.factory()


@pytest.fixture
def gunicorn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Gunicorn]:
    """None of the variables `toh serve` reads set, the working directory a fresh folder,
    gunicorn a recorder; the root logger (which `toh serve` configures) restored afterwards."""
    for name in SERVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    recorder = Gunicorn()
    monkeypatch.setattr(cli, "_gunicorn_app", recorder)
    # `toh serve` puts its own process in prometheus-client's multiprocess mode; that must not
    # outlive the test (the mode is chosen when prometheus_client is first imported, and other
    # tests of this process read its in-process metrics). tests/e2e/test_observability_serve.py
    # runs the real thing under gunicorn.
    monkeypatch.delenv(multiproc.ENV, raising=False)
    monkeypatch.setattr(multiproc, "prepare", lambda path: path or str(tmp_path / "metrics"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield recorder
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_defaults_are_sqlite_in_toh_data_on_127_0_0_1_8080(gunicorn: Gunicorn, tmp_path: Path) -> None:
    assert cli.main(["serve"]) == 0
    assert gunicorn.ran
    assert gunicorn.options["bind"] == "127.0.0.1:8080"
    assert gunicorn.options["workers"] == 2
    settings = gunicorn.app().extensions["toh"].settings
    assert settings.database_url == f"sqlite:///{tmp_path / 'toh-data' / 'toh.db'}"
    assert (tmp_path / "toh-data" / "toh.db").exists()        # migrated once before the workers
    assert settings.base_url == "http://127.0.0.1:8080/fhir"
    assert Settings.from_env({}).database_url == settings.database_url
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["serve", "--help"])
    assert help_exit.value.code == 0


def test_serve_hands_gunicorn_its_config_and_leaves_the_environment_alone(gunicorn: Gunicorn) -> None:
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    assert cli.main(["serve"]) == 0
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == before
    assert gunicorn.options["child_exit"] is child_exit
    assert gunicorn.options["graceful_timeout"] == Settings().graceful_timeout
    assert gunicorn.options["timeout"] == Settings().worker_timeout
    assert gunicorn.options["logconfig_dict"]["loggers"]["gunicorn.error"]["handlers"] == ["toh"]


def test_serve_host_and_port_set_the_base_url(gunicorn: Gunicorn, tmp_path: Path) -> None:
    assert cli.main(["serve", "--host", "localhost", "--port", "9123", "--workers", "3"]) == 0
    assert gunicorn.options["bind"] == "localhost:9123" and gunicorn.options["workers"] == 3
    client = gunicorn.app().test_client()
    created = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}), headers=FHIR,
                          base_url="http://10.1.2.3:80")
    assert created.headers["Location"].startswith("http://localhost:9123/fhir/Patient/")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_host_leaves_the_base_url_to_the_request(gunicorn: Gunicorn, host: str) -> None:
    assert cli.main(["serve", "--host", host, "--port", "9124"]) == 0
    assert gunicorn.options["bind"] == f"{host}:9124"
    app = gunicorn.app()
    assert app.extensions["toh"].settings.base_url is None
    created = app.test_client().post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}), headers=FHIR,
                                     base_url="http://toh.clinic.example:8080")
    assert created.headers["Location"].startswith("http://toh.clinic.example:8080/fhir/Patient/")


def test_toh_base_url_wins_over_host_and_port(gunicorn: Gunicorn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOH_BASE_URL", "https://proxy.example.org/fhir")
    assert cli.main(["serve", "--host", "127.0.0.1", "--port", "9125"]) == 0
    assert gunicorn.app().extensions["toh"].settings.base_url == "https://proxy.example.org/fhir"


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_toh_migrate_creates_a_usable_schema(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from service import create_app
    from tests.databases import empty_tables
    if database_url.startswith("postgresql"):       # start from no schema at all
        engine = create_engine(database_url)
        with engine.begin() as conn:
            for name in tables(database_url):
                conn.execute(text(f'DROP TABLE "{name}" CASCADE'))
        engine.dispose()
    assert "alembic_version" not in tables(database_url)
    assert cli.main(["migrate", "--database-url", database_url]) == 0
    assert "is up to date" in capsys.readouterr().out
    created = tables(database_url)
    assert {"alembic_version", "search_token"} <= created
    assert cli.main(["migrate", "--database-url", database_url]) == 0     # a second run changes nothing
    assert tables(database_url) == created
    app = create_app({"database_url": database_url, "migrate_on_start": False})
    client = app.test_client()
    assert client.put("/fhir/Patient/m", data=json.dumps({"resourceType": "Patient", "id": "m", "gender": "male"}),
                      headers=FHIR).status_code == 201
    assert client.get("/fhir/Patient?gender=male").get_json()["total"] == 1
    app.extensions["toh"].database.dispose()
    if database_url.startswith("postgresql"):
        empty_tables(database_url)


def test_toh_migrate_reads_toh_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("TOH_DATABASE_URL", url)
    assert cli.main(["migrate"]) == 0
    assert "alembic_version" in tables(url)


def test_reindex_rebuilds_a_lost_index(tmp_path: Path) -> None:
    from service import create_app
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    app = create_app({"database_url": url})
    client = app.test_client()
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "gender": "female"},
               headers=FHIR)
    with app.extensions["toh"].database.unit_of_work() as uow:
        uow.conn.execute(text("DELETE FROM search_token"))
        uow.commit()
    assert client.get("/fhir/Patient?gender=female").get_json()["total"] == 0
    assert cli.main(["reindex", "--database-url", url]) == 0
    assert client.get("/fhir/Patient?gender=female").get_json()["total"] == 1
    app.extensions["toh"].database.dispose()


def test_servers_started_by_the_tests_run_the_working_tree(tmp_path: Path) -> None:
    """README's test command installs the package editable, so a `toh serve` started from any
    folder (the live servers run in a tmp folder) imports this working tree's service/ and reads
    its fhir_profiles/, not a copy made at install time."""
    code = ("import service; from service.fhir.profiles import default_directory; "
            "print(service.__file__); print(default_directory())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    module, profiles = done.stdout.split()
    root = Path(__file__).resolve().parents[2]
    assert Path(module) == root / "service" / "__init__.py"
    assert Path(profiles) == root / "fhir_profiles"


@pytest.mark.parametrize("revision", [None, "0006_audit_events"], ids=["never-migrated", "older"])
@pytest.mark.parametrize("command", [["sweep"], ["deliver"], ["notifications", "list"], ["export", "--out", "OUT"]])
def test_one_off_commands_on_a_schema_not_at_head_say_run_toh_migrate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], revision: str | None) -> None:
    """A one-off command on a database `toh migrate` has not brought up to date exits 3 with one
    line saying so (not a traceback from a missing table), and writes nothing."""
    from service.store import Database
    from service.store.db import known_revisions
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    if revision:
        Database(url).migrate(revision)
    argv = [str(tmp_path / "out") if part == "OUT" else part for part in command]
    code = cli.main([*argv[:2], "--database-url", url, *argv[2:]] if argv[0] == "notifications"
                    else [argv[0], "--database-url", url, *argv[1:]])
    err = capsys.readouterr().err
    assert code == 3, err
    head = known_revisions()[1]
    assert f"expects {head!r}: run `toh migrate`" in err and "Traceback" not in err
    assert ("never migrated" in err) if revision is None else (f"schema is at {revision}" in err)
    engine = create_engine(url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if tables else None
    engine.dispose()
    assert version == revision                                # not migrated behind the user's back
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
