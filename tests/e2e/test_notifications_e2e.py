"""Notifications against real processes (SQLite and PostgreSQL): `toh serve` with its tick,
`toh sweep --now`, `toh deliver [--now]`, `toh notifications`, a real HTTP receiver on loopback
and a real SMTP server (aiosmtpd). The "Done when" of issue 14."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from service.fhir.canonical import CONDITION_CLINICAL, CONDITION_VER_STATUS, EXT_LATERALITY, SNOMED, TOH_CODES
from service.notify import verify
from tests.conftest import LiveServer
from tests.receivers import Receiver

pytestmark = pytest.mark.slow
FHIR = {"Content-Type": "application/fhir+json"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HIP, LEFT, RIGHT = "24136001", "7771000", "24028007"
ENV = {"TOH_WEBHOOK_ALLOWLIST": "127.0.0.1", "TOH_WEBHOOK_ALLOW_HTTP": "1",   # the default tick (2 s)
       "TOH_WEBHOOK_READ_TIMEOUT": "5", "TOH_WEBHOOK_CONNECT_TIMEOUT": "2"}


def toh(*args: str, database_url: str, base: str = "", timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a `toh` command on the test's database (with the served base URL, which
    notifications point at)."""
    command = Path(sys.executable).with_name("toh")
    result = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, TOH_DATABASE_URL=database_url, TOH_BASE_URL=base, **ENV))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def wait_for(check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def put(base: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = requests.put(f"{base}/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR,
                            timeout=60)
    assert response.status_code in (200, 201), response.text
    return response.json()


def hip_condition(cid: str, side: str, onset: date) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system": CONDITION_CLINICAL, "code": "active"}]},
            "verificationStatus": {"coding": [{"system": CONDITION_VER_STATUS, "code": "confirmed"}]},
            "code": {"coding": [{"system": TOH_CODES, "code": "transient-osteoporosis-hip"}]},
            "bodySite": [{"coding": [{"system": SNOMED, "code": HIP}],
                          "extension": [{"url": EXT_LATERALITY, "valueCodeableConcept": {
                              "coding": [{"system": SNOMED, "code": side}]}}]}],
            "onsetDateTime": onset.isoformat()}


def subscribe(base: str, url: str, criteria: str) -> str:
    body = {"resourceType": "Subscription", "status": "requested", "reason": "e2e", "criteria": criteria,
            "extension": [{"url": "https://fhir.toh-service.org/StructureDefinition/subscription-secret",
                           "valueString": SECRET}],
            "channel": {"type": "rest-hook", "endpoint": url, "payload": "application/fhir+json"}}
    response = requests.post(f"{base}/Subscription", json=body, headers=FHIR, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def subscription(base: str, sub_id: str) -> dict[str, Any]:
    return dict(requests.get(f"{base}/Subscription/{sub_id}", timeout=30).json())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def server(env: None, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """`toh serve` (one worker) with its tick delivering every TOH_DELIVERY_INTERVAL_SECONDS (default)."""
    live = LiveServer(database_url, tmp_path, workers=1)
    yield live
    live.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_a_follow_up_falling_due_reaches_a_receiver_down_for_three_attempts(
        server: LiveServer, database_url: str, receiver: Receiver) -> None:
    base = server.base
    sub_id = subscribe(base, receiver.url, "Task?status=ready")
    wait_for(lambda: subscription(base, sub_id)["status"] == "active")        # the serve's tick: handshake
    receiver.fail_first = 3
    onset = date.today() - timedelta(days=10)
    put(base, {"resourceType": "Patient", "id": "p1"})
    put(base, hip_condition("hip", LEFT, onset))
    ready_on = onset + timedelta(weeks=6) - timedelta(days=7)                # the 6-week review becomes ready
    now = datetime(ready_on.year, ready_on.month, ready_on.day, 9, tzinfo=timezone.utc)
    assert "ready" in toh("sweep", "--now", iso(now), database_url=database_url, base=base).stdout
    for wait in (timedelta(0), timedelta(seconds=6), timedelta(minutes=6), timedelta(minutes=40)):
        now += wait
        toh("deliver", "--now", iso(now), database_url=database_url)
    events = receiver.events()
    assert [e.answered for e in events] == [503, 503, 503, 200]
    assert len({e.headers["webhook-id"] for e in events}) == 1
    assert all(verify(SECRET, e.headers, e.body) for e in events)
    focus = next(p for p in events[-1].bundle["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event")
    task_ref = next(p for p in focus["part"] if p["name"] == "focus")["valueReference"]["reference"]
    task = requests.get(task_ref, timeout=30).json()
    assert task["status"] == "ready"
    webhook_id = events[0].headers["webhook-id"]
    found = requests.get(f"{base}/Communication?identifier={webhook_id}", timeout=30).json()["entry"]
    communication = found[0]["resource"]
    assert communication["status"] == "completed"
    assert [n["text"] for n in communication["note"]] == [
        "attempt 1: HTTP 503", "attempt 2: HTTP 503", "attempt 3: HTTP 503", "attempt 4: delivered (HTTP 200)"]
    time.sleep(2)                                          # the tick in between delivered nothing more
    assert len(receiver.events()) == 4


def test_a_migration_flag_is_retried_within_seconds_by_toh_serve_alone(server: LiveServer,
                                                                         receiver: Receiver) -> None:
    base = server.base
    sub_id = subscribe(base, receiver.url, "Flag?status=active&code=migration")
    wait_for(lambda: subscription(base, sub_id)["status"] == "active")
    receiver.fail_first = 1
    first = date.today() - timedelta(days=90)
    put(base, {"resourceType": "Patient", "id": "p1"})
    put(base, hip_condition("left", LEFT, first))
    assert receiver.events() == []                         # one hip: no migration
    put(base, hip_condition("right", RIGHT, first + timedelta(days=60)))
    wait_for(lambda: len(receiver.events()) >= 2, seconds=30)
    events = receiver.events()
    assert [e.answered for e in events[:2]] == [503, 200]
    start = len(receiver.received) - len(receiver.events())   # arrivals: handshake(s) first
    gap = receiver.arrivals[start + 1] - receiver.arrivals[start]
    assert gap <= 10.5, gap
    assert len({e.headers["webhook-id"] for e in events}) == 1
    flag = requests.get(events[-1].bundle["entry"][0]["resource"]["parameter"][-1]["part"][-1]["valueReference"]
                        ["reference"], timeout=30).json()
    assert flag["status"] == "active" and "migrat" in flag["code"]["text"].lower()


def test_a_receiver_that_never_recovers_is_dead_lettered_then_replayed(server: LiveServer, database_url: str,
                                                                       receiver: Receiver) -> None:
    base = server.base
    sub_id = subscribe(base, receiver.url, "Task?status=ready")
    wait_for(lambda: subscription(base, sub_id)["status"] == "active")
    receiver.always_fail = True
    receiver.fail_status = 500
    now = datetime.now(timezone.utc) + timedelta(days=1)    # ahead of the serve's tick
    requests.post(f"{base}/Task", json={"resourceType": "Task", "status": "ready", "intent": "order"}, headers=FHIR,
                  timeout=30)
    for wait in (timedelta(0), timedelta(seconds=6), timedelta(minutes=6), timedelta(minutes=33),
                 timedelta(hours=2.3), timedelta(hours=5.6), timedelta(hours=11.1), timedelta(hours=15.5),
                 timedelta(hours=22.1), timedelta(hours=26.5), timedelta(hours=30)):
        now += wait
        toh("deliver", "--now", iso(now), database_url=database_url)
    assert 1 <= len(receiver.events()) <= 10
    wait_for(lambda: subscription(base, sub_id)["status"] == "error")
    assert "HTTP 500" in subscription(base, sub_id)["error"]
    flags = requests.get(f"{base}/Flag?category=admin&status=active", timeout=30).json()["entry"]
    assert sub_id in flags[0]["resource"]["code"]["text"]
    dead = toh("notifications", "list", "--dead", database_url=database_url).stdout.strip().splitlines()
    assert len(dead) == 1
    row_id, status, kind = dead[0].split("\t")[:3]
    assert (status, kind) == ("dead", "event-notification")
    receiver.always_fail = False
    toh("notifications", "replay", row_id, database_url=database_url)
    wait_for(lambda: receiver.events()[-1].answered == 200, seconds=20)      # the serve's tick
    wait_for(lambda: subscription(base, sub_id)["status"] == "active")
    assert len({e.headers["webhook-id"] for e in receiver.events()}) == 1


@pytest.fixture
def quiet_server(env: None, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[LiveServer]:
    monkeypatch.setenv("TOH_SCHEDULER", "off")
    live = LiveServer(database_url, tmp_path, workers=1)
    yield live
    live.stop()


def test_sigkill_mid_send_loses_nothing_and_resends_once_with_the_same_id(quiet_server: LiveServer,
                                                                          database_url: str,
                                                                          receiver: Receiver) -> None:
    base = quiet_server.base
    sub_id = subscribe(base, receiver.url, "Task?status=ready")
    toh("deliver", database_url=database_url)                  # the handshake
    assert subscription(base, sub_id)["status"] == "active"
    requests.post(f"{base}/Task", json={"resourceType": "Task", "status": "ready", "intent": "order"}, headers=FHIR,
                  timeout=30)
    receiver.delay = 4.0
    command = Path(sys.executable).with_name("toh")
    process = subprocess.Popen([str(command), "deliver"], env=dict(os.environ, TOH_DATABASE_URL=database_url, **ENV),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = len(receiver.arrivals)
    wait_for(lambda: len(receiver.arrivals) > before, seconds=60)   # the POST is in flight
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    receiver.delay = 0.0
    time.sleep(4.5)
    assert len(receiver.events()) == 1                               # it arrived; its record did not
    soon = datetime.now(timezone.utc) + timedelta(seconds=5)
    toh("deliver", "--now", iso(soon), database_url=database_url)   # the lease (2 + 2 x 5 + 15 s) still holds
    assert len(receiver.events()) == 1
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    toh("deliver", "--now", iso(later), database_url=database_url)
    toh("deliver", "--now", iso(later + timedelta(minutes=1)), database_url=database_url)
    events = receiver.events()
    assert len(events) == 2 and events[0].headers["webhook-id"] == events[1].headers["webhook-id"]
    listed = toh("notifications", "list", database_url=database_url).stdout
    assert "\tdelivered\tevent-notification\t" in listed


def test_an_email_reaches_the_smtp_server(env: None, database_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import email
    import email.policy

    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            received.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content, policy=email.policy.default)))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("TOH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TOH_SMTP_PORT", str(port))
    live = LiveServer(database_url, tmp_path, workers=1)
    try:
        base = live.base
        response = requests.post(f"{base}/Subscription", headers=FHIR, timeout=30, json={
            "resourceType": "Subscription", "status": "requested", "reason": "flags", "criteria": "Flag?status=active",
            "channel": {"type": "email", "endpoint": "mailto:dr.x@clinic.example"}})
        assert response.status_code == 201
        sub_id = response.json()["id"]
        wait_for(lambda: subscription(base, sub_id)["status"] == "active")
        requests.post(f"{base}/Flag", headers=FHIR, timeout=30, json={
            "resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p1"},
            "code": {"text": "Migration to the right hip"}})
        wait_for(lambda: received, seconds=30)
        recipients, message = received[0]
        assert recipients == ["dr.x@clinic.example"]
        assert message["Subject"] == "Flag raised: Migration to the right hip - patient p1"
        page = f"http://127.0.0.1:{live.port}/ui/patients/p1"      # the patient's staff page
        assert f"Open: {page}" in message.get_body(("plain",)).get_content()
        assert f'href="{page}"' in message.get_body(("html",)).get_content()
    finally:
        live.stop()
        controller.stop()
