"""Crash: SIGKILL the service (master and workers at once) while transaction bundles are being
written, `toh sweep` while it handles due follow-ups, and `toh worker` while it delivers the
notifications of follow-ups falling due (a real HTTP receiver holds each request, so the kill
lands mid-send); restart; then nothing committed is lost, nothing half-written is visible, and
no reminder is lost or doubled: each notification re-sent after the crash carries its first
webhook-id (receivers dedupe per Standard Webhooks) and the outbox ends with each delivered
once; and the service while clients read, after which every answered read has its AuditEvent,
once. On SQLite and PostgreSQL. `crash_during` below kills any such subprocess.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from service import create_app
from service.fhir.canonical import EXT_SUBSCRIPTION_SECRET, TOH_CODES
from service.notify import verify
from service.workflows.delivery import deliver
from tests.e2e.test_notifications_e2e import ENV as NOTIFY_ENV, SECRET
from tests.receivers import Received, Receiver
from tests.reliability.live import FHIR, LONG, assert_store_consistent, scalar, serve

pytestmark = pytest.mark.slow
OBSERVATIONS = 8           # per bundle, with their Patient: all or nothing
ROUNDS = 3 if LONG else 1  # kill / restart cycles


def crash_bundle(client: int, k: int) -> dict[str, Any]:
    """A transaction: a new Patient (urn:uuid), OBSERVATIONS Observations referring to it, and
    an update of the client's own Patient (a new version each time), all tagged b<client>-<k>."""
    tag = f"b{client}-{k}"
    patient = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [{"fullUrl": patient, "resource": {
        "resourceType": "Patient", "identifier": [{"system": "urn:crash", "value": tag}]},
        "request": {"method": "POST", "url": "Patient"}}]
    for j in range(OBSERVATIONS):
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "Observation", "status": "final", "code": {"text": "pain"},
            "identifier": [{"system": "urn:crash", "value": f"{tag}-{j}"}],
            "subject": {"reference": patient}, "valueQuantity": {"value": j}},
            "request": {"method": "POST", "url": "Observation"}})
    entries.append({"resource": {"resourceType": "Patient", "id": f"writer-{client}",
                                 "identifier": [{"system": "urn:crash-last", "value": tag}]},
                    "request": {"method": "PUT", "url": f"Patient/writer-{client}"}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def test_sigkill_during_transaction_bundles_loses_nothing_committed(database_url: str, tmp_path: Path) -> None:
    clients = 3
    acknowledged: set[tuple[int, int]] = set()
    attempted: set[tuple[int, int]] = set()
    for round_no in range(ROUNDS):
        server = serve(database_url, tmp_path, workers=2)
        base = f"{server.base}/fhir"
        stop = threading.Event()
        unexpected: list[str] = []

        def writer(client: int) -> None:
            session = requests.Session()
            k = round_no * 10_000
            while not stop.is_set():
                k += 1
                attempted.add((client, k))
                try:
                    response = session.post(base, data=json.dumps(crash_bundle(client, k)), headers=FHIR, timeout=60)
                except requests.RequestException:
                    return            # the server is gone: this bundle may or may not have committed
                if response.status_code == 200:
                    acknowledged.add((client, k))
                elif response.status_code != 503:
                    unexpected.append(f"{response.status_code} {response.text[:300]}")

        threads = [threading.Thread(target=writer, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        goal = len(acknowledged) + 4     # some bundles done, others in flight
        while len(acknowledged) < goal and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random(round_no).uniform(0.0, 0.3))
        server.kill()
        stop.set()
        for t in threads:
            t.join(timeout=120)
        assert not unexpected, unexpected[:3]
        assert len(acknowledged) >= goal, "the server wrote too few bundles before the deadline"

    server = serve(database_url, tmp_path, workers=1)
    try:
        base = f"{server.base}/fhir"
        counts = assert_store_consistent(database_url)
        patients = requests.get(f"{base}/Patient?identifier=urn:crash|&_count=1000&_elements=identifier",
                                timeout=60).json()
        tags = {e["resource"]["identifier"][0]["value"]: e["resource"]["id"] for e in patients.get("entry", [])}
        for client, k in attempted:
            tag = f"b{client}-{k}"
            if (client, k) in acknowledged:
                assert tag in tags, f"bundle {tag} was acknowledged but is lost"
            if tag not in tags:
                assert scalar(database_url, "SELECT count(*) FROM resources WHERE content LIKE :t",
                              t=f'%"{tag}-%') == 0, f"bundle {tag}: Observations without their Patient"
                continue
            # all of it, and findable through the search index
            found = requests.get(f"{base}/Observation?subject=Patient/{tags[tag]}&_count=100", timeout=60).json()
            assert found["total"] == OBSERVATIONS, (tag, found["total"])
        for client in range(clients):
            mine = sorted(k for c, k in acknowledged if c == client)
            current = requests.get(f"{base}/Patient/writer-{client}", timeout=60)
            if not mine:
                continue
            last = int(current.json()["identifier"][0]["value"].split("-")[1])
            assert last >= mine[-1], "an acknowledged update of writer-{client} is lost"
        after = requests.post(base, data=json.dumps(crash_bundle(99, 1)), headers=FHIR, timeout=60)
        assert after.status_code == 200, after.text[:500]
        print(f"crash: {len(attempted)} bundles sent, {len(acknowledged)} acknowledged, {len(tags)} stored; {counts}")
    finally:
        server.stop()


def test_sigkill_while_reading_loses_and_doubles_no_answered_reads_audit_event(database_url: str,
                                                                               tmp_path: Path) -> None:
    """A read is answered only once its AuditEvent is recorded (PostgreSQL: committed; SQLite:
    appended to the audit journal, drained into the table by then or after: service.store.
    audit_journal). SIGKILL the service while 4 clients read; once it is back, the AuditEvent
    search finds each answered read's event exactly once (by its X-Request-ID)."""
    server = serve(database_url, tmp_path, workers=2)
    base = f"{server.base}/fhir"
    patient = {"resourceType": "Patient", "id": "audited"}
    assert requests.put(f"{base}/Patient/audited", data=json.dumps(patient), headers=FHIR, timeout=60).ok
    answered: list[str] = []
    unexpected: list[str] = []
    stop = threading.Event()

    def reader(client: int) -> None:
        session = requests.Session()
        for i in range(1_000_000):
            if stop.is_set():
                return
            request_id = f"crash-read-{client}-{i}"
            try:
                response = session.get(f"{base}/Patient/audited", headers={"X-Request-ID": request_id}, timeout=60)
            except requests.RequestException:
                return            # the server is gone: this read may or may not have been recorded
            if response.status_code == 200:
                answered.append(request_id)
            elif response.status_code != 503:
                unexpected.append(f"{response.status_code} {response.text[:300]}")

    threads = [threading.Thread(target=reader, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(answered) < (3000 if LONG else 600) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not unexpected, unexpected[:3]
    assert len(answered) >= 100, "too few reads answered before the deadline"

    server = serve(database_url, tmp_path, workers=1)
    try:
        recorded: list[str] = []
        url: str | None = f"{server.base}/fhir/AuditEvent?entity=Patient/audited&subtype=read&_count=500"
        while url:
            page = requests.get(url, timeout=60).json()
            for entry in page.get("entry", []):
                recorded += [e["what"]["identifier"]["value"] for e in entry["resource"]["entity"]
                             if e.get("what", {}).get("identifier", {}).get("system") == "urn:toh:request-id"]
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        doubled = [rid for rid, n in Counter(recorded).items() if n > 1]
        assert not doubled, doubled[:5]
        lost = set(answered) - set(recorded)
        assert not lost, f"{len(lost)} answered reads have no AuditEvent: {sorted(lost)[:5]}"
        print(f"crash while reading: {len(answered)} reads answered, {len(recorded)} read events recorded")
    finally:
        server.stop()


def follow_up_task(tid: str, start: date) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review"}]},
            "for": {"reference": "Patient/p1"}, "description": "Review",
            "restriction": {"period": {"start": start.isoformat(), "end": start.isoformat()}}}


def crash_during(command: list[str], env: dict[str, str], started: Callable[[], bool], seconds: float = 120) -> bool:
    """Run command in its own process group and SIGKILL the group once started() holds.
    Returns whether it was killed while still running (False: it finished first)."""
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + seconds
    while process.poll() is None and not started() and time.monotonic() < deadline:
        time.sleep(0.02)
    running = process.poll() is None
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    return running


def test_sigkill_during_a_sweep_loses_and_doubles_no_reminder(database_url: str, tmp_path: Path) -> None:
    n = 400 if LONG else 100
    start = date.today() + timedelta(days=60)
    now = (start - timedelta(days=7)).isoformat() + "T09:00:00Z"      # the day they become ready
    app = create_app({"database_url": database_url})     # in-process: quicker than a server
    try:
        entries = [{"resource": {"resourceType": "Patient", "id": "p1"}, "request": {"method": "PUT", "url": "Patient/p1"}}]
        entries += [{"resource": follow_up_task(f"t{i}", start), "request": {"method": "PUT", "url": f"Task/t{i}"}}
                    for i in range(n)]
        stored = app.test_client().post("/fhir", json={"resourceType": "Bundle", "type": "transaction",
                                                       "entry": entries}, headers=FHIR)
        assert stored.status_code == 200, stored.get_data(as_text=True)[:500]
    finally:
        app.extensions["toh"].database.dispose()
    toh = str(Path(sys.executable).with_name("toh"))
    command = [toh, "sweep", "--now", now, "--database-url", database_url]
    reminders = "SELECT count(*) FROM reminders"
    killed = crash_during(command, {}, lambda: scalar(database_url, reminders) >= 10)
    handled_before = scalar(database_url, reminders)
    assert killed and handled_before < n, f"the sweep finished before it could be killed ({handled_before} of {n})"
    assert_store_consistent(database_url)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert scalar(database_url, reminders) == n                # none lost, none doubled
    assert scalar(database_url, "SELECT count(DISTINCT about) FROM reminders WHERE kind = 'follow-up-due'") == n
    ready = scalar(database_url, "SELECT count(*) FROM resources WHERE res_type = 'Task' AND content LIKE :s",
                   s='%"status":"ready"%')
    assert ready == n
    # each Task went requested -> ready once: two versions, not three
    assert scalar(database_url, "SELECT max(version) FROM resources WHERE res_type = 'Task'") == 2
    assert_store_consistent(database_url)
    print(f"sweep crash: killed after {handled_before} of {n} reminders; the next sweep did the rest")


def notified_focus(event: Received) -> str:
    """'Task/<id>' of an event notification (its focus is Task/<id>/_history/<n>, absolute)."""
    params = event.bundle["entry"][0]["resource"]["parameter"]
    parts = next(p["part"] for p in params if p["name"] == "notification-event")
    reference = next(p["valueReference"]["reference"] for p in parts if p["name"] == "focus")
    return "/".join(reference.split("/_history/")[0].split("/")[-2:])


def test_sigkill_during_notification_delivery_loses_and_doubles_no_reminder(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Follow-ups falling due today, a Subscription on Task?status=ready to a receiver that holds
    each request 0.3 s; `toh worker` sweeps them ready and delivers, and is SIGKILLed while
    requests are in flight (ROUNDS times), then runs again until the outbox is empty and stops
    on SIGTERM. Its lease
    is 2 + 2 x 2 + 15 = 21 s (TOH_WEBHOOK_READ_TIMEOUT=2), so each restart waits that long for
    the rows the dead one held."""
    n = 200 if LONG else 40
    delay = 0.3
    for name, value in {**NOTIFY_ENV, "TOH_WEBHOOK_READ_TIMEOUT": "2"}.items():
        monkeypatch.setenv(name, value)
    receiver = Receiver(delay=delay)
    worker = [str(Path(sys.executable).with_name("toh")), "worker", "--database-url", database_url]
    try:
        start = datetime.now(timezone.utc).date() + timedelta(days=3)        # ready since 4 days ago
        app = create_app({"database_url": database_url})
        try:
            subscription = {"resourceType": "Subscription", "id": "s1", "status": "requested", "reason": "crash",
                            "criteria": "Task?status=ready",
                            "extension": [{"url": EXT_SUBSCRIPTION_SECRET, "valueString": SECRET}],
                            "channel": {"type": "rest-hook", "endpoint": receiver.url,
                                        "payload": "application/fhir+json"}}
            entries = [{"resource": {"resourceType": "Patient", "id": "p1"},
                        "request": {"method": "PUT", "url": "Patient/p1"}},
                       {"resource": subscription, "request": {"method": "PUT", "url": "Subscription/s1"}}]
            entries += [{"resource": follow_up_task(f"t{i}", start), "request": {"method": "PUT", "url": f"Task/t{i}"}}
                        for i in range(n)]
            client = app.test_client()
            stored = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
                                 headers=FHIR)
            assert stored.status_code == 200, stored.get_data(as_text=True)[:500]
            services = app.extensions["toh"]
            deliver(services.database, services.channels, datetime.now(timezone.utc))      # the handshake
            assert client.get("/fhir/Subscription/s1").get_json()["status"] == "active"
        finally:
            app.extensions["toh"].database.dispose()

        in_flight_at_kill: list[int] = []
        rng = random.Random(n)
        for round_no in range(ROUNDS):
            goal = len(receiver.arrivals) + rng.randint(4, 12)     # past the first 8 sent at once

            def mid_send(goal: int = goal) -> bool:
                in_flight = len(receiver.arrivals) - len(receiver.received)
                if len(receiver.arrivals) >= goal and in_flight > 0:
                    in_flight_at_kill.append(in_flight)
                    return True
                return False

            killed = crash_during(worker, {}, mid_send)
            assert killed and len(in_flight_at_kill) == round_no + 1, f"no kill mid-send ({len(receiver.arrivals)} requests arrived)"
            held = time.monotonic() + 30                            # the receiver answers the dead sender anyway
            while len(receiver.received) < len(receiver.arrivals) and time.monotonic() < held:
                time.sleep(0.05)
            assert_store_consistent(database_url)

        pending = "SELECT count(*) FROM outbox WHERE status = 'pending'"
        log = tmp_path / "worker.log"          # a file: a pipe nobody reads would fill and stall its logging
        with log.open("wb") as out:
            process = subprocess.Popen(worker, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while (scalar(database_url, pending) or scalar(database_url, "SELECT count(*) FROM reminders") < n) \
                    and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=60)
        assert scalar(database_url, pending) == 0, log.read_text()[-3000:]
        assert process.returncode == 0, log.read_text()[-3000:]                 # a clean stop

        assert len(receiver.received) == len(receiver.arrivals)
        events = receiver.events()
        assert all(verify(SECRET, e.headers, e.body) for e in events)
        ids: dict[str, set[str]] = {}
        for event in events:
            ids.setdefault(notified_focus(event), set()).add(event.headers["webhook-id"])
        assert set(ids) == {f"Task/t{i}" for i in range(n)}                     # every reminder arrived
        assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
        assert len(set.union(*ids.values())) == n                               # no id shared by two
        resent = len(events) - n
        assert resent >= sum(in_flight_at_kill), "a request in flight at a kill was not sent again"

        engine = create_engine(database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT kind, status, focus, webhook_id, communication_id FROM outbox")).all()
                communications: dict[str, str] = {r: c for r, c in conn.execute(text(
                    "SELECT res_id, content FROM resources WHERE res_type = 'Communication'"))}
        finally:
            engine.dispose()
        assert {(kind, status) for kind, status, *_ in rows} == {("handshake", "delivered"),
                                                                ("event-notification", "delivered")}
        sent = {"/".join(focus.split("/")[:2]): webhook_id for kind, _, focus, webhook_id, _ in rows
                if kind == "event-notification"}
        assert len(sent) == n == len(rows) - 1
        assert sent == {focus: next(iter(v)) for focus, v in ids.items()}     # received under its row's id
        assert sorted(str(c) for *_, c in rows) == sorted(communications)        # one Communication each
        assert all(json.loads(c)["status"] == "completed" for c in communications.values())
        assert scalar(database_url, "SELECT count(DISTINCT about) FROM reminders WHERE kind = 'follow-up-due'") == n
        assert scalar(database_url, "SELECT max(version) FROM resources WHERE res_type = 'Task'") == 2
        assert_store_consistent(database_url)
        print(f"delivery crash: {n} reminders, {ROUNDS} kills with {in_flight_at_kill} requests in flight, "
              f"{len(events)} received ({resent} sent again with their first webhook-id)")
    finally:
        receiver.stop()
