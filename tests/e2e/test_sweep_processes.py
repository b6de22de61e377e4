"""The follow-up clock against real processes: `toh sweep --now` from a second shell while
`toh serve` runs on the same database (SQLite and PostgreSQL), the tick inside `toh serve`,
and `toh worker` on its own."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from service.fhir.canonical import CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, SNOMED, TOH_CODES
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}


def toh(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("toh")
    return subprocess.run([str(command), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def put(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR,
                            timeout=60)
    assert response.status_code in (200, 201), response.text
    return response.json()


def follow_up_task(tid: str, start: date) -> dict[str, Any]:
    """A clinician's own follow-up Task for Patient/p1 (code from the guide's follow-up codes)."""
    return {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review"}]},
            "for": {"reference": "Patient/p1"},
            "restriction": {"period": {"start": start.isoformat(), "end": start.isoformat()}}}


def wait_for(check: Any, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("timed out")


@pytest.fixture
def quiet_server(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`toh serve` without its tick (the test drives the clock)."""
    monkeypatch.setenv("TOH_SCHEDULER", "off")
    server = LiveServer(database_url, tmp_path, workers=1)
    yield server
    server.stop()


def test_toh_sweep_now_against_the_running_servers_database(quiet_server: LiveServer, database_url: str) -> None:
    base = quiet_server.base
    onset = date.today() - timedelta(days=10)
    put(base, {"resourceType": "Patient", "id": "p1"})
    put(base, {"resourceType": "Condition", "id": "hip", "subject": {"reference": "Patient/p1"},
               "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
               "verificationStatus": {"coding": [{"system": CONDITION_VER_STATUS, "code": "confirmed"}]},
               "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
               "bodySite": [{"coding": [{"system": SNOMED, "code": "24136001"}],
                             "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {
                                 "coding": [{"system": SNOMED, "code": "7771000"}]}}]}],
               "onsetDateTime": onset.isoformat()})
    tasks = requests.get(f"{base}/Task?patient=Patient/p1&code={TOH_CODES}|follow-up-review&_count=50",
                         timeout=30).json()["entry"]
    six_weeks = next(e["resource"] for e in tasks if e["resource"]["instantiatesUri"].endswith("#review-6w"))
    assert six_weeks["status"] == "requested"
    when = onset + timedelta(weeks=6) - timedelta(days=7)          # the day it becomes ready
    result = toh("sweep", "--now", f"{when.isoformat()}T09:00:00Z", "--database-url", database_url)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Task/{six_weeks['id']} ready" in result.stdout
    assert requests.get(f"{base}/Task/{six_weeks['id']}", timeout=30).json()["status"] == "ready"
    again = toh("sweep", "--now", f"{when.isoformat()}T09:00:00Z", "--database-url", database_url)
    assert again.returncode == 0 and "ready" not in again.stdout and "0 items" in again.stdout
    bad = toh("sweep", "--now", "yesterday")
    assert bad.returncode == 2 and "not an ISO date-time" in bad.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_tick_inside_toh_serve_makes_due_tasks_ready(database_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOH_SWEEP_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("TOH_SCHEDULER", "on")
    server = LiveServer(database_url, tmp_path, workers=1)
    try:
        put(server.base, {"resourceType": "Patient", "id": "p1"})
        put(server.base, follow_up_task("soon", date.today() + timedelta(days=3)))
        wait_for(lambda: requests.get(f"{server.base}/Task/soon", timeout=30).json()["status"] == "ready")
        put(server.base, follow_up_task("later", date.today() + timedelta(days=30)))
        time.sleep(3)                                            # a few ticks: not yet within the lead time
        assert requests.get(f"{server.base}/Task/later", timeout=30).json()["status"] == "requested"
    finally:
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_toh_worker_runs_the_tick_on_its_own(quiet_server: LiveServer, database_url: str) -> None:
    put(quiet_server.base, {"resourceType": "Patient", "id": "p1"})
    put(quiet_server.base, follow_up_task("soon", date.today() + timedelta(days=2)))
    time.sleep(2)
    assert requests.get(f"{quiet_server.base}/Task/soon", timeout=30).json()["status"] == "requested"
    command = Path(sys.executable).with_name("toh")
    worker = subprocess.Popen([str(command), "worker", "--database-url", database_url],
                              env=dict(os.environ, TOH_SWEEP_INTERVAL_SECONDS="1", TOH_SCHEDULER="on"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: requests.get(f"{quiet_server.base}/Task/soon", timeout=30).json()["status"] == "ready")
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, output[-2000:]
    assert "Task/soon ready" in output
