"""The environment settings README promises are honoured, with their stated defaults:
TOH_BASE_URL, TOH_MAX_PAYLOAD_BYTES (10 MiB), TOH_DEFAULT_PAGE_SIZE (50), TOH_MAX_PAGE_SIZE
(1000) and TOH_MAX_BUNDLE_ENTRIES (1000). Each is checked through what a client sees.

These are settings, not storage, so they run on SQLite only; the store tests cover PostgreSQL.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from service.store import Database

FHIR = {"Content-Type": "application/fhir+json"}
MiB = 1024 * 1024
SETTINGS = ("TOH_BASE_URL", "TOH_MAX_PAYLOAD_BYTES", "TOH_DEFAULT_PAGE_SIZE", "TOH_MAX_PAGE_SIZE",
            "TOH_MAX_BUNDLE_ENTRIES")


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """make_app(**env): the app as `toh serve` builds it from the environment (SQLite)."""
    made: list[Flask] = []

    def make(database_url: str | None = None, **env: str) -> Flask:
        for name in SETTINGS:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        from service import create_app
        app = create_app({"database_url": database_url or f"sqlite:///{tmp_path / 'toh.db'}"})
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["toh"].database.dispose()


@pytest.fixture(scope="module")
def thousand_and_one(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database holding 1,001 Patients (one more than the default largest page)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('many') / 'toh.db'}"
    from service import create_app
    app = create_app({"database_url": url})          # migrates and installs the guide
    database: Database = app.extensions["toh"].database
    with database.unit_of_work() as uow:
        for n in range(1001):
            uow.repo.create({"resourceType": "Patient", "gender": "female", "id": f"p{n}"})
        uow.commit()
    database.dispose()
    return url


def page_size(client, query: str = "") -> int:  # type: ignore[no-untyped-def]
    bundle = client.get(f"/fhir/Patient?gender=female{query}").get_json()
    return len(bundle.get("entry", []))


def test_page_sizes_default_to_50_and_at_most_1000(make_app, thousand_and_one: str) -> None:  # type: ignore[no-untyped-def]
    client = make_app(thousand_and_one).test_client()
    assert page_size(client) == 50
    assert page_size(client, "&_count=5000") == 1000
    assert page_size(client, "&_count=1000") == 1000


def test_page_sizes_follow_the_environment(make_app, thousand_and_one: str) -> None:  # type: ignore[no-untyped-def]
    client = make_app(thousand_and_one, TOH_DEFAULT_PAGE_SIZE="7", TOH_MAX_PAGE_SIZE="20").test_client()
    assert page_size(client) == 7
    assert page_size(client, "&_count=15") == 15
    assert page_size(client, "&_count=21") == 20
    next_page = next(link["url"] for link in client.get("/fhir/Patient?gender=female").get_json()["link"]
                     if link["relation"] == "next")
    assert len(client.get(next_page).get_json()["entry"]) == 7


def binary_of(size: int) -> bytes:
    """A Binary resource whose JSON body is exactly size bytes (padded with trailing spaces)."""
    shell = len(json.dumps({"resourceType": "Binary", "contentType": "text/plain", "data": ""}))
    data = base64.b64encode(b"x" * ((size - shell) // 4 * 3)).decode()
    body = json.dumps({"resourceType": "Binary", "contentType": "text/plain", "data": data}).encode()
    return body + b" " * (size - len(body))


def test_payload_limit_defaults_to_10_mib(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app().test_client()
    assert client.post("/fhir/Binary", data=binary_of(10 * MiB), headers=FHIR).status_code == 201
    over = client.post("/fhir/Binary", data=binary_of(10 * MiB + 1), headers=FHIR)
    assert over.status_code == 413 and over.get_json()["resourceType"] == "OperationOutcome"


def test_payload_limit_follows_the_environment(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app(TOH_MAX_PAYLOAD_BYTES="4000").test_client()
    assert client.post("/fhir/Binary", data=binary_of(4000), headers=FHIR).status_code == 201
    over = client.post("/fhir/Binary", data=binary_of(4001), headers=FHIR)
    assert over.status_code == 413 and over.get_json()["issue"][0]["code"] == "too-costly"


def batch_of_reads(n: int) -> str:
    return json.dumps({"resourceType": "Bundle", "type": "batch",
                       "entry": [{"request": {"method": "GET", "url": f"Patient/nobody-{i}"}} for i in range(n)]})


def test_bundle_entries_default_to_1000(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app().test_client()
    accepted = client.post("/fhir", data=batch_of_reads(1000), headers=FHIR)
    assert accepted.status_code == 200 and len(accepted.get_json()["entry"]) == 1000
    refused = client.post("/fhir", data=batch_of_reads(1001), headers=FHIR)
    assert refused.status_code == 413 and refused.get_json()["resourceType"] == "OperationOutcome"


def test_bundle_entries_follow_the_environment(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app(TOH_MAX_BUNDLE_ENTRIES="3").test_client()
    assert client.post("/fhir", data=batch_of_reads(3), headers=FHIR).status_code == 200
    assert client.post("/fhir", data=batch_of_reads(4), headers=FHIR).status_code == 413


def test_base_url_defaults_to_the_request(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app().test_client()
    created = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient"}), headers=FHIR,
                          base_url="http://ehr.local:9000")
    assert created.headers["Location"].startswith("http://ehr.local:9000/fhir/Patient/")
    page = client.get("/fhir/Patient", base_url="http://ehr.local:9000").get_json()
    assert page["link"][0]["url"].startswith("http://ehr.local:9000/fhir/Patient")


def test_base_url_follows_the_environment(make_app) -> None:  # type: ignore[no-untyped-def]
    base = "https://toh.example.org/fhir"
    client = make_app(TOH_BASE_URL=base).test_client()
    created = client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "id": "p1"}), headers=FHIR)
    assert created.headers["Location"].startswith(f"{base}/Patient/")
    patient_id = created.get_json()["id"]
    page = client.get("/fhir/Patient").get_json()
    assert page["link"][0]["url"].startswith(f"{base}/Patient")
    assert page["entry"][0]["fullUrl"] == f"{base}/Patient/{patient_id}"
    # an absolute reference to this base is a reference to this server
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                   "subject": {"reference": f"{base}/Patient/{patient_id}"}}
    assert client.post("/fhir/Observation", data=json.dumps(observation), headers=FHIR).status_code == 201
    found = client.get(f"/fhir/Observation?subject=Patient/{patient_id}").get_json()
    assert found["total"] == 1
