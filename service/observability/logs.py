"""Structured logs: one JSON object per line on stderr (python-json-logger), each carrying the
request id of the request it was written in.

Shape of a line (TOH_LOG_FORMAT=json, the default):
    {"time": "2026-11-30T07:01:02.345Z", "level": "INFO", "logger": "toh.requests",
     "message": "...", "request_id": "4be1...", "process": 1234, ...extra fields}
TOH_LOG_FORMAT=text gives the classic one-line text with the request id in it.

The request id lives in a context variable (`REQUEST_ID`), set by the HTTP edge for the request
and reset after it; each gunicorn thread has its own context. What is logged is the caller's
business: the service logs ids, types, statuses and timings, never a resource's content or a
query's values (tests/e2e/test_no_phi_in_logs.py).
"""
from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: ContextVar[str | None] = ContextVar("toh_request_id", default=None)
FORMATS = ("json", "text")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_HANDLER_NAME = "toh"   # also the handler's name in gunicorn_logconfig: one handler, not two


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None outside a request) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class UtcJsonFormatter(JsonFormatter):  # type: ignore[misc]
    """JSON lines with an ISO-8601 UTC time in milliseconds and short field names."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def make_formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter of TOH_LOG_FORMAT (`json` or `text`); raises ValueError for another."""
    if fmt == "json":
        return UtcJsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(process)d",
                                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    if fmt == "text":
        return logging.Formatter(_TEXT)
    raise ValueError(f"TOH_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """Send the root logger (and gunicorn's, which propagate to it) to stderr in `fmt`, at `level`.
    Idempotent: a second call replaces the handler it installed. Raises ValueError for a bad
    format or level."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"TOH_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def gunicorn_logconfig(fmt: str = "json", level: str = "INFO") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its error and access logs through the same formatter and
    filter, on stderr, so the master's lines are JSON too."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "toh",
               "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"toh": {"()": make_formatter, "fmt": fmt}},
        "handlers": {"toh": handler},
        "root": {"level": level.upper(), "handlers": ["toh"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["toh"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["toh"], "propagate": False},
        },
    }
