"""Costs of hostile requests (issue 10), each against a baseline measured in the same run:

- PostgreSQL, Patient?name=x repeated 1 / 100 / 250 times (TOH_SEARCH_MAX_PARAMS raised to 300):
  time and the peak resident memory of the database backends (VmHWM), against one parameter;
- a 400,000-name Patient (8 MB) posted on SQLite: time to its 422, against json.loads of the body.

    python bench/bench_hostile.py        # needs PostgreSQL on 127.0.0.1:5432 (makes and drops a database)
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import bench_token, scratch_postgres  # noqa: E402
from service import create_app  # noqa: E402

FHIR = {"Content-Type": "application/fhir+json"}


def _peak_mb(url: str) -> float:
    engine = create_engine(url)
    with engine.connect() as conn:
        pids = [p for (p,) in conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))]
    engine.dispose()
    return max(int(line.split()[1]) for pid in pids for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmHWM")) / 1024


def main() -> None:
    headers = {"Authorization": f"Bearer {bench_token()}"}   # the apps below take TOH_JWT_SECRET it sets
    with scratch_postgres() as url:
        app = create_app({"database_url": url, "max_search_params": 300})
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = headers["Authorization"]
        for family in ("x", "y"):
            client.post("/fhir/Patient", data=json.dumps({"resourceType": "Patient", "name": [{"family": family}]}),
                        headers=FHIR)
        base = None
        for n in (1, 100, 250):
            start = time.monotonic()
            response = client.get("/fhir/Patient?" + "&".join(["name=x"] * n) + "&_total=accurate")
            took = time.monotonic() - start
            base = base or took
            print(f"PostgreSQL, {n:3d} x name=x: {response.status_code} in {took:.3f} s ({took / base:.1f}x one), "
                  f"backend peak {_peak_mb(url):.0f} MB")
        app.extensions["toh"].database.dispose()
    app = create_app({"database_url": f"sqlite:///{tempfile.mkdtemp()}/t.db", "max_payload_bytes": 10 * 1024 * 1024})
    body = json.dumps({"resourceType": "Patient", "name": [{"family": f"F{i}"} for i in range(400_000)]},
                      separators=(",", ":")).encode()
    start = time.monotonic()
    json.loads(body)
    baseline = time.monotonic() - start
    start = time.monotonic()
    response = app.test_client().post("/fhir/Patient", data=body, headers={**FHIR, **headers})
    took = time.monotonic() - start
    print(f"SQLite, 400,000-name Patient ({len(body) / 1e6:.1f} MB): {response.status_code} in {took:.2f} s "
          f"({took / baseline:.1f}x json.loads of the body, {baseline:.2f} s)")
    app.extensions["toh"].database.dispose()


if __name__ == "__main__":
    main()
