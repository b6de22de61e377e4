"""A small HTTP load generator for bench/run.py when wrk is not installed: `clients` threads,
each on its own keep-alive connection, GET one URL for `seconds`; prints JSON
{rps, p50_ms, p99_ms, requests, errors}. Run in its own process, apart from the server.

    python bench/loadgen.py http://127.0.0.1:8080/fhir/Patient/x -c 16 -d 10 --headers '{"Authorization": "Bearer ..."}'
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("-c", "--clients", type=int, default=1)
    parser.add_argument("-d", "--seconds", type=float, default=10)
    parser.add_argument("--headers", default="{}")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = json.loads(args.headers)
    latencies: list[float] = []
    errors = [0]
    end = time.monotonic() + args.seconds

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 300:
                    errors[0] += 1
            except (OSError, http.client.HTTPException):
                errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                continue
            mine.append((time.perf_counter() - start) * 1000)
        latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(json.dumps({"rps": len(latencies) / took, "p50_ms": q[49], "p99_ms": q[98], "requests": len(latencies),
                      "errors": errors[0]}))


if __name__ == "__main__":
    main()
