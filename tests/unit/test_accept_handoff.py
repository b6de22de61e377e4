"""A busy worker leaves a new connection to an idle one (service.gunicorn_worker, issue 11).

The service's gunicorn worker class under a real gunicorn, 2 workers, on the tiny WSGI app
below: one request keeps a worker busy (it sleeps, so the busy worker's own event loop is free
to accept, as in gunicorn's plain gthread worker), then a second client connects. The second
request must be answered by the other worker, the idle one. With gunicorn's plain gthread
worker both workers are woken by the connection and either may accept it (about half the time
the busy one: the idle worker took 9 and 11 of 20 in two runs here).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import requests

from bench.scratch import Gunicorn

TRIALS = 20


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """WSGI: answers its worker's pid; /busy sleeps 0.4 s first."""
    if environ["PATH_INFO"] == "/busy":
        time.sleep(0.4)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [str(os.getpid()).encode()]


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    served = Gunicorn.app("tests.unit.test_accept_handoff:app", workers=2)
    try:
        yield served
    finally:
        served.stop()


def test_a_new_connection_goes_to_the_idle_worker(server: Gunicorn) -> None:
    idle_took_it = 0
    for _ in range(TRIALS):
        busy: list[str] = []
        holder = threading.Thread(target=lambda: busy.append(
            requests.get(f"{server.base}/busy", headers={"Connection": "close"}, timeout=30).text))
        holder.start()
        time.sleep(0.1)   # the busy request is in its worker's thread pool
        other = requests.get(f"{server.base}/pid", headers={"Connection": "close"}, timeout=30).text
        holder.join()
        idle_took_it += other != busy[0]
    # a rare miss is allowed when the machine is loaded (the idle worker not scheduled within
    # ACCEPT_HANDOFF_SECONDS); the plain gthread worker misses about half the time
    assert idle_took_it >= TRIALS - 3, f"the idle worker took {idle_took_it} of {TRIALS} new connections"
