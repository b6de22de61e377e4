"""Real HTTP receivers on loopback for delivery tests: one that fails its first N requests,
one that can be taken down and brought back on the same port, one slower than a timeout."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the receiver got (and what it answered)."""

    headers: dict[str, str]     # names in lower case
    body: bytes
    answered: int
    # False when the body stopped short of its Content-Length: the sender died mid-request
    # (the reliability suite SIGKILLs it), so nothing was delivered
    complete: bool = True

    @property
    def bundle(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def kind(self) -> str:
        params = self.bundle["entry"][0]["resource"]["parameter"]
        return next(p["valueCode"] for p in params if p["name"] == "type")


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of concurrent sends (several deliverers, each
    # sending in parallel) overflowed it, a dropped SYN is retried after 1 s, and a sender with
    # a 1 s connect timeout saw a failure that was the receiver's, not the service's.
    request_queue_size = 128


@dataclass
class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 (port picked by the OS, kept across stop/start).

    fail_first: answer the first N event notifications (not handshakes) with `fail_status`;
    always_fail: answer every event notification so; delay: seconds to wait before answering;
    headers: extra response headers on failures (e.g. Retry-After)."""

    fail_first: int = 0
    fail_status: int = 503
    always_fail: bool = False
    delay: float = 0.0
    fail_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)   # monotonic times requests came in
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._events_seen = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.arrivals.append(time.monotonic())
                status, extra = receiver._answer(body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status,
                                                      complete=len(body) == length))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                try:
                    self.wfile.write(b"ok")
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop listening (connections are refused until start())."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, body: bytes) -> tuple[int, dict[str, str]]:
        try:
            params = json.loads(body)["entry"][0]["resource"]["parameter"]
            kind = next(p["valueCode"] for p in params if p["name"] == "type")
        except (ValueError, KeyError, StopIteration, IndexError):
            return 400, {}
        if kind == "handshake":
            return 200, {}
        with self._lock:
            self._events_seen += 1
            seen = self._events_seen
        if self.always_fail or seen <= self.fail_first:
            return self.fail_status, dict(self.fail_headers)
        return 200, {}

    def events(self) -> list[Received]:
        """The event notifications received whole (a request cut off by its sender's death
        delivered nothing)."""
        with self._lock:
            return [r for r in self.received if r.complete and r.kind == "event-notification"]
