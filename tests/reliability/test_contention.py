"""Concurrency held over time: 16 clients update the same few resources with If-Match against a
real multi-worker `toh serve` (10 s in CI, a minute with TOH_RELIABILITY_LONG=1). Every write
is applied or refused with 412, the versions are contiguous, each applied write is the version
its response named, and nothing answers 5xx. (tests/e2e/test_concurrency.py races writers on
one version in lock-step; this holds the contention for a while: on PostgreSQL in CI, on both
databases in the long run.)
"""
from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.reliability.live import FHIR, LONG, assert_store_consistent, serve

pytestmark = pytest.mark.slow
CLIENTS = 16
RESOURCES = 3
SECONDS = 60 if LONG else 10


# Short (CI): PostgreSQL, where writers of several workers truly interleave; long: both databases.
@pytest.mark.parametrize("database_url", ["sqlite", "postgres"] if LONG else ["postgres"], indirect=True)
def test_sixteen_clients_with_if_match_apply_or_412_and_versions_stay_contiguous(database_url: str,
                                                                                   tmp_path: Path) -> None:
    server = serve(database_url, tmp_path, workers=2)
    base = f"{server.base}/fhir"
    try:
        for r in range(RESOURCES):
            put = requests.put(f"{base}/Patient/c{r}", json={"resourceType": "Patient", "id": f"c{r}"},
                               headers=FHIR, timeout=30)
            assert put.status_code == 201, put.text
        applied: list[tuple[int, int, str]] = []      # (resource, version, tag)
        refused: list[int] = []
        wrong: list[str] = []
        end = time.monotonic() + SECONDS

        def client(n: int) -> None:
            session = requests.Session()
            rng = random.Random(n)
            seq = 0
            while time.monotonic() < end and not wrong:
                r = rng.randrange(RESOURCES)
                url = f"{base}/Patient/c{r}"
                current = session.get(url, timeout=60)
                if current.status_code != 200:
                    wrong.append(f"GET {current.status_code} {current.text[:300]}")
                    return
                seq += 1
                tag = f"{n}-{seq}"
                body = {"resourceType": "Patient", "id": f"c{r}", "name": [{"family": tag}]}
                response = session.put(url, json=body, headers={**FHIR, "If-Match": current.headers["ETag"]},
                                       timeout=60)
                if response.status_code == 200:
                    applied.append((r, int(response.headers["ETag"].split('"')[1]), tag))
                elif response.status_code == 412:
                    assert response.json()["resourceType"] == "OperationOutcome"
                    refused.append(r)
                else:
                    wrong.append(f"PUT {response.status_code} {response.text[:300]}")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not wrong, wrong[:3]
        assert applied and refused, (len(applied), len(refused))   # there was contention
        for r in range(RESOURCES):
            history = requests.get(f"{base}/Patient/c{r}/_history?_count=1000", timeout=60).json()
            by_version = {int(e["resource"]["meta"]["versionId"]): e["resource"] for e in history["entry"]}
            mine = {v: tag for rr, v, tag in applied if rr == r}
            assert sorted(by_version) == list(range(1, len(mine) + 2)), "versions are not contiguous"
            for version, tag in mine.items():
                assert by_version[version]["name"][0]["family"] == tag, (r, version)
        assert_store_consistent(database_url)
        print(f"contention: {len(applied)} applied, {len(refused)} refused with 412 in {SECONDS} s")
    finally:
        server.stop()
