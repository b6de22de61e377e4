"""Real servers: `toh serve` with no configuration, `toh serve --host H --port P` (its base URL),
and gunicorn on the application factory directly. The options without a server are checked in
tests/integration/test_cli.py."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

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


def test_toh_serve_without_configuration_creates_its_database(tmp_path: Path) -> None:
    """README's first command on a fresh machine: `toh serve` makes its database and a strong
    signing secret (mode 0600) in ./toh-data, refuses requests without a token, and
    `toh token` (run in the same folder) gives one it accepts."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOH_")}
    toh = Path(sys.executable).with_name("toh")
    process = subprocess.Popen([str(toh), "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        url = f"http://127.0.0.1:{port}/fhir/Patient"
        body, fhir = {"resourceType": "Patient"}, "application/fhir+json"
        refused = requests.post(url, json=body, headers={"Content-Type": fhir, "Authorization": None}, timeout=10)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        secret = tmp_path / "toh-data" / "jwt-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text().strip()) >= 32
        token = subprocess.run([str(toh), "token", "--role", "ehr"], cwd=tmp_path, env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        created = requests.post(url, json=body, headers={"Content-Type": fhir, "Authorization": f"Bearer {token}"},
                                timeout=10)
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


def test_toh_serve_host_and_port_make_its_own_absolute_references_local(live_server) -> None:  # type: ignore[no-untyped-def]
    """`toh serve --host 127.0.0.1 --port P` (LiveServer) defaults TOH_BASE_URL to
    http://127.0.0.1:P/fhir, so a reference written with that base is a reference to this server:
    a search by the patient's relative reference finds it."""
    headers = {"Content-Type": "application/fhir+json"}
    assert live_server.base == f"http://127.0.0.1:{live_server.port}/fhir"
    patient = requests.post(f"{live_server.base}/Patient", json={"resourceType": "Patient"}, headers=headers,
                            timeout=10)
    assert patient.headers["Location"].startswith(f"{live_server.base}/Patient/")
    pid = patient.json()["id"]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                   "subject": {"reference": f"{live_server.base}/Patient/{pid}"}}
    assert requests.post(f"{live_server.base}/Observation", json=observation, headers=headers,
                         timeout=10).status_code == 201
    found = requests.get(f"{live_server.base}/Observation?patient=Patient/{pid}", timeout=10).json()
    assert found["total"] == 1
    elsewhere = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                 "subject": {"reference": f"http://127.0.0.2:{live_server.port}/fhir/Patient/{pid}"}}
    requests.post(f"{live_server.base}/Observation", json=elsewhere, headers=headers, timeout=10)
    assert requests.get(f"{live_server.base}/Observation?patient=Patient/{pid}", timeout=10).json()["total"] == 1
