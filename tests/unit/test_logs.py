"""Structured logs (service/observability/logs.py): one JSON object per line with the time in
UTC, level, logger, message, the request id of the request being served, and extra fields."""
from __future__ import annotations

import json
import logging

import pytest

from service.observability import logs


def _format(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    logs.RequestIdFilter().filter(record)
    return formatter.format(record)


def _record(msg: str = "request done", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("toh.requests", logging.INFO, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_carries_the_request_id_and_extra_fields() -> None:
    token = logs.REQUEST_ID.set("req-42")
    try:
        line = _format(logs.make_formatter("json"), _record(status=201, type="Patient"))
    finally:
        logs.REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert entry["request_id"] == "req-42" and entry["message"] == "request done"
    assert entry["level"] == "INFO" and entry["logger"] == "toh.requests"
    assert entry["status"] == 201 and entry["type"] == "Patient"
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_outside_a_request_the_id_is_null() -> None:
    assert json.loads(_format(logs.make_formatter("json"), _record()))["request_id"] is None


def test_the_text_format_shows_the_request_id() -> None:
    token = logs.REQUEST_ID.set("req-7")
    try:
        assert "[req-7] request done" in _format(logs.make_formatter("text"), _record())
    finally:
        logs.REQUEST_ID.reset(token)


def test_configure_installs_one_handler_and_refuses_bad_values() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.configure("json", "warning")
        logs.configure("json", "INFO")
        assert [h.get_name() for h in root.handlers].count("toh") == 1
        assert root.level == logging.INFO
        with pytest.raises(ValueError, match="TOH_LOG_FORMAT"):
            logs.configure("xml", "INFO")
        with pytest.raises(ValueError, match="TOH_LOG_LEVEL"):
            logs.configure("json", "LOUD")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
