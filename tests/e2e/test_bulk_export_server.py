"""Bulk Data export against a real `toh serve` (gunicorn, two workers) with a plain HTTP client:
the kick-off's job runs in whichever worker took it (or the tick), the status may be polled on
any worker, and the files download as NDJSON."""
from __future__ import annotations

import json
import time

import pytest
import requests

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}


def test_export_over_http(live_server) -> None:  # type: ignore[no-untyped-def]
    base = live_server.base
    ids = [requests.post(f"{base}/Patient", json={"resourceType": "Patient", "name": [{"family": f"Bulk{n}"}]},
                         headers=FHIR, timeout=30).json()["id"] for n in range(3)]
    for pid in ids:
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                       "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": {"value": 70, "unit": "kg"}}
        assert requests.post(f"{base}/Observation", json=observation, headers=FHIR, timeout=30).status_code == 201
    kick = requests.get(f"{base}/Patient/$export?_type=Patient,Observation",
                        headers={"Prefer": "respond-async", "Accept": "application/fhir+json"}, timeout=30)
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["Content-Location"]
    assert status_url.startswith(f"{base}/$export-status/")
    deadline = time.monotonic() + 60
    while True:
        status = requests.get(status_url, timeout=30)
        if status.status_code != 202:
            break
        assert status.headers["X-Progress"]
        assert time.monotonic() < deadline, "no manifest within 60 s"
        time.sleep(0.2)
    assert status.status_code == 200, status.text
    manifest = status.json()
    assert {o["type"]: o["count"] for o in manifest["output"]} == {"Observation": 3, "Patient": 3}
    for output in manifest["output"]:
        file = requests.get(output["url"], headers={"Accept": "application/fhir+ndjson"}, timeout=30)
        assert file.status_code == 200 and file.headers["Content-Type"].startswith("application/fhir+ndjson")
        assert len([json.loads(line) for line in file.text.splitlines()]) == output["count"]
    assert requests.delete(status_url, timeout=30).status_code == 202
    assert requests.get(status_url, timeout=30).status_code == 404
