"""The database goes away: a PostgreSQL cluster of the test's own (initdb in a temporary folder,
pg_ctl on a free port; the machine's shared server is not touched) is stopped and started
again while clients write and read through `toh serve`. Requests in flight get a 503
OperationOutcome (or succeed), never another error and never a dropped connection; the service
recovers by itself once the database is back; and every write it acknowledged is there.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from bench.scratch import PostgresCluster
from service.store import Database
from tests.reliability.live import FHIR, LONG, assert_store_consistent, serve

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
CLIENTS = 4
OUTAGES = 3 if LONG else 1


@pytest.fixture
def cluster() -> PostgresCluster:   # type: ignore[misc]
    try:
        own = PostgresCluster()
    except FileNotFoundError as exc:
        pytest.fail(f"the PostgreSQL server programs are needed for this test: {exc}")
    yield own
    own.close()


def test_postgres_restarted_under_load_gives_503_then_recovers_and_loses_nothing(cluster: PostgresCluster,
                                                                                 tmp_path: Path) -> None:
    db = Database(cluster.url)
    db.migrate()
    db.dispose()
    server = serve(cluster.url, tmp_path, workers=2)
    base = f"{server.base}/fhir"
    acknowledged: list[str] = []
    statuses: dict[int, int] = {}
    wrong: list[str] = []
    stop = threading.Event()
    last_ok = [0.0]

    def client(n: int) -> None:
        session = requests.Session()
        seq = 0
        while not stop.is_set() and not wrong:
            seq += 1
            pid = f"r{n}-{seq}"
            try:
                response = session.put(f"{base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid},
                                       headers=FHIR, timeout=120)
                read = session.get(f"{base}/Patient?_id={pid}", timeout=120)
            except requests.RequestException as exc:
                wrong.append(f"the service dropped the request: {exc}")
                return
            for r in (response, read):
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    body = r.json()
                    if r.headers["Content-Type"].split(";")[0] != "application/fhir+json" or \
                            body["resourceType"] != "OperationOutcome":
                        wrong.append(f"503 that is no OperationOutcome: {r.text[:300]}")
                elif r.status_code not in (200, 201):
                    wrong.append(f"{r.request.method} {r.status_code} {r.text[:300]}")
            if response.status_code in (200, 201):
                acknowledged.append(pid)
            if response.status_code in (200, 201) and read.status_code == 200:
                last_ok[0] = time.monotonic()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        for _ in range(OUTAGES):
            time.sleep(3)
            cluster.stop("fast")          # open transactions rolled back, connections cut
            time.sleep(2)                 # requests meanwhile find no database
            cluster.start()
            back = time.monotonic()
            deadline = back + 60
            while last_ok[0] < back and time.monotonic() < deadline and not wrong:
                time.sleep(0.2)
            assert not wrong, wrong[:3]
            assert last_ok[0] >= back, "the service did not recover within 60 s of the database's return"
            print(f"recovered {last_ok[0] - back:.1f} s after the database came back")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
        server.stop()
    assert not wrong, wrong[:3]
    assert statuses.get(503, 0) > 0, f"no request met the outage: {statuses}"
    server = serve(cluster.url, tmp_path, workers=1)
    try:
        listed = requests.get(f"{server.base}/fhir/Patient?_count=1000&_elements=id", timeout=60).json()
        stored = {e["resource"]["id"] for e in listed.get("entry", [])}
        lost = [pid for pid in acknowledged if pid not in stored]
        assert not lost, f"acknowledged writes lost: {lost[:5]}"
    finally:
        server.stop()
    assert_store_consistent(cluster.url)
    print(f"database restart: statuses {dict(sorted(statuses.items()))}, {len(acknowledged)} writes acknowledged")
