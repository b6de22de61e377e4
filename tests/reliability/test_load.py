"""Load held for a while: reads, searches, writes, sweeps (the scheduler's tick every second
in each worker, with follow-up Tasks falling due all along) and deliveries (a rest-hook
Subscription on the Tasks made ready, to a real receiver on loopback, delivered by the
workers' own tick) from several clients against `toh serve` with two workers. Zero errors,
memory flat (the workers' resident memory over the last part of the run is within 10% of the
first part, after a warm-up), and every notification queued during the run delivered once.

Short (CI): 30 s on PostgreSQL. TOH_RELIABILITY_LONG=1: 5 minutes on SQLite and PostgreSQL.
"""
from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from service.fhir.canonical import TOH_CODES
from tests.receivers import Receiver
from tests.reliability.live import FHIR, LONG, assert_store_consistent, serve

pytestmark = pytest.mark.slow
SECONDS = 300 if LONG else 30
WARM_UP = 0.25        # of the run, not compared
WINDOW = 0.2          # first and last parts compared
CLIENTS = 4


def task(tid: str, patient: str, start: date) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review"}]}, "description": "Review",
            "for": {"reference": f"Patient/{patient}"},
            "restriction": {"period": {"start": start.isoformat(), "end": start.isoformat()}}}


def outbox_events(database_url: str) -> dict[str, str]:
    """webhook-id -> status of every event notification in the outbox."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {str(webhook_id): str(status) for webhook_id, status in conn.execute(text(
                "SELECT webhook_id, status FROM outbox WHERE kind = 'event-notification'"))}
    finally:
        engine.dispose()


def wait_for_outbox_quiet(database_url: str, seconds: float = 120) -> None:
    """Until nothing is pending and nothing new was queued for 3 s (the last Tasks written are
    made ready by the next sweeps, their notifications delivered by the next ticks)."""
    deadline, last, quiet_since = time.monotonic() + seconds, None, time.monotonic()
    while time.monotonic() < deadline:
        rows = outbox_events(database_url)
        if rows != last or "pending" in rows.values():
            last, quiet_since = rows, time.monotonic()
        elif time.monotonic() - quiet_since >= 3:
            return
        time.sleep(0.5)
    raise AssertionError(f"the outbox never went quiet: {sorted(set((last or {}).values()))}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"] if LONG else ["postgres"], indirect=True)
def test_mixed_load_has_no_errors_and_flat_memory(database_url: str, tmp_path: Path) -> None:
    receiver = Receiver()
    server = serve(database_url, tmp_path, workers=2, TOH_SCHEDULER="on", TOH_SWEEP_INTERVAL_SECONDS="1",
                   TOH_DELIVERY_INTERVAL_SECONDS="1", TOH_WEBHOOK_ALLOWLIST="127.0.0.1", TOH_WEBHOOK_ALLOW_HTTP="1")
    base = f"{server.base}/fhir"
    subscribed = requests.post(f"{base}/Subscription", headers=FHIR, timeout=60, json={
        "resourceType": "Subscription", "status": "requested", "reason": "load", "criteria": "Task?status=ready",
        "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"}})
    assert subscribed.status_code == 201, subscribed.text
    deadline = time.monotonic() + 60    # active once its handshake is delivered: then every ready Task notifies
    while requests.get(f"{base}/Subscription/{subscribed.json()['id']}", timeout=30).json()["status"] != "active":
        assert time.monotonic() < deadline, "the subscription's handshake was not delivered"
        time.sleep(0.3)
    errors: list[str] = []
    done: dict[str, int] = {}
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    end = start + SECONDS
    soon = date.today() + timedelta(days=3)      # within the lead time: the next tick makes it ready

    def expect(response: requests.Response, *ok: int) -> requests.Response:
        if response.status_code not in ok:
            errors.append(f"{response.request.method} {response.request.url} -> {response.status_code} "
                          f"{response.text[:300]}")
        return response

    def client(n: int) -> None:
        session = requests.Session()
        rng = random.Random(n)
        pid = f"load-{n}"
        expect(session.put(f"{base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=FHIR,
                           timeout=120), 200, 201)
        ids: list[str] = []
        seq = 0
        while time.monotonic() < end and not errors:
            seq += 1
            kind = rng.choice(["write", "read", "read", "search", "search", "include", "update", "task"])
            if kind == "write" or not ids:
                created = expect(session.post(f"{base}/Observation", headers=FHIR, timeout=120, json={
                    "resourceType": "Observation", "status": "final", "code": {"coding": [
                        {"system": "http://loinc.org", "code": "72514-3"}]}, "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": seq % 10}}), 201)
                if created.status_code == 201:
                    ids.append(created.json()["id"])
            elif kind == "read":
                expect(session.get(f"{base}/Observation/{rng.choice(ids)}", timeout=120), 200)
            elif kind == "search":
                expect(session.get(f"{base}/Observation?patient=Patient/{pid}&code=http://loinc.org|72514-3&_count=20",
                                   timeout=120), 200)
            elif kind == "include":
                expect(session.get(f"{base}/Task?patient=Patient/{pid}&_include=Task:patient&_sort=-_lastUpdated",
                                   timeout=120), 200)
            elif kind == "update":
                oid = rng.choice(ids)
                expect(session.put(f"{base}/Observation/{oid}", headers=FHIR, timeout=120, json={
                    "resourceType": "Observation", "id": oid, "status": "amended", "code": {"text": "pain"},
                    "subject": {"reference": f"Patient/{pid}"}}), 200)
            else:
                tid = f"load-{n}-{seq}"
                expect(session.put(f"{base}/Task/{tid}", json=task(tid, pid, soon), headers=FHIR, timeout=120), 201)
            done[kind] = done.get(kind, 0) + 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        workers = set(server.worker_pids())
        while time.monotonic() < end and not errors:
            rss = server.rss_kib()
            assert set(rss) == workers, f"a worker was replaced (crashed or timed out): {workers} -> {set(rss)}"
            samples.append((time.monotonic() - start, sum(rss.values())))
            time.sleep(1)
        for t in threads:
            t.join(timeout=180)
        assert not errors, errors[:3]
        ready = requests.get(f"{base}/Task?status=ready&_summary=count", timeout=60).json()["total"]
        assert ready > 0, "the sweeps made no Task ready"
        wait_for_outbox_quiet(database_url)
    finally:
        server.stop()
        receiver.stop()
    outbox = outbox_events(database_url)
    ids = [r.headers["webhook-id"] for r in receiver.received if r.kind == "event-notification"]
    assert outbox and set(outbox.values()) == {"delivered"}, sorted(set(outbox.values()))
    assert set(ids) == set(outbox), "a notification marked delivered never arrived, or one arrived unqueued"
    assert len(ids) == len(set(ids)), "a notification was sent twice"     # no crash here: exactly once
    engine = create_engine(database_url)
    with engine.connect() as conn:
        notified = {str(f).split("/")[1] for (f,) in conn.execute(text(
            "SELECT focus FROM outbox WHERE kind = 'event-notification'"))}
        made_ready = {str(r) for (r,) in conn.execute(text(
            "SELECT res_id FROM resources WHERE res_type = 'Task' AND content LIKE '%\"status\":\"ready\"%'"))}
    engine.dispose()
    assert notified == made_ready, ("Tasks made ready without a notification, or notified without being ready",
                                    sorted(made_ready - notified)[:5], sorted(notified - made_ready)[:5])
    first = [kib for t, kib in samples if SECONDS * WARM_UP <= t < SECONDS * (WARM_UP + WINDOW)]
    last = [kib for t, kib in samples if t >= SECONDS * (1 - WINDOW)]
    assert first and last, samples
    growth = statistics.mean(last) / statistics.mean(first) - 1
    print(f"load {SECONDS} s: {dict(sorted(done.items()))}, {ready} Tasks made ready by sweeps, "
          f"{len(ids)} notifications delivered; workers' RSS "
          f"{statistics.mean(first) / 1024:.1f} -> {statistics.mean(last) / 1024:.1f} MiB ({100 * growth:+.1f}%)")
    assert abs(growth) <= 0.10, f"memory not flat: {100 * growth:+.1f}%"
    assert_store_consistent(database_url)
