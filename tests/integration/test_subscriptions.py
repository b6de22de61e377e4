"""Subscriptions end to end in-process (SQLite and PostgreSQL): CRUD and its checks, the
outbox written with the change, delivery to real HTTP receivers on loopback (retries on the
schedule, Retry-After, 410, dead letters and replay, timeouts, leases), ownership."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.clock import FixedClock
from service.notify import verify
from service.security import ROLES
from service.store.notifications import Outbox, outbox
from service.workflows.delivery import deliver, replay
from service.workflows.notifications import RETRY_DELAYS
from tests.auth import make_token
from tests.receivers import Receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def app(database_url: str, clock: FixedClock):  # type: ignore[no-untyped-def]
    from service import create_app
    application = create_app({"database_url": database_url, "base_url": "http://toh.test/fhir",
                              "webhook_allowlist": "127.0.0.1", "webhook_allow_http": True,
                              "webhook_read_timeout": 1.0, "webhook_connect_timeout": 1.0}, clock=clock)
    application.config["TESTING"] = True
    yield application
    application.extensions["toh"].database.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def subscription(endpoint: str, criteria: str = "Task?status=ready", content: str | None = None,
                 secret: str | None = SECRET) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}
    if content:
        channel["_payload"] = {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
            "valueCode": content}]}
    body: dict[str, Any] = {"resourceType": "Subscription", "status": "requested", "reason": "follow-ups",
                            "criteria": criteria, "channel": channel}
    if secret:
        body["extension"] = [{"url": "https://fhir.toh-service.org/StructureDefinition/subscription-secret",
                              "valueString": secret}]
    return body


def run(app) -> list[tuple[int, str, str, str, str]]:  # type: ignore[no-untyped-def]
    svc = app.extensions["toh"]
    return deliver(svc.database, svc.channels, svc.clock.now()).attempts


def active(app, client, endpoint: str, **kwargs: Any) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/fhir/Subscription", json=subscription(endpoint, **kwargs))
    assert response.status_code == 201, response.get_json()
    run(app)   # the handshake
    sub_id = response.get_json()["id"]
    stored = client.get(f"/fhir/Subscription/{sub_id}").get_json()
    assert stored["status"] == "active", stored.get("error")
    return str(sub_id)


def rows(app) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    with app.extensions["toh"].database.unit_of_work(write=False) as uow:
        return [dict(r._mapping) for r in uow.conn.execute(select(outbox).order_by(outbox.c.id))]


def ready_task(client) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/fhir/Task", json={"resourceType": "Task", "status": "ready", "intent": "order",
                                               "for": {"reference": "Patient/p1"}})
    assert response.status_code == 201
    return str(response.get_json()["id"])


def test_secret_is_shown_once_and_the_handshake_activates(app, client, receiver: Receiver) -> None:
    response = client.post("/fhir/Subscription", json=subscription(receiver.url, secret=None))
    assert response.status_code == 201
    created = response.get_json()
    secret = next(e["valueString"] for e in created["extension"] if e["url"].endswith("subscription-secret"))
    assert secret.startswith("whsec_")
    for read in (client.get(f"/fhir/Subscription/{created['id']}"), client.get("/fhir/Subscription"),
                 client.get(f"/fhir/Subscription/{created['id']}/_history")):
        assert "subscription-secret" not in read.get_data(as_text=True)
    assert [a[2] for a in run(app)] == ["handshake"]
    hit = receiver.received[0]
    assert verify(secret, hit.headers, hit.body)
    assert hit.bundle["type"] == "history" and hit.kind == "handshake"
    assert client.get(f"/fhir/Subscription/{created['id']}").get_json()["status"] == "active"
    # an update without the secret keeps it
    current = client.get(f"/fhir/Subscription/{created['id']}").get_json()
    current["reason"] = "changed"
    assert client.put(f"/fhir/Subscription/{created['id']}", json=current).status_code == 200
    ready_task(client)
    run(app)
    assert verify(secret, receiver.events()[0].headers, receiver.events()[0].body)


@pytest.mark.parametrize("criteria, status", [("Task?bogus=1", 400), ("Nothing?status=ready", 400),
                                              ("Task?status=ready&_count=5", 400), ("Task?date=notadate", 400)])
def test_bad_criteria_is_refused_and_stores_nothing(client, criteria: str, status: int) -> None:
    response = client.post("/fhir/Subscription", json=subscription("https://8.8.8.8/hook", criteria=criteria))
    assert response.status_code == status
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Subscription").get_json().get("entry") is None


@pytest.mark.parametrize("endpoint", ["http://10.0.0.5/hook", "https://169.254.169.254/latest", "https://[::1]/x",
                                      "https://user:pw@8.8.8.8/hook", "ftp://8.8.8.8/x", "https://192.168.1.1/"])
def test_endpoints_that_reach_inside_are_refused(client, endpoint: str) -> None:
    response = client.post("/fhir/Subscription", json=subscription(endpoint))
    assert response.status_code == 422, response.get_json()
    assert client.get("/fhir/Subscription").get_json().get("entry") is None


def test_a_matching_write_queues_one_notification_in_its_transaction(app, client, receiver: Receiver) -> None:
    sub_id = active(app, client, receiver.url, content="full-resource")
    other = active(app, client, receiver.url, criteria="Task?status=completed")
    task_id = ready_task(client)
    client.post("/fhir/Task", json={"resourceType": "Task", "status": "requested", "intent": "order"})
    queued = [r for r in rows(app) if r["kind"] == "event-notification"]
    assert [(r["subscription_id"], r["focus"]) for r in queued] == [(sub_id, f"Task/{task_id}/_history/1")]
    assert other != sub_id
    run(app)
    [event] = receiver.events()
    bundle = event.bundle
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    parts = {p["name"]: p for p in status["parameter"]}
    assert parts["type"]["valueCode"] == "event-notification"
    focus = next(p for p in parts["notification-event"]["part"] if p["name"] == "focus")
    assert focus["valueReference"]["reference"] == f"http://toh.test/fhir/Task/{task_id}"
    assert bundle["entry"][1]["resource"]["id"] == task_id          # full-resource
    assert verify(SECRET, event.headers, event.body)


def test_id_only_is_the_default_content(app, client, receiver: Receiver) -> None:
    active(app, client, receiver.url)
    ready_task(client)
    run(app)
    assert len(receiver.events()[0].bundle["entry"]) == 1


def test_retries_follow_the_schedule_with_one_webhook_id(app, client, clock: FixedClock) -> None:
    receiver = Receiver(fail_first=3)
    try:
        active(app, client, receiver.url)
        ready_task(client)
        outcomes = []
        for wait in RETRY_DELAYS[:4]:
            clock.set(clock.now() + wait * 1.11)
            outcomes += [a[4] for a in run(app)]
        assert outcomes == ["pending", "pending", "pending", "delivered"]
        assert len({e.headers["webhook-id"] for e in receiver.events()}) == 1
        assert all(verify(SECRET, e.headers, e.body) for e in receiver.events())
        [row] = [r for r in rows(app) if r["kind"] == "event-notification"]
        communication = client.get(f"/fhir/Communication/{row['communication_id']}").get_json()
        assert communication["status"] == "completed"
        assert [n["text"] for n in communication["note"]] == [
            "attempt 1: HTTP 503", "attempt 2: HTTP 503", "attempt 3: HTTP 503", "attempt 4: delivered (HTTP 200)"]
    finally:
        receiver.stop()


def test_retry_after_is_honoured(app, client) -> None:
    receiver = Receiver(fail_first=1, fail_status=429, fail_headers={"Retry-After": "120"})
    try:
        active(app, client, receiver.url)
        ready_task(client)
        now = app.extensions["toh"].clock.now()
        run(app)
        [row] = [r for r in rows(app) if r["kind"] == "event-notification"]
        assert row["next_attempt_at"] >= now + timedelta(seconds=120)
    finally:
        receiver.stop()


def test_gone_disables_the_subscription(app, client) -> None:
    receiver = Receiver(always_fail=True, fail_status=410)
    try:
        sub_id = active(app, client, receiver.url)
        ready_task(client)
        run(app)
        assert client.get(f"/fhir/Subscription/{sub_id}").get_json()["status"] == "off"
        ready_task(client)
        assert [r["status"] for r in rows(app) if r["kind"] == "event-notification"] == ["cancelled"]
    finally:
        receiver.stop()


def test_dead_letter_errors_the_subscription_raises_a_flag_and_replays(app, client, clock: FixedClock) -> None:
    receiver = Receiver(always_fail=True, fail_status=500)
    try:
        sub_id = active(app, client, receiver.url)
        ready_task(client)
        for wait in (*RETRY_DELAYS, timedelta(hours=30)):
            clock.set(clock.now() + wait * 1.11)
            run(app)
        assert len(receiver.events()) == len(RETRY_DELAYS)
        [row] = [r for r in rows(app) if r["kind"] == "event-notification"]
        assert row["status"] == "dead" and row["attempts"] == 10
        sub = client.get(f"/fhir/Subscription/{sub_id}").get_json()
        assert sub["status"] == "error" and "HTTP 500" in sub["error"]
        flags = client.get("/fhir/Flag?category=admin&status=active").get_json()["entry"]
        assert sub_id in flags[0]["resource"]["code"]["text"]
        receiver.always_fail = False
        assert replay(app.extensions["toh"].database, row["id"], clock.now())
        assert [a[4] for a in run(app)] == ["delivered"]
        assert client.get(f"/fhir/Subscription/{sub_id}").get_json()["status"] == "active"
        assert len({e.headers["webhook-id"] for e in receiver.events()}) == 1
    finally:
        receiver.stop()


def test_a_slow_receiver_times_out_without_holding_up_others(app, client) -> None:
    slow, quick = Receiver(), Receiver()
    try:
        active(app, client, slow.url)
        active(app, client, quick.url)
        slow.delay = 3.0
        ready_task(client)
        outcomes = sorted((a[3].split(" (")[0], a[4]) for a in run(app))
        assert outcomes == [("delivered", "delivered"), ("timed out", "pending")]
        assert len(quick.events()) == 1
    finally:
        slow.stop()
        quick.stop()


def test_a_claim_whose_sender_died_is_sent_again_with_the_same_id(app, client, clock: FixedClock,
                                                                  receiver: Receiver) -> None:
    active(app, client, receiver.url)
    ready_task(client)
    svc = app.extensions["toh"]
    with svc.database.unit_of_work() as uow:          # a deliverer claims, then dies before sending
        _, claimed = Outbox(uow.conn).claim(clock.now(), svc.channels.lease)
        uow.commit()
    assert len(claimed) == 1
    assert run(app) == []                               # leased: nobody else sends it yet
    clock.set(clock.now() + svc.channels.lease + timedelta(seconds=1))
    assert [a[4] for a in run(app)] == ["delivered"]
    assert receiver.events()[0].headers["webhook-id"] == claimed[0].webhook_id


def test_a_row_claimed_long_before_its_send_is_not_sent_twice(app, client, clock: FixedClock,
                                                             receiver: Receiver) -> None:
    """A pass sends its claim `parallel` rows at a time, so a row may wait in it longer than
    the lease, which covers one send: the fault (issue 18) was that another deliverer then took
    the row over and both sent it. Each send now renews its row's lease as it starts, and skips
    a row another pass has taken: only the send in flight when its lease ran out goes twice."""
    import dataclasses
    import threading
    import time
    from collections import Counter
    active(app, client, receiver.url)
    for _ in range(4):
        ready_task(client)
    svc = app.extensions["toh"]
    receiver.delay = 0.6                                               # within the read timeout (1 s)
    first = threading.Thread(target=deliver, args=(svc.database, dataclasses.replace(svc.channels, parallel=1),
                                                   clock.now()))
    first.start()
    deadline = time.monotonic() + 30
    while len(receiver.arrivals) < 2 and time.monotonic() < deadline:    # the handshake, then its first send
        time.sleep(0.01)
    later = clock.now() + svc.channels.lease + timedelta(seconds=1)      # the first claim's lease has run out
    assert [a[4] for a in deliver(svc.database, svc.channels, later).attempts] == ["delivered"] * 4
    first.join(60)
    assert sorted(Counter(e.headers["webhook-id"] for e in receiver.events()).values()) == [1, 1, 1, 2]
    assert [r["status"] for r in rows(app)] == ["delivered"] * 5


def test_subscriptions_belong_to_their_owner(app, receiver: Receiver) -> None:
    alice = app.test_client(token=make_token(ROLES["staff"], sub="alice"))
    bob = app.test_client(token=make_token(ROLES["staff"], sub="bob"))
    admin = app.test_client(token=make_token(ROLES["admin"], sub="root"))
    created = alice.post("/fhir/Subscription", json=subscription(receiver.url)).get_json()
    sub_id = created["id"]
    assert bob.get(f"/fhir/Subscription/{sub_id}").status_code == 403
    assert bob.put(f"/fhir/Subscription/{sub_id}", json=created).status_code == 403
    assert bob.delete(f"/fhir/Subscription/{sub_id}").status_code == 403
    assert bob.get("/fhir/Subscription").get_json().get("entry") is None
    assert bob.get(f"/fhir/Subscription/{sub_id}/_history").status_code == 403
    assert "alice" not in bob.get("/fhir/Subscription/_history").get_data(as_text=True)
    assert [e["resource"]["id"] for e in alice.get("/fhir/Subscription").get_json()["entry"]] == [sub_id]
    assert admin.get(f"/fhir/Subscription/{sub_id}").status_code == 200
    assert len(admin.get("/fhir/Subscription").get_json()["entry"]) == 1
    stolen = dict(created, extension=[{"url": "https://fhir.toh-service.org/StructureDefinition/subscription-owner",
                                       "valueString": "alice"}])
    made = bob.post("/fhir/Subscription", json=stolen).get_json()
    assert [e["valueString"] for e in made["extension"] if e["url"].endswith("owner")] == ["bob"]
    assert alice.delete(f"/fhir/Subscription/{sub_id}").status_code == 204


def test_outbox_lists_as_json(app, client, receiver: Receiver) -> None:
    active(app, client, receiver.url)
    ready_task(client)
    [row] = [r for r in rows(app) if r["kind"] == "event-notification"]
    assert json.loads(row["payload"])["summary"]["patient"] == "p1"


def test_metrics_follow_the_outbox(app, client, clock: FixedClock) -> None:
    """/metrics (README, "Health, readiness and metrics"): the outbox's depth and the age of its
    oldest notification come from the database at each scrape; each attempt is counted by
    channel and outcome."""
    from prometheus_client.parser import text_string_to_metric_families

    def series() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def attempts(outcome: str) -> float:
        return series().get(("toh_delivery_attempts_total", (("channel", "rest-hook"), ("outcome", outcome))), 0.0)

    receiver = Receiver()
    delivered, retried = attempts("delivered"), attempts("retry")
    try:
        active(app, client, receiver.url)                      # the handshake is delivered
    finally:
        receiver.stop()                                        # then the receiver is down
    assert attempts("delivered") == delivered + 1
    assert series()[("toh_outbox_depth", ())] == 0
    ready_task(client)
    clock.set(clock.now() + timedelta(seconds=90))
    waiting = series()
    assert waiting[("toh_outbox_depth", ())] == 1
    assert waiting[("toh_outbox_oldest_age_seconds", ())] == pytest.approx(90, abs=1)
    assert [a[4] for a in run(app)] == ["pending"]              # refused: retried later
    assert attempts("retry") == retried + 1
    assert series()[("toh_outbox_depth", ())] == 1


def test_concurrent_claims_never_share_a_row(app, client, receiver: Receiver, database_url: str) -> None:
    active(app, client, receiver.url)
    for _ in range(6):
        ready_task(client)
    svc = app.extensions["toh"]
    now = svc.clock.now()
    if database_url.startswith("postgresql"):
        with svc.database.unit_of_work() as first, svc.database.unit_of_work() as second:
            _, mine = Outbox(first.conn).claim(now, svc.channels.lease, limit=3)   # held, not committed
            _, theirs = Outbox(second.conn).claim(now, svc.channels.lease, limit=10)
            first.commit()
            second.commit()
    else:   # one writer at a time: the lease keeps the second claim off the first one's rows
        with svc.database.unit_of_work() as first:
            _, mine = Outbox(first.conn).claim(now, svc.channels.lease, limit=3)
            first.commit()
        with svc.database.unit_of_work() as second:
            _, theirs = Outbox(second.conn).claim(now, svc.channels.lease, limit=10)
            second.commit()
    assert len(mine) == 3 and len(theirs) == 3
    assert not {r.id for r in mine} & {r.id for r in theirs}


def test_two_deliverers_at_once_send_each_notification_once(app, client, receiver: Receiver) -> None:
    import threading
    active(app, client, receiver.url)
    for _ in range(12):
        ready_task(client)
    svc = app.extensions["toh"]
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda: reports.append(deliver(svc.database, svc.channels, svc.clock.now(),
                                                                      limit=4))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    leftover = run(app)     # whatever the three left
    ids = [e.headers["webhook-id"] for e in receiver.events()]
    attempts = [a for r in reports for a in r.attempts] + leftover
    assert len(ids) == 12 and len(set(ids)) == 12, attempts


def test_a_subscription_made_in_a_transaction_bundle_is_sealed_and_handshaken(app, client, receiver: Receiver) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6a1c4a56-1f8a-4b5e-9d55-0c2b2f0f0c01",
         "resource": subscription(receiver.url, secret=None), "request": {"method": "POST", "url": "Subscription"}},
        {"resource": {"resourceType": "Task", "status": "ready", "intent": "order"},
         "request": {"method": "POST", "url": "Task"}}]}
    response = client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert response.status_code == 200, response.get_json()
    created = response.get_json()["entry"][0]["resource"]
    secret = next(e["valueString"] for e in created["extension"] if e["url"].endswith("subscription-secret"))
    assert "subscription-secret" not in client.get(f"/fhir/Subscription/{created['id']}").get_data(as_text=True)
    run(app)
    assert [r.kind for r in receiver.received] == ["handshake"]
    assert verify(secret, receiver.received[0].headers, receiver.received[0].body)


def test_a_receiver_down_for_a_while_gets_it_when_back(app, client, clock: FixedClock, receiver: Receiver) -> None:
    active(app, client, receiver.url)
    receiver.stop()                                   # connections refused from now on
    ready_task(client)
    outcomes = [a[3] for a in run(app)]
    clock.set(clock.now() + timedelta(seconds=6))
    outcomes += [a[3] for a in run(app)]
    assert len(outcomes) == 2 and all("ConnectionError" in o for o in outcomes)
    receiver.start()                                  # back, on the same port
    clock.set(clock.now() + timedelta(minutes=6))
    assert [a[4] for a in run(app)] == ["delivered"]
    assert len(receiver.events()) == 1
