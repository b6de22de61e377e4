"""`toh serve` with no configuration, and gunicorn on the application factory directly."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from service.config import Settings
from tests.conftest import _free_port

pytestmark = pytest.mark.slow


def wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # still booting
            time.sleep(0.2)
    raise AssertionError("no /healthz answer within 30 s")


def test_defaults_are_sqlite_in_toh_data_on_8080(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite:///{tmp_path / 'toh-data' / 'toh.db'}"
    from service.cli import main
    with pytest.raises(SystemExit):
        main(["serve", "--help"])


def test_toh_serve_without_configuration_creates_its_database(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOH_")}
    toh = Path(sys.executable).with_name("toh")
    process = subprocess.Popen([str(toh), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        created = requests.post(f"http://127.0.0.1:{port}/fhir/Patient", json={"resourceType": "Patient"},
                                headers={"Content-Type": "application/fhir+json"}, timeout=10)
        assert created.status_code == 201
        assert (tmp_path / "toh-data" / "toh.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_gunicorn_runs_the_factory(tmp_path: Path, pg_database_url: str) -> None:
    port = _free_port()
    env = dict(os.environ, TOH_DATABASE_URL=pg_database_url)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen([str(gunicorn), "-w", "2", "-b", f"127.0.0.1:{port}", "service:create_app()"],
                               cwd=Path(__file__).resolve().parents[2], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        metadata = requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=10)
        assert metadata.status_code == 200 and metadata.json()["fhirVersion"] == "4.0.1"
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_reindex_rebuilds_a_lost_index(tmp_path: Path) -> None:
    from sqlalchemy import text

    from service import create_app
    from service.cli import main
    url = f"sqlite:///{tmp_path / 'toh.db'}"
    app = create_app({"database_url": url})
    client = app.test_client()
    client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1", "gender": "female"},
               headers={"Content-Type": "application/fhir+json"})
    with app.extensions["toh"].database.unit_of_work() as uow:
        uow.conn.execute(text("DELETE FROM search_token"))
        uow.commit()
    assert client.get("/fhir/Patient?gender=female").get_json()["total"] == 0
    assert main(["reindex", "--database-url", url]) == 0
    assert client.get("/fhir/Patient?gender=female").get_json()["total"] == 1
