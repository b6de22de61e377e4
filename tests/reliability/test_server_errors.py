"""What gunicorn answers itself, before the application sees a request (a malformed request
line or header, a request line over gunicorn's limit, chunked bodies over the payload limit):
OperationOutcomes over a real `toh serve`, like every other error (issue 10, faults 9 and 10)."""
from __future__ import annotations

import json
import socket

import pytest

from tests.auth import default_token
from tests.reliability.hostile import row_counts


def _raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a new connection; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _chunked(parts: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# raw requests name their token themselves (a request without one is refused before its body is read)
CLOSE = b"Host: t\r\nConnection: close\r\nAuthorization: Bearer " + default_token().encode() + b"\r\n"
MALFORMED = [
    ("duplicate Content-Type", b"POST /fhir/Patient HTTP/1.1\r\n" + CLOSE + b"Content-Type: application/fhir+json\r\n"
     b"Content-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}", 400),
    ("NUL in a header", b"GET /fhir/metadata HTTP/1.1\r\n" + CLOSE + b"X-Note: a\x00b\r\n\r\n", 400),
    ("DELETE *", b"DELETE * HTTP/1.1\r\n" + CLOSE + b"\r\n", 400),
    ("a lowercase method", b"get /fhir/metadata HTTP/1.1\r\n" + CLOSE + b"\r\n", 400),
    ("a request line over 8 KB", b"GET /fhir/Patient?name=" + b"x" * 9000 + b" HTTP/1.1\r\n" + CLOSE + b"\r\n", 414),
    ("a chunked body over the limit", b"POST /fhir/Patient HTTP/1.1\r\n" + CLOSE
     + b"Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
     + _chunked([b'{"resourceType":"Patient"}'] + [b" " * 65536] * 170 + [b"garbage"]), 413),
]


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_servers_own_errors_are_operation_outcomes(live_server, database_url) -> None:  # type: ignore[no-untyped-def]
    before = row_counts(database_url)
    for label, request, status in MALFORMED:
        got, headers, body = _raw(live_server.port, request)
        assert got == status, (label, got, body[:300])
        assert headers.get("content-type", "").startswith("application/fhir+json"), (label, headers, body[:300])
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error", label
    # a search URL of 6 KB, over gunicorn's default limit (4 KB), is answered
    got, _, body = _raw(live_server.port, b"GET /fhir/Patient?name=" + b"x" * 6000 + b" HTTP/1.1\r\n" + CLOSE + b"\r\n")
    assert got == 200, body[:300]
    assert row_counts(database_url) == before
