"""Throughput of one `toh serve` instance with 1, 2 and 4 gunicorn worker processes
(docs/deployment.md, "Throughput").

For each worker count: start `toh serve --workers W --threads 4` on a scratch PostgreSQL
database, seed --patients patients with one Observation each, then drive it for --seconds from
--clients client processes (4 threads each, keep-alive sessions) with a mix of
  70 % reads (GET Observation/id), 20 % searches (GET Observation?patient=...), 10 % creates
  (POST Observation, which re-assesses the patient in the same transaction),
and print requests per second, the error count and p50/p95 latency. Every request carries a
bearer token and writes its AuditEvent, as in production.

    python bench/bench_workers.py [--workers 1,2,4] [--seconds 20] [--clients 4] [--patients 50]

Needs PostgreSQL on 127.0.0.1:5432 (TOH_BENCH_PG_URL for another admin URL). The clients run
on the same machine as the server: on a small machine they take CPU from it, so compare the
rows with each other, not with another machine's.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("TOH_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECRET = secrets.token_hex(32)
FHIR = {"Content-Type": "application/fhir+json"}


def observation(patient: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "72514-3"}]},
            "effectiveDateTime": "2026-03-01T10:00:00Z",
            "valueQuantity": {"value": 4, "unit": "{score}", "system": "http://unitsofmeasure.org",
                              "code": "{score}"}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token() -> str:
    from service.config import Settings
    from service.security import issue_token
    return issue_token(Settings(jwt_secret=SECRET).token_settings(), subject="bench",
                       scopes=["system/*.cruds"], ttl_seconds=3600)


def client(base: str, bearer: str, patients: list[str], observations: list[str], until: float,
           out: Any) -> None:
    """One client process: 4 threads, each with its own keep-alive session, until `until`."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def run() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {bearer}"
        rng = random.Random()
        mine: list[float] = []
        bad = 0
        while time.time() < until:
            pick = rng.random()
            started = time.perf_counter()
            if pick < 0.7:
                answer = session.get(f"{base}/Observation/{rng.choice(observations)}", timeout=60)
            elif pick < 0.9:
                answer = session.get(f"{base}/Observation?patient=Patient/{rng.choice(patients)}", timeout=60)
            else:
                answer = session.post(f"{base}/Observation", json=observation(rng.choice(patients)),
                                      headers=FHIR, timeout=60)
            mine.append(time.perf_counter() - started)
            bad += answer.status_code >= 400
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, errors[0]))


def measure(workers: int, seconds: float, clients: int, n_patients: int) -> dict[str, float]:
    name = f"toh_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    env = dict(os.environ, TOH_DATABASE_URL=url, TOH_JWT_SECRET=SECRET, TOH_SCHEDULER="off", TOH_LOG_LEVEL="WARNING")
    workdir = tempfile.mkdtemp(prefix="toh-bench-")
    log = open(Path(workdir) / "serve.log", "w")
    toh = Path(sys.executable).with_name("toh")
    server = subprocess.Popen([str(toh), "serve", "--port", str(port), "--workers", str(workers), "--threads", "4"],
                              env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        for _ in range(600):
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"toh serve did not start: {(Path(workdir) / 'serve.log').read_text()[-2000:]}")
        bearer = token()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {bearer}"
        patients, observations = [], []
        for _ in range(n_patients):
            pid = session.post(f"{base}/Patient", json={"resourceType": "Patient"}, headers=FHIR, timeout=60).json()["id"]
            patients.append(pid)
            observations.append(session.post(f"{base}/Observation", json=observation(pid), headers=FHIR,
                                             timeout=60).json()["id"])
        queue: Any = multiprocessing.Queue()
        until = time.time() + seconds
        procs = [multiprocessing.Process(target=client, args=(base, bearer, patients, observations, until, queue))
                 for _ in range(clients)]
        for p in procs:
            p.start()
        latencies: list[float] = []
        errors = 0
        for _ in procs:
            lat, bad = queue.get()
            latencies.extend(lat)
            errors += bad
        for p in procs:
            p.join()
        latencies.sort()
        return {"workers": workers, "rps": len(latencies) / seconds, "requests": len(latencies), "errors": errors,
                "p50_ms": statistics.median(latencies) * 1000,
                "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000}
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--patients", type=int, default=50)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}, cores: {os.cpu_count()}, clients: {args.clients} x 4 threads, "
          f"{args.seconds:.0f} s each", flush=True)
    print("workers  req/s  requests  errors  p50 ms  p95 ms", flush=True)
    for w in [int(x) for x in args.workers.split(",")]:
        r = measure(w, args.seconds, args.clients, args.patients)
        print(f"{r['workers']:7.0f} {r['rps']:6.1f} {r['requests']:9.0f} {r['errors']:7.0f} {r['p50_ms']:7.1f} "
              f"{r['p95_ms']:7.1f}   load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
