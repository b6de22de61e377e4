"""The delivery channels without a database: Standard Webhooks signing (the published test
vector), the SSRF rules (a fake resolver), the rest-hook sender against `responses`, the
email sender against a recorded SMTP conversation, and the pure notification decisions."""
from __future__ import annotations

import random
import socket
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests
import responses

from service.notify import EmailMessageParts, EndpointPolicy, EndpointRefused, RestHookSender, SmtpSender, SmtpSettings
from service.notify.resthook import retry_after_seconds
from service.notify.signing import sign, verify
from service.workflows.notifications import (RETRY_DELAYS, Event, email_parts, next_attempt, notification_bundle,
                                             summary)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def test_signature_matches_the_standard_webhooks_vector() -> None:
    body = b'{"test": 2432232314}'
    signature = sign(VECTOR_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": f"v1,bm9wZQ== {signature}"}
    assert verify(VECTOR_SECRET, headers, body, now=1614265330)
    assert not verify(VECTOR_SECRET, headers, body + b" ", now=1614265330)
    assert not verify(VECTOR_SECRET, headers, body, now=1614265330 + 301)


def policy(addresses: dict[str, list[str]], **kwargs: object) -> EndpointPolicy:
    def resolver(host: str, _port: int) -> list[str]:
        if host not in addresses:
            raise socket.gaierror("unknown")
        return addresses[host]
    return EndpointPolicy.from_settings(resolver=resolver, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("url, why", [
    ("http://hooks.example.org/x", "https"), ("https://u:p@hooks.example.org/x", "credentials"),
    ("https://private.example.org/x", "10.1.2.3"), ("https://mixed.example.org/x", "192.168.0.9"),
    ("https://169.254.169.254/latest/meta-data", "169.254.169.254"), ("https://[::ffff:127.0.0.1]/", "127.0.0.1"),
    ("https://[fd00:ec2::254]/", "fd00:ec2::254"), ("https://100.64.0.1/", "100.64.0.1"), ("gopher://x/", "https"),
])
def test_ssrf_refusals(url: str, why: str) -> None:
    rules = policy({"hooks.example.org": ["93.184.216.34"], "private.example.org": ["10.1.2.3"],
                    "mixed.example.org": ["93.184.216.34", "192.168.0.9"]})
    with pytest.raises(EndpointRefused, match=why.replace(".", r"\.").replace("[", r"\[")):
        rules.resolve(url)


def test_ssrf_allowlist_and_http_switch() -> None:
    rules = policy({"hooks.clinic.local": ["10.2.3.4"], "db.clinic.local": ["10.9.9.9"]},
                   allowlist="hooks.clinic.local, 127.0.0.0/8", allow_http=True)
    assert rules.resolve("http://hooks.clinic.local:8443/x").address == "10.2.3.4"
    assert rules.resolve("http://127.0.0.1:9/x").address == "127.0.0.1"
    with pytest.raises(EndpointRefused):
        rules.resolve("https://db.clinic.local/x")
    rules.check_url("https://not-resolvable.example.org/x")    # checked again at send time
    with pytest.raises(EndpointRefused, match="does not resolve"):
        rules.resolve("https://not-resolvable.example.org/x")


PUBLIC = policy({"hooks.example.org": ["93.184.216.34"]})


@responses.activate
def test_rest_hook_posts_signed_json_and_reads_outcomes() -> None:
    url = "https://hooks.example.org/x"
    responses.add(responses.POST, url, status=204)
    outcome = RestHookSender(PUBLIC).send(url, b"{}", msg_id="msg_1", secret=VECTOR_SECRET,
                                          headers=["Authorization: Bearer abc"], timestamp=1614265330)
    assert outcome.delivered and outcome.status == 204
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer abc"
    assert sent.headers["Content-Type"] == "application/fhir+json"
    assert sent.headers["Host"] == "hooks.example.org"
    assert verify(VECTOR_SECRET, dict(sent.headers), b"{}")


@pytest.mark.parametrize("status, headers, expect", [
    (302, {"Location": "https://elsewhere.example.org/"}, {"delivered": False, "status": 302}),
    (410, {}, {"gone": True}),
    (429, {"Retry-After": "120"}, {"retry_after": 120.0}),
    (503, {"Retry-After": "soon"}, {"retry_after": None}),
    (500, {}, {"delivered": False, "gone": False}),
])
@responses.activate
def test_rest_hook_failures(status: int, headers: dict[str, str], expect: dict[str, object]) -> None:
    url = "https://hooks.example.org/x"
    responses.add(responses.POST, url, status=status, headers=headers)
    outcome = RestHookSender(PUBLIC).send(url, b"{}", msg_id="m", secret=None)
    assert not outcome.delivered
    for name, value in expect.items():
        assert getattr(outcome, name) == value
    assert len(responses.calls) == 1          # a redirect is not followed


@responses.activate
def test_rest_hook_timeouts_and_refused_endpoints_are_outcomes() -> None:
    url = "https://hooks.example.org/x"
    responses.add(responses.POST, url, body=requests.ConnectTimeout("slow"))
    assert "timed out" in (RestHookSender(PUBLIC).send(url, b"{}", msg_id="m", secret=None).error or "")
    refused = RestHookSender(PUBLIC).send("https://10.0.0.1/x", b"{}", msg_id="m", secret=None)
    assert refused.permanent and not responses.calls[1:]


def test_retry_after_as_a_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0


def test_schedule_waits_and_ends() -> None:
    rng = random.Random(7)
    waits = [(next_attempt(n, NOW, rng=rng) - NOW).total_seconds() for n in range(1, 10)]  # type: ignore[operator]
    for wait, nominal in zip(waits, RETRY_DELAYS[1:]):
        assert nominal.total_seconds() * 0.9 <= wait <= nominal.total_seconds() * 1.1
    assert [d.total_seconds() for d in RETRY_DELAYS] == [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert next_attempt(10, NOW) is None
    assert next_attempt(1, NOW, retry_after=600) == NOW + timedelta(seconds=600)


def test_notification_bundle_follows_the_backport_shape() -> None:
    task = {"resourceType": "Task", "id": "t1", "status": "ready", "for": {"reference": "Patient/p1"}}
    event = Event("Task", "t1", 2, task, created=False)
    for content, entries in (("id-only", 1), ("full-resource", 2), ("empty", 1)):
        bundle = notification_bundle(base="https://toh.example/fhir", subscription_id="s1", status="active",
                                     kind="event-notification", events_since_start=3, timestamp=NOW, event=event,
                                     content=content, event_number=3)
        assert bundle["type"] == "history" and len(bundle["entry"]) == entries
        status = bundle["entry"][0]["resource"]
        assert status["resourceType"] == "Parameters"
        names = [p["name"] for p in status["parameter"]]
        assert names == ["subscription", "status", "type", "events-since-subscription-start", "notification-event"]
        parts = {p["name"] for p in status["parameter"][-1]["part"]}
        assert ("focus" in parts) == (content != "empty")
    assert bundle["entry"][0]["request"]["url"] == "https://toh.example/fhir/Subscription/s1/$status"


def test_email_says_what_when_and_links_without_the_name() -> None:
    flag = {"resourceType": "Flag", "id": "f1", "status": "active", "subject": {"reference": "Patient/p9"},
            "code": {"text": "TOH migrated to the right hip"}, "period": {"start": "2026-03-01"}}
    subject, text, html = email_parts(summary(flag), link="https://toh.example/fhir/Patient/p9")
    assert subject == "Flag raised: TOH migrated to the right hip - patient p9"
    assert "When: 2026-03-01" in text and "https://toh.example/fhir/Patient/p9" in text
    assert 'href="https://toh.example/fhir/Patient/p9"' in html
    named, _, _ = email_parts(summary(flag), link=None, patient_name="Anna Smith")
    assert "Anna Smith" in named


class RecordedSmtpServer:
    """Plays back a recorded SMTP server conversation on loopback and keeps what the client said."""

    REPLIES = {"EHLO": "250-toh.test\r\n250 8BITMIME\r\n", "MAIL": "250 OK\r\n", "RCPT": "250 OK\r\n",
               "DATA": "354 End data with <CR><LF>.<CR><LF>\r\n", "QUIT": "221 Bye\r\n"}

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.client_lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"220 toh.test ESMTP\r\n")
            in_data = False
            for raw in reader:
                line = raw.decode().rstrip("\r\n")
                self.client_lines.append(line)
                if in_data:
                    if line == ".":
                        in_data = False
                        conn.sendall(b"250 Queued\r\n")
                    continue
                verb = line.split(" ")[0].upper()
                conn.sendall(self.REPLIES.get(verb, "502 No\r\n").encode())
                in_data = verb == "DATA"
                if verb == "QUIT":
                    return


def test_email_follows_the_recorded_smtp_conversation() -> None:
    server = RecordedSmtpServer()
    sender = SmtpSender(SmtpSettings("127.0.0.1", server.port, "toh@clinic.example"))
    outcome = sender.send("dr.x@clinic.example", EmailMessageParts("Follow-up due", "plain text", "<p>html</p>"),
                          msg_id="msg_42")
    server.thread.join(5)
    assert outcome.delivered
    said = server.client_lines
    assert said[0].lower().startswith("ehlo ")
    assert said[1].lower() == "mail from:<toh@clinic.example>"
    assert said[2].lower() == "rcpt to:<dr.x@clinic.example>"
    assert said[3].lower() == "data"
    data = "\n".join(said[4:said.index(".")])
    assert "Subject: Follow-up due" in data and "Message-ID: <msg_42@clinic.example>" in data
    assert "multipart/alternative" in data and "text/plain" in data and "text/html" in data
    assert said[-1].lower() == "quit"
