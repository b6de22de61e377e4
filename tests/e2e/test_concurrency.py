"""Two or more clients racing on the same version against a real multi-worker server."""
from __future__ import annotations

import threading

import pytest
import requests

pytestmark = pytest.mark.slow
HEADERS = {"Content-Type": "application/fhir+json"}


def test_same_if_match_exactly_one_update_wins(live_server) -> None:  # type: ignore[no-untyped-def]
    url = f"{live_server.base}/Patient/race"
    assert requests.put(url, json={"resourceType": "Patient", "id": "race"}, headers=HEADERS, timeout=10).status_code == 201
    for round_no in range(1, 6):  # several rounds, each racing 8 writers on the current version
        barrier = threading.Barrier(8)
        statuses: list[int] = []

        def writer(n: int) -> None:
            session = requests.Session()
            body = {"resourceType": "Patient", "id": "race", "name": [{"family": f"writer-{n}"}]}
            barrier.wait()
            response = session.put(url, json=body, headers={**HEADERS, "If-Match": f'W/"{round_no}"'}, timeout=30)
            statuses.append(response.status_code)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [412] * 7, statuses
    history = requests.get(f"{url}/_history?_count=100", timeout=10).json()
    versions = [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]]
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]  # no lost update, no duplicate version
    assert requests.get(url, timeout=10).headers["ETag"] == 'W/"6"'


def test_concurrent_creates_under_load_all_land(live_server) -> None:  # type: ignore[no-untyped-def]
    created: list[str] = []

    def creator() -> None:
        session = requests.Session()
        for _ in range(10):
            response = session.post(f"{live_server.base}/Observation", headers=HEADERS, timeout=30, json={
                "resourceType": "Observation", "status": "final", "code": {"text": "pain"}})
            assert response.status_code == 201
            created.append(response.json()["id"])

    threads = [threading.Thread(target=creator) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == len(set(created)) == 60
    assert requests.get(f"{live_server.base}/Observation/_history", timeout=10).json()["total"] == 60


def test_racing_writers_for_one_patient_raise_one_flag(live_server) -> None:  # type: ignore[no-untyped-def]
    """Eight clients record the same migration at once (each its own Condition); the
    service's workers evaluate the patient concurrently, yet store exactly one Flag."""
    from tests.integration.test_toh_course import HIP, KNEE, LEFT, RIGHT, toh_condition

    base = live_server.base
    requests.put(f"{base}/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=HEADERS, timeout=10)
    hip = toh_condition("hip", HIP, LEFT, "Left hip", "2026-01-06")
    assert requests.put(f"{base}/Condition/hip", json=hip, headers=HEADERS, timeout=10).status_code == 201
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def writer(n: int) -> None:
        knee = toh_condition(f"knee-{n}", KNEE, RIGHT, "Right knee", "2026-06-06")
        barrier.wait()
        statuses.append(requests.put(f"{base}/Condition/knee-{n}", json=knee, headers=HEADERS,
                                     timeout=60).status_code)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 8
    flags = requests.get(f"{base}/Flag?patient=Patient/p1&_count=100", timeout=10).json()
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in flags.get("entry", [])
             if e["search"]["mode"] == "match"]
    assert codes == ["migration"]


def test_transactions_touching_the_same_patients_in_opposite_order_both_land(live_server) -> None:  # type: ignore[no-untyped-def]
    """Each transaction locks its patients for re-assessment; in sorted order, so two that
    write A then B and B then A cannot deadlock."""
    from tests.integration.test_toh_course import HIP, LEFT, toh_condition

    base = live_server.base
    for pid in ("a", "b"):
        requests.put(f"{base}/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=HEADERS, timeout=10)

    def bundle(order: list[str], n: int) -> dict:  # type: ignore[type-arg]
        entries = []
        for pid in order:
            condition = toh_condition(f"c-{pid}-{n}", HIP, LEFT, "Left hip", "2026-01-06")
            condition["subject"] = {"reference": f"Patient/{pid}"}
            entries.append({"resource": condition, "request": {"method": "PUT", "url": f"Condition/c-{pid}-{n}"}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    statuses: list[int] = []
    for n in range(6):
        barrier = threading.Barrier(2)

        def post(order: list[str], k: int) -> None:
            barrier.wait()
            statuses.append(requests.post(base, json=bundle(order, k), headers=HEADERS, timeout=60).status_code)

        threads = [threading.Thread(target=post, args=(["a", "b"], 2 * n)),
                   threading.Thread(target=post, args=(["b", "a"], 2 * n + 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 12
