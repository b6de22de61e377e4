"""No PHI in the service's logs: a full run of a real `toh serve` (access log on) that writes,
searches, fails and reads a named patient leaves the name nowhere in its log, which carries
request ids instead."""
from __future__ import annotations

from pathlib import Path

import requests

from tests.conftest import LiveServer

NAME = "Zebedee Quillfeather"   # a name no log line may carry


def test_logs_of_a_full_run_carry_no_patient_name(database_url: str, tmp_path: Path) -> None:
    server = LiveServer(database_url, tmp_path, workers=1, extra_args=("--access-log",))
    try:
        base = server.base
        headers = {"Content-Type": "application/fhir+json", "X-Request-ID": "req-12345"}
        patient = {"resourceType": "Patient", "name": [{"family": "Quillfeather", "given": ["Zebedee"]}]}
        created = requests.post(f"{base}/Patient", json=patient, headers=headers, timeout=30)
        assert created.status_code == 201
        pid = created.json()["id"]
        assert requests.get(f"{base}/Patient?name=Zebedee&family=Quillfeather", timeout=30).status_code == 200
        broken = {**patient, "birthDate": "not a date"}
        assert requests.post(f"{base}/Patient", json=broken, headers=headers, timeout=30).status_code in (400, 422)
        assert requests.get(f"{base}/Patient/{pid}/$everything", timeout=30).status_code == 200
        assert requests.get(f"{base}/Patient?name=Zebedee", headers={"Authorization": None},
                            timeout=30).status_code == 401
    finally:
        server.stop()
    log = Path(server.log.name).read_text()
    assert "req-12345" in log                      # the request ids are there...
    for part in ("Zebedee", "Quillfeather"):       # ...the name is not
        assert part not in log, [line for line in log.splitlines() if part in line][:3]
