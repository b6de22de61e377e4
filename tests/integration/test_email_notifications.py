"""Email notifications to a real SMTP server on loopback (aiosmtpd), SQLite and PostgreSQL:
the right recipient, subject and patient link, plain text and HTML, no name by default."""
from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from service.clock import FixedClock
from service.workflows.delivery import deliver


class Inbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:      # a free port (aiosmtpd checks readiness by connecting to it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def make_app(database_url: str, clock: FixedClock, port: int, **extra: Any):  # type: ignore[no-untyped-def]
    from service import create_app
    return create_app({"database_url": database_url, "base_url": "https://toh.example/fhir", "smtp_host": "127.0.0.1",
                       "smtp_port": port, "smtp_from": "toh@clinic.example", **extra}, clock=clock)


def mail_subscription(client) -> str:  # type: ignore[no-untyped-def]
    response = client.post("/fhir/Subscription", json={
        "resourceType": "Subscription", "status": "requested", "reason": "migration flags",
        "criteria": "Flag?status=active", "channel": {"type": "email", "endpoint": "mailto:dr.x@clinic.example"}})
    assert response.status_code == 201, response.get_json()
    assert "subscription-secret" not in response.get_data(as_text=True)   # no secret for email
    return str(response.get_json()["id"])


@pytest.mark.parametrize("with_name", [False, True])
def test_a_flag_reaches_the_mailbox(database_url: str, clock: FixedClock, smtp: tuple[Inbox, int],
                                    with_name: bool) -> None:
    inbox, port = smtp
    app = make_app(database_url, clock, port, email_patient_name=with_name)
    try:
        client = app.test_client()
        svc = app.extensions["toh"]
        sub_id = mail_subscription(client)
        deliver(svc.database, svc.channels, clock.now())        # activation: nothing is mailed
        assert client.get(f"/fhir/Subscription/{sub_id}").get_json()["status"] == "active"
        assert inbox.messages == []
        client.put("/fhir/Patient/p7", json={"resourceType": "Patient", "id": "p7",
                                             "name": [{"given": ["Anna"], "family": "Smith"}]})
        client.post("/fhir/Flag", json={"resourceType": "Flag", "status": "active", "subject": {"reference": "Patient/p7"},
                                         "code": {"text": "Migration to the right hip"},
                                         "period": {"start": "2026-01-04"}})
        attempts = deliver(svc.database, svc.channels, clock.now()).attempts
        assert [a[4] for a in attempts] == ["delivered"]
        [(recipients, message)] = inbox.messages
        assert recipients == ["dr.x@clinic.example"]
        assert message["Subject"].startswith("Flag raised: Migration to the right hip - ")
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "Open: https://toh.example/ui/patients/p7" in text       # the patient's staff page
        assert 'href="https://toh.example/ui/patients/p7"' in html
        assert "/fhir/Patient/p7" not in text + html
        assert "When: 2026-01-04" in text
        assert ("Anna Smith" in text) is with_name
        assert ("Smith" in message["Subject"]) is with_name
    finally:
        svc.database.dispose()


def test_the_patient_link_can_point_elsewhere(database_url: str, clock: FixedClock, smtp: tuple[Inbox, int]) -> None:
    """TOH_PATIENT_LINK overrides the staff page: here the FHIR resource, with {base} and {id}."""
    inbox, port = smtp
    app = make_app(database_url, clock, port, patient_link="{base}/Patient/{id}?from={root}")
    try:
        client = app.test_client()
        svc = app.extensions["toh"]
        mail_subscription(client)
        deliver(svc.database, svc.channels, clock.now())
        client.post("/fhir/Flag", json={"resourceType": "Flag", "status": "active",
                                         "subject": {"reference": "Patient/p7"}, "code": {"text": "x"}})
        assert [a[4] for a in deliver(svc.database, svc.channels, clock.now()).attempts] == ["delivered"]
        [(_, message)] = inbox.messages
        text = message.get_body(("plain",)).get_content()
        assert "Open: https://toh.example/fhir/Patient/p7?from=https://toh.example" in text.splitlines()
        assert "/ui/patients/" not in text
    finally:
        svc.database.dispose()


def test_an_unreachable_mail_server_is_retried(database_url: str, clock: FixedClock, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    app = make_app(database_url, clock, 1)      # nothing listens on port 1
    try:
        client = app.test_client()
        svc = app.extensions["toh"]
        mail_subscription(client)
        deliver(svc.database, svc.channels, clock.now())
        client.post("/fhir/Flag", json={"resourceType": "Flag", "status": "active",
                                         "subject": {"reference": "Patient/p7"}, "code": {"text": "x"}})
        [attempt] = deliver(svc.database, svc.channels, clock.now()).attempts
        assert attempt[4] == "pending" and "Error" in attempt[3]
    finally:
        svc.database.dispose()
