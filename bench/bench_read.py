"""How long a FHIR read takes, against re-serialising the same resource through the R4 model.

Reads serve the stored JSON text as stored. This prints p50/p95 of:
  - repo.read (the store alone) and GET [base]/Observation/[id] (Flask, in-process, with its
    bearer token checked and its AuditEvent made durable before the response),
  - the audit append alone (one AuditEvent row in its own committed transaction): what
    auditing costs each read,
  - baseline: parsing + re-serialising that resource with fhir.resources (what a read would
    cost on top if it went through the model),
and their ratios, all measured in the same run.

    python bench/bench_read.py [--postgres | --database-url URL] [--n 2000]

--postgres makes a scratch database on 127.0.0.1:5432 and drops it afterwards.
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import scratch_postgres  # noqa: E402

from service import create_app  # noqa: E402
from service.security import issue_token  # noqa: E402

OBSERVATION = {
    "resourceType": "Observation", "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "survey"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}], "text": "Pain severity 0-10"},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-03-01T10:00:00Z",
    "valueQuantity": {"value": 6, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
    "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "24136001"}], "text": "Left hip"},
}


def timings(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--postgres", action="store_true", help="use a scratch PostgreSQL database")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if args.postgres:
        with scratch_postgres() as url:
            run(url, args.n)
    else:
        run(args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.n)


def run(url: str, n: int) -> None:
    """Store one Observation, then time the three ways of reading it."""
    app = create_app({"database_url": url, "jwt_secret": secrets.token_urlsafe(48)})
    client = app.test_client()
    token = issue_token(app.extensions["toh"].verifier.settings, subject="bench", scopes=["system/*.cruds"],
                        ttl_seconds=3600)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    created = client.post("/fhir/Observation", json=OBSERVATION, headers={"Content-Type": "application/fhir+json"})
    obs_id = created.get_json()["id"]
    database = app.extensions["toh"].database
    model = get_fhir_model_class("Observation")
    stored_text = created.get_data(as_text=True)

    def store_read() -> object:
        with database.unit_of_work(write=False) as uow:
            return uow.repo.read("Observation", obs_id).content

    def http_read() -> object:
        response = client.get(f"/fhir/Observation/{obs_id}")
        assert response.status_code == 200
        return response.data

    audit_row = {"recorded": app.extensions["toh"].clock.now(), "action": "R", "subtype": "read", "outcome": "0",
                 "agent": "bench", "agent_ref": None, "entity": f"Observation/{obs_id}", "patient": "p1",
                 "content": json.dumps({"resourceType": "AuditEvent"})}

    def audit_append() -> object:
        return database.append_audit([{**audit_row, "id": uuid.uuid4().hex}])

    def reserialise() -> object:
        return model.model_validate(json.loads(stored_text)).model_dump_json()

    results = {"baseline: model parse + re-serialise": timings(reserialise, n),
               "store read (repo.read)": timings(store_read, n),
               "audit append (own transaction)": timings(audit_append, n),
               "GET Observation/[id] (Flask in-process)": timings(http_read, n)}
    base = statistics.median(results["baseline: model parse + re-serialise"])
    print(f"database: {database.dialect}, n={n}")
    for name, values in results.items():
        p50 = statistics.median(values)
        print(f"{name:42s} p50 {p50:8.1f} us  p95 {pct(values, 95):8.1f} us  p50/baseline {p50 / base:5.2f}")
    database.dispose()


if __name__ == "__main__":
    main()
