"""Observability of a real `toh serve` with two gunicorn workers (README, "Health, readiness
and metrics"):

- /metrics merges the workers' values (prometheus-client's multiprocess mode, files under
  TOH_METRICS_DIR): every create is counted once whichever worker answered it;
- the scheduler ticks in each worker, so /readyz is 200 and the sweep's metrics appear;
- a worker killed with SIGKILL is forgotten by gunicorn's child_exit hook (its live gauge file
  goes) and its counts stay;
- X-Request-ID is taken if well-formed, made otherwise, returned, and found in the JSON log lines.
"""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import LiveServer

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}


def _samples(root: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"{root}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _created(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples.get(("toh_http_requests_total", (("interaction", "create"), ("status", "201"),
                                                    ("type", "Patient"))), 0.0)


def _counter_writers(metrics_dir: Path) -> set[str]:
    """The pids whose counter files in the multiprocess directory count a Patient create."""
    writers = set()
    for path in metrics_dir.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            if sample == "toh_http_requests_total" and labels.get("interaction") == "create" and value > 0:
                writers.add(path.name.rsplit("_", 1)[-1])
    return writers


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_metrics_health_and_request_ids_of_two_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")   # an earlier run's file: removed at start
    monkeypatch.setenv("TOH_METRICS_DIR", str(metrics_dir))
    monkeypatch.setenv("TOH_SWEEP_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("TOH_SCHEDULER", "on")
    server = LiveServer(f"sqlite:///{tmp_path / 'toh.db'}", tmp_path, workers=2)
    root = server.base.removesuffix("/fhir")
    try:
        assert not (metrics_dir / "counter_999999.db").exists()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:         # each worker starts its scheduler after booting
            ready = requests.get(f"{root}/readyz", timeout=30)
            if ready.status_code == 200:
                break
            time.sleep(0.5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "migrations": "ok", "scheduler": "ok"}

        for n in range(12):
            created = requests.post(f"{server.base}/Patient", json={"resourceType": "Patient"},
                                    headers={**FHIR, "X-Request-ID": f"obs-{n}"}, timeout=30)
            assert created.status_code == 201
            assert created.headers["X-Request-ID"] == f"obs-{n}"
        odd = requests.get(f"{server.base}/Patient", headers={"X-Request-ID": "not ok! <script>"}, timeout=30)
        made = odd.headers["X-Request-ID"]
        assert len(made) == 32 and int(made, 16) >= 0         # replaced by one of the service's

        # Which worker accepts a connection is the kernel's choice: sequential requests may all
        # land on one. Concurrent creates keep one worker busy so the other answers too.
        sent = 12
        deadline = time.monotonic() + 60
        while len(_counter_writers(metrics_dir)) < 2 and time.monotonic() < deadline:
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda _n: requests.post(
                    f"{server.base}/Patient", json={"resourceType": "Patient"}, headers=FHIR,
                    timeout=30).status_code, range(8)))
            assert statuses == [201] * 8
            sent += 8
        assert len(_counter_writers(metrics_dir)) >= 2            # both workers wrote
        samples = _samples(root)
        assert _created(samples) == sent                            # merged across the workers
        deadline = time.monotonic() + 30
        while samples.get(("toh_sweep_duration_seconds_count", ()), 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
            samples = _samples(root)
        assert samples.get(("toh_sweep_duration_seconds_count", ()), 0) >= 1

        victim = _workers(server.process.pid)[0]
        assert (metrics_dir / f"gauge_livemostrecent_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (metrics_dir / f"gauge_livemostrecent_{victim}.db").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (metrics_dir / f"gauge_livemostrecent_{victim}.db").exists()   # child_exit ran
        assert _created(_samples(root)) == sent                # the dead worker's counts remain
    finally:
        server.stop()

    entries = []
    for line in Path(server.log.name).read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    requests_logged = [e for e in entries if e.get("logger") == "toh.requests"]
    assert {f"obs-{n}" for n in range(12)} <= {e["request_id"] for e in requests_logged}
    assert made in {e["request_id"] for e in requests_logged}
    one = next(e for e in requests_logged if e["request_id"] == "obs-0")
    assert one["status"] == 201 and one["type"] == "Patient" and one["method"] == "POST"
    assert any(e.get("logger") == "gunicorn.error" for e in entries)   # gunicorn's own lines are JSON too
