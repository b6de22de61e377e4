"""Read by id over HTTP only: the read part of bench/run.py, without the ingest, searches and
peer, so a change to the read path can be measured side by side with the floor in a minute.

`toh serve` (2 workers, bearer token checked, AuditEvent per read) and the read floor
(bench/read_floor.py under the same gunicorn set-up) on one scratch database holding one
Observation; wrk (or bench/loadgen.py) at 1 and 16 clients, service and floor alternately,
`--rounds` times; prints req/s, p50/p99 the workers' CPU milliseconds per request (steadier than req/s on a shared machine) and the
ratio of each round, and the load.

    python bench/bench_read_http.py [--databases sqlite,postgresql] [--seconds 5] [--rounds 2]
    python bench/bench_read_http.py --hold 120     # keep the servers up (to attach a profiler)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_read import OBSERVATION  # noqa: E402
from bench.run import ensure_wrk, hammer  # noqa: E402
from bench.scratch import Gunicorn, bench_token, cpu_seconds, ensure_secret, load, scratch_database  # noqa: E402


def measured(server: Gunicorn, url: str, clients: int, seconds: float, headers: dict[str, str],
             wrk: str | None) -> dict[str, float]:
    """hammer()'s figures plus the workers' CPU milliseconds per answered request."""
    pids = server.worker_pids()
    before = cpu_seconds(pids)
    figures = hammer(url, clients, seconds, headers, wrk)
    figures["cpu_ms"] = 1000 * (cpu_seconds(pids) - before) / max(1, figures["requests"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--hold", type=float, default=0, help="seconds to keep the servers up before measuring")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per worker of the service and the floor (default: toh serve's)")
    args = parser.parse_args()
    ensure_secret()
    wrk = ensure_wrk()
    headers = {"Authorization": f"Bearer {bench_token()}"}
    clients = [int(c) for c in args.clients.split(",")]
    from service.config import Settings
    threads = args.threads or Settings.from_env().threads
    workdir = Path(tempfile.mkdtemp(prefix="toh-bench-read-"))
    for kind in args.databases.split(","):
        with scratch_database(kind, workdir) as url:
            folder = Path(tempfile.mkdtemp(prefix="toh-bench-serve-", dir=workdir))
            with Gunicorn.toh_serve(url, folder, workers=2, env={"TOH_SCHEDULER": "off", "TOH_THREADS": str(threads)}) \
                    as server, Gunicorn.app("bench.read_floor:create_app()", env={"FLOOR_DATABASE_URL": url},
                                            threads=threads) as floor:
                created = requests.post(f"{server.base}/fhir/Observation", data=json.dumps(OBSERVATION),
                                        headers={**headers, "Content-Type": "application/fhir+json"}, timeout=60)
                created.raise_for_status()
                path = f"/fhir/Observation/{created.json()['id']}"
                if args.hold:
                    print(f"service {server.base}{path} workers {server.worker_pids()}; floor {floor.base}{path} "
                          f"workers {floor.worker_pids()}; holding {args.hold:.0f} s", flush=True)
                    Path(tempfile.gettempdir(), "toh-bench-read-token").write_text(headers["Authorization"])
                    time.sleep(args.hold)
                for round_ in range(1, args.rounds + 1):
                    for c in clients:
                        ours = measured(server, server.base + path, c, args.seconds, headers, wrk)
                        base = measured(floor, floor.base + path, c, args.seconds, {}, wrk)
                        print(f"{kind} round {round_} c={c:2d}: service {ours['rps']:8.1f} req/s "
                              f"(p50 {ours['p50_ms']:.2f} p99 {ours['p99_ms']:.2f} ms, CPU {ours['cpu_ms']:.2f} ms/req, "
                              f"{ours['errors']} errors)  floor {base['rps']:8.1f} req/s (p50 {base['p50_ms']:.2f} "
                              f"p99 {base['p99_ms']:.2f}, CPU {base['cpu_ms']:.2f} ms/req)  "
                              f"ratio {ours['rps'] / base['rps']:.2f}  [{load()}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
