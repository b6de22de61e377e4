"""`toh serve --access-log` is off by default (README, "Running it"): gunicorn's logger, given
the service's logconfig_dict, would otherwise write an access line for every request anyway.
The logger `toh serve` hands gunicorn writes one only when the access log is asked for."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from service.config import Settings
from service.gunicorn_config import AccessLogOnRequest, options


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """gunicorn's logger applies a logconfig_dict to the process's logging: undo it after."""
    names = ("", "gunicorn.error", "gunicorn.access")
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).level, logging.getLogger(n).propagate,
                 logging.getLogger(n).disabled) for n in names}
    yield
    for n, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(n)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def _logger(access_log: bool) -> AccessLogOnRequest:
    cfg = Config()
    for name, value in options(Settings(), access_log=access_log).items():
        if name in ("logconfig_dict", "accesslog", "access_log_format", "logger_class", "loglevel"):
            cfg.set(name, value)
    logger_class = cfg.logger_class
    assert logger_class is AccessLogOnRequest     # what `toh serve` hands gunicorn
    return logger_class(cfg)


def _one_request(logger: AccessLogOnRequest) -> list[logging.LogRecord]:
    records = _Records()
    logging.getLogger("gunicorn.access").addHandler(records)
    response = SimpleNamespace(status="200 OK", status_code=200, response_length=12, sent=12,
                               headers=[("Content-Type", "application/fhir+json"), ("X-Request-ID", "req-1")])
    request = SimpleNamespace(headers=[("HOST", "127.0.0.1")], method="GET", path="/fhir/Patient/p1")
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/fhir/Patient/p1", "PATH_INFO": "/fhir/Patient/p1",
               "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    logger.access(response, request, environ, timedelta(milliseconds=3))
    return records.records


def test_without_access_log_no_access_line_is_written(restored_logging: None) -> None:
    assert _one_request(_logger(access_log=False)) == []


def test_with_access_log_each_request_has_its_line(restored_logging: None) -> None:
    records = _one_request(_logger(access_log=True))
    assert len(records) == 1
    line = records[0].getMessage()
    assert '"GET /fhir/Patient/p1" 200' in line and "request=req-1" in line
