"""CPU per resource of each step of a transaction Bundle, in one process on SQLite (issue 11).

    python bench/bench_ingest_steps.py [--rounds 2]

The 11 Synthea-shaped bundles of bench_ingest.py go through create_app() with a test client
(the first one warms up and is not counted); a timer (time.process_time, so CPU, not wall)
around each step adds its time. What runs before SQLite's write lock (prechecked_creates)
and what runs under it (process_bundle, then the unit of work's commit with its before-commit
steps) are printed as ms a resource, with the parts inside them indented. Steps nest, so the
indented lines are parts of the line above, and a class's before-commit step may be counted
under more than one module that imports it. To compare two versions of the code, run this in
each checkout alternately (the machine's load moves every figure).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.bench_ingest as bench_ingest  # noqa: E402
from tests.data.synthea.generator import synthea_bundle  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="times the bundles are posted")
    args = parser.parse_args()

    from sqlalchemy.engine import Connection

    from service import create_app
    from service.api import bundles as api_bundles
    from service.audit import provenance
    from service.fhir.resources import warm_models
    from service.fhir.search import extract
    from service.store import repository
    from service.store.db import UnitOfWork
    from service.store.search import indexer
    from service.workflows import care_plans, clinical_watch, notifications

    os.environ.update(bench_ingest.SERVICE_ENV)
    cpu: dict[str, float] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            started = time.process_time()
            try:
                return real(*a, **k)
            finally:
                cpu[label] = cpu.get(label, 0.0) + time.process_time() - started
        setattr(owner, name, wrapper)

    timed(api_bundles, "prechecked_creates", "before the lock: prechecked_creates")
    timed(api_bundles, "process_bundle", "under the lock: process_bundle")
    timed(UnitOfWork, "commit", "under the lock: the unit of work's commit")
    timed(extract.Extractor, "extract", "  index extraction")
    timed(indexer, "insert_rows", "  index inserts")
    timed(repository.Repository, "validate", "  Repository.validate")
    timed(repository.Repository, "flush", "  Repository.flush")
    timed(clinical_watch, "clinical_resources", "  clinical_resources")
    for module in (clinical_watch, care_plans, provenance, notifications):
        for cls in list(vars(module).values()):
            if isinstance(cls, type) and cls.__module__ == module.__name__ and "before_commit" in vars(cls):
                timed(cls, "before_commit", f"  {cls.__name__}.before_commit")
    timed(Connection, "commit", "  the COMMIT statement")

    bundles = [synthea_bundle(seed, 14) for seed in range(1, 12)]
    app = create_app({"database_url": f"sqlite:///{tempfile.mkdtemp(prefix='toh-steps-')}/steps.db"})
    warm_models()   # as the service's gunicorn worker does
    gc.collect()
    gc.freeze()
    client = app.test_client()
    client.post("/fhir", json=bundles[0], headers=bench_ingest.HEADERS)
    cpu.clear()
    resources = 0
    started = time.process_time()
    for bundle in bundles[1:] * args.rounds:
        response = client.post("/fhir", json=bundle, headers=bench_ingest.HEADERS)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        resources += len(bundle["entry"])
    total = time.process_time() - started
    print(f"{resources} resources, CPU ms a resource ({bench_ingest.load()}):")
    print(f"{'all of the request':45s} {1000 * total / resources:.4f}")
    for label, seconds in cpu.items():
        print(f"{label:45s} {1000 * seconds / resources:.4f}")
    app.extensions["toh"].database.dispose()


if __name__ == "__main__":
    main()
