"""CPU milliseconds a read by id costs the application in one process, with an optional profile.

The application as `toh serve` runs it (bearer token checked, AuditEvent committed before the
answer, the JSON request log and prometheus-client's multiprocess mode on) answers
GET [base]/Observation/[id] through a direct WSGI call (no test client, whose own request
building would be counted), `--n` times in each of 3 runs; prints the CPU time
(time.process_time) per read of the best run. CPU time moves less than wall-clock time while
other work loads the machine. `--profile` then runs cProfile over `--n` more reads. `--parts`
says what each part of the read costs: the reads with the request log line, the AuditEvent or
the request metrics switched off in turn (5 alternating runs of each, best run), against all on.

    python bench/bench_read_cpu.py [--database sqlite|postgresql] [--n 2000] [--profile] [--parts]

Compare two versions alternately: run it from each checkout (its folder first on sys.path).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="toh-bench-cpu-"))  # before the client's import

from werkzeug.test import EnvironBuilder  # noqa: E402

from bench.bench_read import OBSERVATION  # noqa: E402
from bench.scratch import bench_token, ensure_secret, scratch_database  # noqa: E402


def reader(app: Any, path: str, headers: dict[str, str]) -> Callable[[], str]:
    """A function answering one GET of path through the WSGI callable; returns the status."""
    environ = EnvironBuilder(path=path, method="GET", headers={**headers, "Accept": "*/*"},
                             base_url="http://127.0.0.1:8000").get_environ()
    statuses: list[str] = []

    def start(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses.append(status)

    def one() -> str:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(b"")
        body = app(env, start)
        b"".join(body)
        if hasattr(body, "close"):
            body.close()
        return statuses.pop()

    return one


def parts(one: Callable[[], str], n: int, runs: int = 5) -> None:
    """Print the CPU of a read with each part switched off in turn (alternating, best of runs):
    the request log line (its logger above INFO), the AuditEvent (service.api.audit.audited
    False: no describing, no row, no commit) and the request metrics (observe_request a no-op)."""
    import logging
    from service.api import audit
    from service.observability import metrics
    request_log = logging.getLogger("toh.requests")
    audited, observe = audit.audited, metrics.observe_request

    def switch(off: str) -> None:
        request_log.setLevel(logging.WARNING if off == "request log" else logging.NOTSET)
        audit.audited = (lambda: False) if off == "AuditEvent" else audited  # type: ignore[assignment]
        metrics.observe_request = (lambda *a, **k: None) if off == "metrics" else observe  # type: ignore[assignment]

    names = ["nothing", "request log", "AuditEvent", "metrics"]
    best = dict.fromkeys(names, float("inf"))
    try:
        for _ in range(runs):
            for name in names:
                switch(name)
                started = time.process_time()
                for _ in range(n):
                    one()
                best[name] = min(best[name], (time.process_time() - started) / n * 1000)
    finally:
        switch("nothing")
    for name in names:
        print(f"  {name + ' off':16s} {best[name]:.3f} ms a read" +
              ("" if name == "nothing" else f"  (the part: {best['nothing'] - best[name]:.3f} ms)"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--parts", action="store_true", help="the cost of each part, switched off in turn")
    args = parser.parse_args()
    ensure_secret()
    headers = {"Authorization": f"Bearer {bench_token()}"}
    from service import create_app
    from service.observability import logs
    with scratch_database(args.database) as url:
        app = create_app({"database_url": url})
        saved, sys.stderr = sys.stderr, open(os.devnull, "w")   # the JSON request log, written and dropped
        try:
            logs.configure("json", "INFO")
        finally:
            sys.stderr = saved
        created = app.test_client().post("/fhir/Observation", data=json.dumps(OBSERVATION),
                                          headers={**headers, "Content-Type": "application/fhir+json"})
        assert created.status_code == 201, created.data
        one = reader(app, f"/fhir/Observation/{created.json['id']}", headers)
        for _ in range(300):
            assert one().startswith("200")
        runs = []
        for _ in range(3):
            started = time.process_time()
            for _ in range(args.n):
                one()
            runs.append((time.process_time() - started) / args.n * 1000)
        print(f"{args.database}: CPU {min(runs):.3f} ms a read (runs {' '.join(f'{r:.3f}' for r in runs)})")
        if args.parts:
            parts(one, args.n)
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.n):
                one()
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
