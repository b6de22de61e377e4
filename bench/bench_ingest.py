"""Ingest throughput: Synthea-shaped transaction Bundles posted to the service under gunicorn,
against a bare Flask storage floor under the same gunicorn, on SQLite and PostgreSQL.

    python bench/bench_ingest.py [--bundles 11] [--encounters 14] [--databases sqlite,postgresql]
                                 [--seconds 10] [--no-profile]

For each database: the service (`gunicorn -w 2 'service:create_app()'`, its own fresh
database) takes the bundles from 2 client threads, one transaction per bundle, each bundle once
and then again in turn (each post stores new resources: the bundles create theirs from urn:uuid
fullUrls, except the conditional creates of Organization and Practitioner, which find the first
round's); the floor (bench/ingest_floor.py, its own database: each bundle's entries stored as
JSON rows, one executemany, nothing else) takes the same bundles from the same 2 clients. Both
are up at once and take turns, the service first, in 3 slices each of at least --seconds / 3
(measure_database), so both see the machine's load over interleaved stretches of time. Printed:
resources/s of both and their ratio (service / floor), and the service workers' CPU a resource
and how many cores they kept busy (short of 2: they waited, for the write lock or for work).
Then, in one process on SQLite, where a bundle's time goes without a profiler (the first bundle against the others, the share before
and under the write lock, the commit, the garbage collector), and a cProfile summary (top 15 by
own time) of the same bundles through create_app().

The bundles come from tests/data/synthea/generator.py (seeded, so every run posts the same).
PostgreSQL databases are scratch databases on 127.0.0.1:5432 (bench/scratch.py), dropped afterwards.
Absolute figures move with the machine's load (printed with each run); compare ratios.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scratch import Gunicorn, PeakRss, bench_token, cpu_seconds, load, scratch_database  # noqa: E402
from tests.auth import TEST_SECRET, make_token  # noqa: E402
from tests.data.synthea.generator import synthea_bundle  # noqa: E402

CLIENTS = 2
WORKERS = 2
# A run of the 11 bundles alone lasts about 2 s, where one scheduling hiccup moves the figure
# by a third: the bundles are posted again in turn until the run has lasted this long.
MIN_SECONDS = 10.0
SLICES = 3   # service and floor alternate, each for MIN_SECONDS / SLICES at a time
# The service asks for a bearer token (issue 12): an EHR's system token, signed with a secret
# the service under test is given (TOH_JWT_SECRET); the floor ignores it.
HEADERS = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal",
           "Authorization": f"Bearer {make_token(('system/*.cruds',), ttl=7 * 86400)}"}
SERVICE_ENV = {"TOH_JWT_SECRET": TEST_SECRET}
os.environ.update(SERVICE_ENV)   # bench.scratch's servers and tokens use the same secret


@contextmanager
def gunicorn(app: str, env: dict[str, str]) -> Iterator[Gunicorn]:
    """gunicorn -w 2 (threaded, as `toh serve`) on app, ready once every worker answers."""
    server = Gunicorn.app(app, env=env, workers=WORKERS)
    try:
        yield server
    finally:
        server.stop()


def post_all(url: str, bodies: list[bytes], counts: list[int], min_seconds: float = 0.0) -> tuple[int, int, float]:
    """Post the bodies from CLIENTS threads (each bundle once; cycled again while less than
    min_seconds have passed); returns (resources stored, bundles stored, seconds). A 503
    (transient) is posted again, up to 5 times, as a client would; raises on any other non-200."""
    work: queue.Queue[int] = queue.Queue()
    stored = [0] * CLIENTS
    posted = [0] * CLIENTS
    retries = [0] * CLIENTS
    errors: list[str] = []
    start = time.perf_counter()
    for i in range(len(bodies)):
        work.put(i)

    def client(n: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {bench_token()}"
        # A new connection for each bundle: gunicorn's threaded workers keep a keep-alive
        # connection for its whole life, so two clients' connections may both be held by one
        # worker and leave the other idle (seen here: one worker at 93% CPU, the other at 0%,
        # half the throughput). Each bundle is taken by whichever worker accepts first.
        session.headers["Connection"] = "close"
        while not errors:
            try:
                i = work.get_nowait()
            except queue.Empty:
                if time.perf_counter() - start >= min_seconds:
                    return
                i = 0
                for j in range(1, len(bodies)):   # one more round
                    work.put(j)
            response = session.post(url, data=bodies[i], headers=HEADERS, timeout=600)
            for _ in range(5):   # 503: the database gave up (SQLite's busy timeout); the bundle left nothing
                if response.status_code != 503:
                    break
                retries[n] += 1
                response = session.post(url, data=bodies[i], headers=HEADERS, timeout=600)
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.text[:500]}")
                return
            stored[n] += counts[i]
            posted[n] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    if sum(retries):
        print(f"  ({sum(retries)} bundles answered 503 and were posted again; the time includes it)")
    return sum(stored), sum(posted), time.perf_counter() - start


def run_database(kind: str, bodies: list[bytes], counts: list[int], workdir: Path,
                 min_seconds: float = MIN_SECONDS) -> tuple[float, float]:
    """(service resources/s, floor resources/s) on one kind of database."""
    figures = measure_database(kind, bodies, counts, workdir, min_seconds)
    return figures["service"], figures["floor"]


def measure_database(kind: str, bodies: list[bytes], counts: list[int], workdir: Path,
                     min_seconds: float = MIN_SECONDS, slices: int = SLICES) -> dict[str, float]:
    """Service and floor on one kind of database, each on a database of its own and both up at
    once, in `slices` alternating slices (the service first) of at least min_seconds/slices
    each: resources/s and bundles/s over all of a side's slices, peak worker RSS (MiB), the
    resources and bundles the service stored and its workers' CPU a resource. The first
    slice of each side posts every bundle once, and each slice posts the bundles again in turn
    until its time has passed, so both sides do the same work over interleaved stretches of
    the machine's time (a shared machine's speed drifts within a minute)."""
    each = min_seconds / max(1, slices)
    with scratch_database(kind, workdir) as url, scratch_database(kind, workdir) as floor_url, \
            gunicorn("service:create_app()", {"TOH_DATABASE_URL": url, **SERVICE_ENV}) as server, \
            gunicorn("bench.ingest_floor:create_app()", {"FLOOR_DATABASE_URL": floor_url}) as floor_server, \
            PeakRss(server) as rss, PeakRss(floor_server) as floor_rss:
        before = load()
        workers = server.worker_pids()
        totals = {"service": [0, 0, 0.0], "floor": [0, 0, 0.0]}
        cpu = 0.0
        for _ in range(max(1, slices)):
            cpu_before = cpu_seconds(workers)
            n, posted, seconds = post_all(f"{server.base}/fhir", bodies, counts, min_seconds=each)
            cpu += cpu_seconds(workers) - cpu_before
            totals["service"] = [totals["service"][0] + n, totals["service"][1] + posted, totals["service"][2] + seconds]
            n, posted, seconds = post_all(f"{floor_server.base}/fhir", bodies, counts, min_seconds=each)
            totals["floor"] = [totals["floor"][0] + n, totals["floor"][1] + posted, totals["floor"][2] + seconds]
            print(f"  slice: service {totals['service'][0]:6d} resources in {totals['service'][2]:6.2f} s, floor "
                  f"{totals['floor'][0]:6d} in {totals['floor'][2]:6.2f} s so far", flush=True)
        n, posted, seconds = totals["service"]
        service = n / seconds
        print(f"  service  {n:6d} resources in {seconds:6.2f} s = {service:8.1f} resources/s   ({before})")
        print(f"           workers' CPU {1000 * cpu / n:.3f} ms a resource, {cpu / seconds:.2f} of {WORKERS} cores busy")
        floor_n, _, floor_seconds = totals["floor"]
        floor = floor_n / floor_seconds
        print(f"  floor    {floor_n:6d} resources in {floor_seconds:6.2f} s = {floor:8.1f} resources/s   ({load()})")
    print(f"  ratio service/floor {service / floor:.4f}")
    return {"service": service, "service_bundles": posted / seconds, "service_rss_mib": rss.peak_mib,
            "resources": n, "bundles": posted, "service_cpu_ms": 1000 * cpu / n, "floor": floor,
            "floor_rss_mib": floor_rss.peak_mib}


def profile(bundles: list[dict[str, object]], workdir: Path, top: int = 15) -> None:
    """The same bundles through create_app() in one process (SQLite), under cProfile."""
    from service import create_app
    from service.fhir.resources import warm_models
    os.environ.update(SERVICE_ENV)
    app = create_app({"database_url": f"sqlite:///{workdir / 'profile.db'}"})
    warm_models()   # as the service's worker does before its first request
    client = app.test_client()
    profiler = cProfile.Profile()
    n = 0
    start = time.perf_counter()
    profiler.enable()
    for bundle in bundles:
        response = client.post("/fhir", json=bundle, headers=HEADERS)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        n += len(bundle["entry"])  # type: ignore[arg-type]
    profiler.disable()
    seconds = time.perf_counter() - start
    print(f"\ncProfile, one process, SQLite: {n} resources in {seconds:.2f} s under the profiler "
          f"({1000 * seconds / n:.2f} ms a resource; {load()})")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:8000])
    app.extensions["toh"].database.dispose()


def breakdown(bundles: list[dict[str, object]], workdir: Path, rounds: int = 2) -> dict[str, float]:
    """Where a bundle's wall time goes, in one process on SQLite, without a profiler (issue 11's
    steps): the first bundle against the median of the others (what a cold worker pays), the
    checks made before the write lock (prechecked_creates: the R4 model), the write lock's
    share (process_bundle and the unit of work's commit, before-commit steps included), the
    commit statement itself, and the garbage collector's time. Returns the figures (ms, or a
    share of the wall time)."""
    import gc
    import statistics

    from sqlalchemy.engine import Connection

    from service import create_app
    from service.api import bundles as api_bundles
    from service.fhir.resources import warm_models
    from service.store.db import UnitOfWork

    os.environ.update(SERVICE_ENV)
    spent = {"prechecks": 0.0, "locked": 0.0, "commit": 0.0, "gc": 0.0}
    started: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started["gc"] = time.perf_counter()
        else:
            spent["gc"] += time.perf_counter() - started.pop("gc", time.perf_counter())

    saved = (api_bundles.prechecked_creates, api_bundles.process_bundle, UnitOfWork.commit, Connection.commit)
    api_bundles.prechecked_creates = timed("prechecks", saved[0])
    api_bundles.process_bundle = timed("locked", saved[1])
    UnitOfWork.commit = timed("locked", saved[2])   # type: ignore[method-assign]
    Connection.commit = timed("commit", saved[3])   # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    try:
        app = create_app({"database_url": f"sqlite:///{workdir / 'breakdown.db'}"})
        warm_models()   # as the service's gunicorn worker does once the application is loaded
        gc.collect()
        gc.freeze()
        client = app.test_client()
        times = []
        for bundle in bundles * rounds:
            if len(times) == 1:
                spent.update(dict.fromkeys(spent, 0.0))   # the shares are of the warm bundles
            t = time.perf_counter()
            response = client.post("/fhir", json=bundle, headers=HEADERS)
            times.append(time.perf_counter() - t)
            assert response.status_code == 200, response.get_data(as_text=True)[:500]
        app.extensions["toh"].database.dispose()
    finally:
        (api_bundles.prechecked_creates, api_bundles.process_bundle, UnitOfWork.commit, Connection.commit) = saved
        gc.callbacks.remove(on_gc)
        gc.unfreeze()
    warm = sum(times[1:])
    resources = sum(len(b["entry"]) for b in bundles) * rounds - len(bundles[0]["entry"])  # type: ignore[arg-type]
    figures = {"first_bundle_ms": 1000 * times[0], "median_bundle_ms": 1000 * statistics.median(times[1:]),
               "ms_per_resource": 1000 * warm / resources, "prechecks_share": spent["prechecks"] / warm,
               "write_lock_share": spent["locked"] / warm, "commit_ms": 1000 * spent["commit"] / (len(times) - 1),
               "gc_share": spent["gc"] / warm}
    print(f"\nIn one process, SQLite, {len(times)} bundles ({load()}): first bundle {figures['first_bundle_ms']:.0f} ms, "
          f"then median {figures['median_bundle_ms']:.0f} ms ({figures['ms_per_resource']:.3f} ms a resource); "
          f"checks before the write lock {figures['prechecks_share']:.0%}, under the write lock "
          f"{figures['write_lock_share']:.0%} (the commit statement {figures['commit_ms']:.1f} ms a bundle), "
          f"garbage collector {figures['gc_share']:.1%}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundles", type=int, default=11)
    parser.add_argument("--encounters", type=int, default=14)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=MIN_SECONDS,
                        help=f"the service's run lasts at least this long (default {MIN_SECONDS:g})")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    bundles = [synthea_bundle(seed, args.encounters) for seed in range(1, args.bundles + 1)]
    bodies = [json.dumps(b).encode() for b in bundles]
    counts = [len(b["entry"]) for b in bundles]
    print(f"{len(bundles)} Synthea-shaped transaction bundles, {sum(counts)} resources; "
          f"gunicorn -w {WORKERS}, {CLIENTS} clients; {os.cpu_count()} CPUs")
    workdir = Path(tempfile.mkdtemp(prefix="toh-bench-ingest-"))
    try:
        results = {}
        for kind in args.databases.split(","):
            print(f"\n{kind}:")
            results[kind] = run_database(kind, bodies, counts, workdir, args.seconds)
        print("\nsummary (target: >= 1000 resources/s and ratio >= 0.06 on each database)")
        for kind, (service, floor) in results.items():
            print(f"  {kind:10s} service {service:8.1f} resources/s  floor {floor:8.1f} resources/s  "
                  f"ratio {service / floor:.4f}")
        if not args.no_profile:
            breakdown(bundles, workdir)
            profile(bundles, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
