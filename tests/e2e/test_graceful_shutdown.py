"""`toh serve` stops gracefully on SIGTERM (README, "Upgrades"): a request in flight finishes and
lands whole, no new connection is taken, and the process exits 0. The sweep's part (the item
in hand finished, no other claimed) is in tests/integration/test_sweep_stop.py."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow
ENTRIES = 1000   # TOH_MAX_BUNDLE_ENTRIES: a transaction that takes seconds to write


def big_transaction(tag: str) -> dict[str, Any]:
    patient = {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000",
               "resource": {"resourceType": "Patient", "name": [{"family": tag}]},
               "request": {"method": "POST", "url": "Patient"}}
    observations = [{"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
                     "resource": {"resourceType": "Observation", "status": "final",
                                  "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                                  "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"},
                                  "valueQuantity": {"value": 60 + n % 30, "unit": "kg"}},
                     "request": {"method": "POST", "url": "Observation"}} for n in range(1, ENTRIES)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [patient, *observations]}


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(database_url: str, tmp_path: Path) -> None:
    server = LiveServer(database_url, tmp_path, workers=1)
    body = json.dumps(big_transaction("Inflight")).encode()
    answer: dict[str, Any] = {}
    half_sent, go_on = threading.Event(), threading.Event()

    def upload() -> Any:
        """The body in two chunks (Transfer-Encoding: chunked): the request is in flight, its
        worker reading it, from the first chunk until the second is sent after the SIGTERM.
        (Timing a fast write against a sleep is no proof: ingest got faster than the sleep.)"""
        yield body[:len(body) // 2]
        half_sent.set()
        go_on.wait(60)
        yield body[len(body) // 2:]

    def send() -> None:
        try:
            response = requests.post(server.base, data=upload(), timeout=120,
                                     headers={"Content-Type": "application/fhir+json"})
            answer["status"], answer["at"] = response.status_code, time.monotonic()
            answer["entries"] = len(response.json().get("entry", []))
        except requests.RequestException as exc:
            answer["error"] = repr(exc)

    try:
        sender = threading.Thread(target=send)
        sender.start()
        assert half_sent.wait(30), "the upload did not start"
        time.sleep(0.5)                       # the worker has the request and is reading its body
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)                       # gunicorn's master wakes at least once a second
        with pytest.raises((requests.ConnectionError, requests.Timeout)):   # no new request is served
            requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=3)
        go_on.set()                           # the rest of the body: the bundle is written now
        sender.join(timeout=120)
        exit_code = server.process.wait(timeout=60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.log.close()
    log = Path(server.log.name).read_text()
    assert "error" not in answer, answer
    print(f"answered {answer['at'] - signalled:.1f} s after SIGTERM")
    assert answer["at"] > signalled, "the bundle finished before SIGTERM: the test proved nothing"
    assert answer["status"] == 200 and answer["entries"] == ENTRIES, (answer, log[-2000:])
    assert exit_code == 0, log[-2000:]
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'Observation'")).scalar_one()
    engine.dispose()
    assert stored == ENTRIES - 1
