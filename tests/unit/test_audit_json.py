"""The audit table's JSON of an AuditEvent (service.audit.events.event_json): the same JSON as
the json module's compact form, whatever the strings hold."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from service.audit.events import Interaction, audit_event, event_json
from service.security import Principal

RECORDED = datetime(2026, 12, 1, 1, 30, tzinfo=timezone.utc)


def _event(subject: str, query: str | None = None) -> dict[str, object]:
    who = Principal(subject=subject, scope_text="system/*.rs", fhir_user="Practitioner/p1")
    what = Interaction(subtype="search-type" if query else "read", status=200, principal=who, address="127.0.0.1",
                       entity=None if query else "Observation/o1/_history/2", query=query, patient="p1",
                       request_id="r1", source="http://127.0.0.1:8000/fhir")
    return audit_event(what, "0193a7c0-0000-7000-8000-000000000001", RECORDED)


@pytest.mark.parametrize("subject", ["dr-ada", "Zoë Ünal", "\u202egnp.exe", "患者", "tab\there"])
def test_the_text_reads_back_as_the_event(subject: str) -> None:
    event = _event(subject, query="code=http://loinc.org|8867-4&patient=p1")
    text = event_json(event)
    assert json.loads(text) == event
    assert text == json.dumps(event, separators=(",", ":"), ensure_ascii=False)   # compact, keys in order


def test_a_lone_surrogate_is_escaped_not_refused() -> None:
    """A string no UTF-8 can hold (a token's sub of "\\ud800", which json.loads accepts) is
    written as the \\uXXXX escape the json module writes; the text is then plain UTF-8."""
    event = _event("x\ud800y")
    text = event_json(event)
    assert "\\ud800" in text
    text.encode("utf-8")   # storable in PostgreSQL's text
    assert json.loads(text) == event


def test_the_answer_describing_a_request_is_read_whatever_json_it_holds() -> None:
    """describe() reads the answer (a resource's id and patient, an OperationOutcome's code): an
    escaped lone surrogate, which orjson refuses, is still read; anything else than FHIR JSON is not."""
    from flask import Response

    from service.api.audit import _answer_json
    outcome = '{"resourceType":"OperationOutcome","issue":[{"code":"invalid","diagnostics":"x\\ud800"}]}'
    parsed = _answer_json(Response(outcome, status=400, mimetype="application/fhir+json"))
    assert parsed["issue"][0]["code"] == "invalid"
    assert _answer_json(Response('{"id":"a"}', mimetype="application/fhir+json")) == {"id": "a"}
    assert _answer_json(Response("not json", mimetype="application/fhir+json")) is None
    assert _answer_json(Response('{"id":"a"}', mimetype="text/html")) is None
