"""Benchmark: the CDS Hooks services for a patient with two years of data (target: p95 under 50 ms).

    python bench/bench_cds.py [--runs 300] [--resources 200] [--database-url URL]

The patient is bench_clinical's two-year TOH course (Conditions at three joints, MRIs, reports,
pain scores, weight-bearing and pregnancy statuses, orders and plans). Each call goes through
the whole Flask app in-process (WSGI, no socket): the EHR's JWT (RS384, a fresh jti each time,
so the replay table is written on every call), the request checks, the rules and the cards.
Timed, in the same run:

- toh-patient-view with every prefetch key sent;
- toh-order-sign with prefetch and a draft alendronate order;
- toh-patient-view without prefetch, fhirServer = this server (read from the store, with a
  fhirAuthorization token this server accepts);
- baselines: the bare `assess()` over the same resources, and the store read of the patient's
  resources (`clinical_resources` in a read-only unit of work), which the hooks cannot beat.

Tokens are signed before the clock starts (the EHR signs, not the service).
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
import uuid
from datetime import datetime, time as day_time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_clinical import START, p, patient_resources, timed  # noqa: E402
from service import create_app  # noqa: E402
from service.clinical import assess  # noqa: E402
from service.clock import FixedClock  # noqa: E402
from service.security import issue_token  # noqa: E402
from service.workflows.clinical_watch import clinical_resources  # noqa: E402

ISSUER, ROOT = "https://ehr.bench.example", "http://toh.bench"
PATIENT = "p"


def keys(folder: Path) -> tuple[Any, str]:
    """An RSA key and the TOH_CDS_ISSUERS pair naming its JWKS file."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "use": "sig"}
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, f"{ISSUER}={path}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--database-url", help="default: a new SQLite file in a temporary folder")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-cds-"))
    key, issuers = keys(folder)
    today = START + timedelta(days=730)
    clock = FixedClock(datetime.combine(today, day_time(9), tzinfo=timezone.utc))
    app = create_app({"database_url": args.database_url or f"sqlite:///{folder / 'toh.db'}",
                      "base_url": f"{ROOT}/fhir", "cds_issuers": issuers, "scheduler": False,
                      "jwt_secret": secrets.token_urlsafe(32)}, clock=clock)
    services = app.extensions["toh"]
    fhir_token = issue_token(services.settings.token_settings(), subject="bench-ehr", scopes=["system/*.rs"],
                             ttl_seconds=3600)
    resources = [r | {"subject": {"reference": f"Patient/{PATIENT}"}} for r in patient_resources(args.resources)]
    with services.database.unit_of_work() as uow:       # the same record in the store
        uow.repo.update("Patient", PATIENT, {"resourceType": "Patient", "id": PATIENT})
        for r in resources:
            uow.repo.update(r["resourceType"], r["id"], r)
        uow.commit()

    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    keys_of = {"conditions": "Condition", "observations": "Observation", "diagnosticReports": "DiagnosticReport",
               "medicationRequests": "MedicationRequest", "carePlans": "CarePlan", "serviceRequests": "ServiceRequest"}
    prefetch = {k: {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": r} for r in by_type.get(t, [])]} for k, t in keys_of.items()}
    context = {"userId": "Practitioner/1", "patientId": PATIENT}
    draft = {"resourceType": "MedicationRequest", "id": "draft-alendronate", "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{PATIENT}"}, "medicationCodeableConcept": {"text": "Alendronate 70 mg"}}
    calls = {
        "patient-view, prefetch": ("toh-patient-view", {"hook": "patient-view", "hookInstance": "h1",
                                                        "context": context, "prefetch": prefetch}),
        "order-sign, prefetch + draft": ("toh-order-sign", {
            "hook": "order-sign", "hookInstance": "h2", "prefetch": prefetch,
            "context": context | {"draftOrders": {"resourceType": "Bundle", "type": "collection",
                                                   "entry": [{"resource": draft}]}}}),
        "patient-view, this store": ("toh-patient-view", {"hook": "patient-view", "hookInstance": "h3",
                                                          "context": context, "fhirServer": f"{ROOT}/fhir",
                                                          "fhirAuthorization": {"access_token": fhir_token,
                                                                                "token_type": "Bearer"}}),
    }
    client = app.test_client()
    warm = min(50, args.runs)

    def tokens(service_id: str) -> list[str]:
        now = int(time.time())
        url = f"{ROOT}/cds-services/{service_id}"
        return [jwt.encode({"iss": ISSUER, "aud": url, "iat": now, "exp": now + 3600, "jti": str(uuid.uuid4())},
                           key, algorithm="RS384", headers={"kid": "k1", "typ": "JWT"})
                for _ in range(args.runs + warm)]

    def hook(service_id: str, body: dict[str, Any]) -> Callable[[], Any]:
        pending = tokens(service_id)
        text = json.dumps(body)

        def send() -> None:
            response = client.post(f"/cds-services/{service_id}", data=text, base_url=ROOT,
                                   headers={"Authorization": f"Bearer {pending.pop()}",
                                            "Content-Type": "application/json"})
            assert response.status_code == 200, response.get_data(as_text=True)
        return send

    terminology = services.clinical.terminology

    def store_read() -> None:
        with services.database.unit_of_work(write=False) as uow:
            clinical_resources(uow.repo, PATIENT)

    results = {name: timed(hook(*spec), args.runs) for name, spec in calls.items()}
    results["baseline assess()"] = timed(lambda: assess(resources, today, terminology), args.runs)
    results["baseline store read"] = timed(store_read, args.runs)

    check = client.post("/cds-services/toh-patient-view", base_url=ROOT, json=calls["patient-view, prefetch"][1],
                        headers={"Authorization": f"Bearer {tokens('toh-patient-view')[0]}"}).get_json()
    print(f"{len(resources)} resources over two years ({START} to {today}); {services.database.dialect}; "
          f"{args.runs} runs; patient-view gives {len(check['cards'])} cards "
          f"({', '.join(sorted(c['source']['topic']['code'] for c in check['cards']))})")
    print(f"{'':32} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'cpu p95':>8}")
    for name, (wall, cpu) in results.items():
        print(f"{name:32} {p(wall, .5):8.2f} {p(wall, .95):8.2f} {p(cpu, .5):8.2f} {p(cpu, .95):8.2f}")
    base_assess = p(results["baseline assess()"][0], .5)
    base_read = p(results["baseline store read"][0], .5)
    for name in calls:
        wall = results[name][0]
        print(f"{name}: p50 = {p(wall, .5) / base_assess:.1f}x assess(), {p(wall, .5) / base_read:.1f}x the store read")
    worst = max(p(results[name][0], .95) for name in calls)
    ok = worst < 50
    print(f"target p95 < 50 ms: {'OK' if ok else 'TOO SLOW'} (worst p95 {worst:.2f} ms)")
    services.database.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
