"""Benchmark: what Subscriptions cost a write, and how fast the outbox drains.

    python bench/bench_outbox.py [--writes 300] [--subscriptions 5] [--postgres URL]

In-process (Flask test client, SQLite in a temporary folder unless --postgres): times N Task
creates with no active Subscription (the baseline, same run) and again with S active
Subscriptions, S-1 of which match (`Task?status=ready`) and one does not; then times delivery
passes (`deliver`) of the S-1 x N notifications to a real HTTP receiver on loopback. Prints
per-write medians and notifications per second. Machine load matters: print `uptime` with it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

from service import create_app  # noqa: E402
from service.workflows.delivery import deliver  # noqa: E402
from tests import auth  # noqa: E402
from tests.receivers import Receiver  # noqa: E402


def _writes(client: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.post("/fhir/Task", json={"resourceType": "Task", "status": "ready", "intent": "order",
                                                   "for": {"reference": "Patient/p1"}})
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 201
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="a migrated, empty PostgreSQL database URL")
    args = parser.parse_args()
    auth.install(pytest.MonkeyPatch())
    with tempfile.TemporaryDirectory() as folder:
        url = args.postgres or f"sqlite:///{folder}/bench.db"
        app = create_app({"database_url": url, "base_url": "http://toh.bench/fhir", "webhook_allowlist": "127.0.0.1",
                          "webhook_allow_http": True})
        svc = app.extensions["toh"]
        client = app.test_client()
        receiver = Receiver()
        baseline = _writes(client, args.writes)
        for i in range(args.subscriptions):
            criteria = "Task?status=ready" if i < args.subscriptions - 1 else "Task?status=completed"
            client.post("/fhir/Subscription", json={
                "resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": criteria,
                "channel": {"type": "rest-hook", "endpoint": receiver.url, "payload": "application/fhir+json"}})
        deliver(svc.database, svc.channels, svc.clock.now())     # handshakes
        with_subs = _writes(client, args.writes)
        expected = (args.subscriptions - 1) * args.writes
        start = time.perf_counter()
        while len(receiver.events()) < expected:
            deliver(svc.database, svc.channels, svc.clock.now(), limit=50)
        drained = time.perf_counter() - start
        receiver.stop()
        svc.database.dispose()
    backend = "postgresql" if args.postgres else "sqlite"
    print(f"{backend}: Task create, median of {args.writes}: {statistics.median(baseline):.2f} ms without "
          f"Subscriptions, {statistics.median(with_subs):.2f} ms with {args.subscriptions} active "
          f"({args.subscriptions - 1} matching)")
    print(f"{backend}: delivered {expected} notifications in {drained:.1f} s "
          f"({expected / drained:.0f}/s, passes of 50, 8 senders)")


if __name__ == "__main__":
    main()
