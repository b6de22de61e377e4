"""All the benchmarks with one command: a table on stdout and the figures as JSON.

    python bench/run.py                         # SQLite and PostgreSQL, the peer, small sizes
    python bench/run.py --quick                 # 3 s per HTTP measurement, fewer bundles
    python bench/run.py --databases sqlite --no-peer --json /tmp/bench.json
    python bench/run.py --search-resources 1000000 --sweep-small 10000 --sweep-large 1000000

What it measures, each side by side with its baseline in the same run:
- read by id (GET Observation/[id], bearer token checked, AuditEvent written) at 1 and 16
  concurrent clients: requests/s, p50, p99, against the read floor (bench/read_floor.py: a
  bare Flask app under the same gunicorn set-up, 2 threaded workers, fetching the same row by
  its key), both servers up at once and measured in `--read-slices` alternating slices
  (medians; `--seconds` in all per side); target 0.6 of the floor. A cProfile summary of the
  read in one process says where the rest goes (`python bench/bench_read_cpu.py --parts`:
  what each part of the read costs);
- search over HTTP at 16 clients on the store the ingest made (the issue's four queries);
- ingest (bench/bench_ingest.py): Synthea-shaped transaction bundles from 2 clients, resources/s
  and bundles/s, against the raw-JSON-rows floor (bench/ingest_floor.py); target 1,000/s;
- sweep (bench/bench_sweep.py, PostgreSQL): `--sweep-due` due among `--sweep-small` and
  `--sweep-large` Tasks;
- search at scale (bench/bench_search.py, PostgreSQL, in-process): `--search-resources`
  resources bulk-loaded (default small); the 10,000-patient store of the issue is
  `--synth-patients 10000`, a `toh synth` cohort posted through the service;
- peak RSS of one worker during each HTTP run (and of the process for sweep and search);
- the peer: Medplum's FHIR router with its in-memory repository (bench/peers/medplum, `npm ci`
  run here) on the same read, search and transaction workloads, as a ratio.
Runs on SQLite and PostgreSQL (scratch databases on 127.0.0.1:5432, dropped afterwards).

What a fresh machine needs, and this script installs: wrk (Debian package, `apt-get install
wrk` when run as root; otherwise a Python load generator in a separate process is used) and the
peer's node modules (`npm ci`; needs Node.js >= 20.19 and npm, e.g. Debian's nodejs/npm). Python
packages: `pip install -e ".[test]"`. PostgreSQL on 127.0.0.1:5432 as for the tests.
Absolute figures move with the machine's load, printed with each run; compare ratios.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_ingest  # noqa: E402
from bench.scratch import (Gunicorn, PeakRss, bench_token, ensure_secret, free_port, load,  # noqa: E402
                           scratch_database)
from tests.data.synthea.generator import synthea_bundle  # noqa: E402

PEER_DIR = ROOT / "bench" / "peers" / "medplum"
FHIR = {"Content-Type": "application/fhir+json"}
SEARCHES = {   # the four searches; {patient} is filled from the store
    "Observation?patient=&code=": "Observation?patient={patient}&code=http://loinc.org|72514-3",
    "Condition?patient=": "Condition?patient={patient}",
    "CarePlan?status=active&_include": "CarePlan?status=active&_include=CarePlan:subject&_count=20",
    "Task?status=ready&_sort=period": "Task?status=ready&_sort=period&_count=20",
}


# --- load generation -----------------------------------------------------------------------

def ensure_wrk() -> str | None:
    """The path of wrk, installed from Debian when missing and we may (root with apt-get)."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing wrk (apt-get install wrk) ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], stdout=subprocess.DEVNULL, check=False)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], stdout=subprocess.DEVNULL, check=False)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def hammer(url: str, clients: int, seconds: float, headers: dict[str, str], wrk: str | None) -> dict[str, float]:
    """GET url from `clients` connections for `seconds`: {rps, p50_ms, p99_ms, requests, errors}
    (errors: non-2xx answers and socket errors). wrk if given, else bench/loadgen.py."""
    if wrk:
        command = [wrk, f"-t{min(clients, 2)}", f"-c{clients}", f"-d{max(1, int(seconds))}s", "--latency",
                   "--timeout", "30s"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        out = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 120).stdout
        pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
        done = re.search(r"(\d+) requests in", out)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not ("50" in pct and "99" in pct and done and rps):
            raise RuntimeError(f"wrk gave no figures: {out[-1000:]}")
        return {"rps": float(rps.group(1)), "p50_ms": _ms(pct["50"]), "p99_ms": _ms(pct["99"]),
                "requests": int(done.group(1)),
                "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)}
    command = [sys.executable, str(ROOT / "bench" / "loadgen.py"), url, "-c", str(clients), "-d", str(seconds),
               "--headers", json.dumps(headers)]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                     timeout=seconds + 120).stdout)


# --- the peer ------------------------------------------------------------------------------

def peer_ready() -> str | None:
    """Why the peer cannot run (None: it can); runs `npm ci` once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node and npm are not installed (apt-get install nodejs npm)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        return f"Node.js {version} is older than Medplum 4.5's ^20.19"
    if not (PEER_DIR / "node_modules" / "@medplum" / "fhir-router").exists():
        print("installing the peer's node modules (npm ci) ...", flush=True)
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True, text=True)
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr[-500:]}"
    return None


@contextmanager
def peer_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The Medplum peer on a free port; yields (base URL of its FHIR API, its process)."""
    port = free_port()
    process = subprocess.Popen(["node", "server.mjs"], cwd=PEER_DIR, env={**os.environ, "PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Medplum peer did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/fhir", process
    finally:
        process.terminate()
        process.wait(timeout=30)


def node_rss_mib(process: subprocess.Popen[bytes]) -> float:
    """The peak resident memory of the node process so far (VmHWM), MiB."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the HTTP workloads --------------------------------------------------------------------

def store_targets(base: str, headers: dict[str, str]) -> dict[str, str]:
    """An Observation id and its patient's reference from a store the bundles filled."""
    found = requests.get(f"{base}/Observation?code=http://loinc.org|72514-3&_count=1", headers=headers,
                         timeout=120).json()
    observation = found["entry"][0]["resource"]
    return {"observation": observation["id"], "patient": observation["subject"]["reference"]}


def read_url(base: str, targets: dict[str, str]) -> str:
    """GET [base]/Observation/[id] of the store's target Observation."""
    return f"{base}/Observation/{targets['observation']}"


def searches(base: str, headers: dict[str, str], seconds: float, wrk: str | None,
             targets: dict[str, str]) -> dict[str, Any]:
    """The issue's four searches at 16 clients: hammer()'s figures with the status and rows of one answer."""
    out: dict[str, Any] = {}
    for title, template in SEARCHES.items():
        url = f"{base}/" + template.format(patient=quote(targets["patient"], safe="/"))
        rows = requests.get(url, headers=headers, timeout=120)
        figures = hammer(url, 16, seconds, headers, wrk)
        figures["status"] = rows.status_code
        figures["rows"] = len(rows.json().get("entry", [])) if rows.status_code == 200 else 0
        out[f"search {title}"] = figures
    return out


def read_and_search(base: str, headers: dict[str, str], seconds: float, wrk: str | None) -> dict[str, Any]:
    """Read by id at 1 and 16 clients and the searches at 16, on a filled store (the peer's)."""
    targets = store_targets(base, headers)
    out: dict[str, Any] = {"targets": targets}
    for clients in (1, 16):
        out[f"read_c{clients}"] = hammer(read_url(base, targets), clients, seconds, headers, wrk)
    out.update(searches(base, headers, seconds, wrk, targets))
    return out


def alternating_reads(service: tuple[str, dict[str, str]], floor: tuple[str, dict[str, str]], clients: int,
                      seconds: float, slices: int, wrk: str | None) -> dict[str, dict[str, Any]]:
    """Read by id on the service and on the floor, both up at once, in `slices` alternating
    slices of seconds/slices each (the first side alternating too): {"service": figures,
    "floor": figures}, each with the medians of its slices' rps, p50_ms and p99_ms, the sums of
    requests and errors, and every slice's rps. On a shared machine whose speed drifts within
    a minute, slices side by side compare what one run after the other does not.
    service, floor: (URL, headers)."""
    slices = max(1, min(slices, int(seconds)))   # slices of 1 s at least, seconds in all
    each = seconds / slices
    runs: dict[str, list[dict[str, float]]] = {"service": [], "floor": []}
    for i in range(slices):
        for side in (("service", "floor") if i % 2 == 0 else ("floor", "service")):
            url, headers = service if side == "service" else floor
            runs[side].append(hammer(url, clients, each, headers, wrk))
    out: dict[str, dict[str, Any]] = {}
    for side, figures in runs.items():
        out[side] = {"rps": statistics.median(f["rps"] for f in figures),
                     "p50_ms": statistics.median(f["p50_ms"] for f in figures),
                     "p99_ms": statistics.median(f["p99_ms"] for f in figures),
                     "requests": sum(f["requests"] for f in figures), "errors": sum(f["errors"] for f in figures),
                     "slices_rps": [round(f["rps"], 1) for f in figures]}
    ratios = [o["rps"] / f["rps"] for o, f in zip(runs["service"], runs["floor"]) if f["rps"]]
    print(f"  read, {clients:2d} clients: service {out['service']['slices_rps']} req/s, floor "
          f"{out['floor']['slices_rps']}; ratio of medians {out['service']['rps'] / out['floor']['rps']:.2f}, "
          f"of each slice {[round(r, 2) for r in ratios]}", flush=True)
    return out


def run_http(kind: str, bodies: list[bytes], counts: list[int], seconds: float, wrk: str | None,
             workdir: Path, read_slices: int = 10) -> dict[str, Any]:
    """Ingest (service and floor), then reads (service and read floor in alternating slices:
    alternating_reads) and searches (service) on one kind of database."""
    print(f"\n== {kind}: ingest ({load()})", flush=True)
    result: dict[str, Any] = {"ingest": bench_ingest.measure_database(kind, bodies, counts, workdir, seconds)}
    headers = {"Authorization": f"Bearer {bench_token()}"}
    with scratch_database(kind, workdir) as url:
        folder = Path(tempfile.mkdtemp(prefix="toh-bench-serve-", dir=workdir))
        server = Gunicorn.toh_serve(url, folder, workers=2, env={"TOH_SCHEDULER": "off"})
        try:
            bench_ingest.post_all(f"{server.base}/fhir", bodies, counts)
            with Gunicorn.app("bench.read_floor:create_app()", env={"FLOOR_DATABASE_URL": url}) as floor, \
                    PeakRss(server) as rss, PeakRss(floor) as floor_rss:
                targets = store_targets(f"{server.base}/fhir", headers)
                print(f"== {kind}: read, service and floor in {read_slices} alternating slices ({load()})", flush=True)
                reads = {c: alternating_reads((read_url(f"{server.base}/fhir", targets), headers),
                                              (read_url(f"{floor.base}/fhir", targets), {}), c, seconds, read_slices, wrk)
                         for c in (1, 16)}
                print(f"== {kind}: search, service ({load()})", flush=True)
                result["service"] = {"targets": targets, **{f"read_c{c}": reads[c]["service"] for c in reads},
                                     **searches(f"{server.base}/fhir", headers, seconds, wrk, targets)}
                result["floor"] = {f"read_c{c}": reads[c]["floor"] for c in reads}
            result["service"]["peak_rss_mib"] = rss.peak_mib
            result["floor"]["peak_rss_mib"] = floor_rss.peak_mib
        finally:
            server.stop()
    return result


def run_peer(bodies: list[bytes], counts: list[int], seconds: float, wrk: str | None) -> dict[str, Any]:
    """The same transactions, reads and searches on the Medplum peer: the ingest on one peer
    process (the bundles in turn for `seconds`, as the service's), then the reads and searches
    on a fresh one holding the bundles once, as the service's search store does (its searches
    scan every stored resource, so the store the ingest run leaves would time them out)."""
    print(f"\n== peer: Medplum fhir-router, in memory ({load()})", flush=True)
    with peer_server() as (base, process):
        n, posted, took = bench_ingest.post_all(base, bodies, counts, min_seconds=seconds)
        out: dict[str, Any] = {"ingest": {"service": n / took, "service_bundles": posted / took}}
        peak = node_rss_mib(process)
    with peer_server() as (base, process):
        bench_ingest.post_all(base, bodies, counts)
        out.update(read_and_search(base, {}, seconds, wrk))
        out["peak_rss_mib"] = max(peak, node_rss_mib(process))
    return out


# --- the in-process benchmarks, as subprocesses (their own peak RSS) ------------------------

def run_scripts_with_rss(args: list[str], timeout: float) -> tuple[dict[str, Any], float, str]:
    """Like run_script, with the child's own peak RSS from wait4 (Linux)."""
    out_path = Path(tempfile.mkstemp(suffix=".json")[1])
    process = subprocess.Popen([sys.executable, *args, "--json", str(out_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout)
    output = "".join(chunks)
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{output[-3000:]}")
    figures = json.loads(out_path.read_text())
    out_path.unlink()
    return figures, usage.ru_maxrss / 1024, output


# --- where a read's time goes --------------------------------------------------------------

BUCKETS = [("database commit (the read's AuditEvent, committed before the answer)", ("'commit' of",)),
           ("auth (JWT)", ("service/security", "jwt/")), ("audit", ("service/audit", "service/store/audit")),
           ("store / SQL", ("service/store", "sqlalchemy/", "sqlite3", "psycopg")),
           ("FHIR API (negotiation, headers)", ("service/api", "service/fhir")),
           ("Flask / Werkzeug", ("flask/", "werkzeug/")), ("JSON", ("json/",))]


def read_profile(n: int, workdir: Path) -> dict[str, Any]:
    """cProfile of n reads through the Flask test client (SQLite, token checked, audited):
    the share of own time by part, and the top functions."""
    from service import create_app
    ensure_secret()
    app = create_app({"database_url": f"sqlite:///{workdir / 'profile.db'}"})
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {bench_token()}"
    created = client.post("/fhir/Observation", json={"resourceType": "Observation", "status": "final",
                                                     "code": {"text": "pain"}}, headers=FHIR)
    url = f"/fhir/Observation/{created.get_json()['id']}"
    for _ in range(100):
        client.get(url)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(n):
        client.get(url)
    profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    shares: dict[str, float] = {}
    total = 0.0
    top: list[tuple[float, str]] = []
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        where = f"{filename} {name}"
        bucket = next((b for b, marks in BUCKETS if any(m in where for m in marks)), "other (builtins, stdlib)")
        shares[bucket] = shares.get(bucket, 0.0) + tottime
        top.append((tottime, f"{Path(filename).name}:{line} {name}"))
    app.extensions["toh"].database.dispose()
    return {"reads": n, "ms_per_read_profiled": 1000 * seconds / n,
            "share": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
            "top": [f"{100 * t / total:5.1f}% {where}" for t, where in sorted(top, reverse=True)[:10]]}


# --- the table -----------------------------------------------------------------------------

def _ratio(value: float) -> str:
    """Two decimals, or three significant digits below 0.1 (0.057 must not print as 0.06)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3g}"


def table(results: dict[str, Any]) -> str:
    lines = ["| workload | database | service | baseline | ratio | peer (Medplum, in memory) | service/peer |",
             "|---|---|---|---|---|---|---|"]
    peer = results.get("peer") or {}

    def row(name: str, db: str, ours: float | None, base: float | None, peer_value: float | None,
            unit: str) -> None:
        ratio = _ratio(ours / base) if ours and base else ""
        vs = _ratio(ours / peer_value) if ours and peer_value else ""
        lines.append(f"| {name} | {db} | {ours or 0:,.1f} {unit} | {f'{base:,.1f} {unit}' if base else ''} | {ratio} "
                     f"| {f'{peer_value:,.1f} {unit}' if peer_value else ''} | {vs} |")

    for db, r in results["databases"].items():
        s, f = r["service"], r["floor"]
        for c in (1, 16):
            ours, floor = s[f"read_c{c}"], f[f"read_c{c}"]
            if ours["errors"] or floor["errors"]:
                lines.append(f"| (read, {c} clients: {ours['errors']} errors, floor {floor['errors']}) | {db} | | | | | |")
            row(f"read by id, {c} client{'s' if c > 1 else ''} (req/s; p50/p99 ms {ours['p50_ms']:.1f}/"
                f"{ours['p99_ms']:.1f}, floor {floor['p50_ms']:.1f}/{floor['p99_ms']:.1f})", db, ours["rps"],
                floor["rps"], peer.get(f"read_c{c}", {}).get("rps"), "req/s")
        for title in SEARCHES:
            ours = s[f"search {title}"]
            theirs = peer.get(f"search {title}", {})
            peer_note = f"; peer {theirs['rows']} rows, status {theirs['status']}" if theirs else ""
            row(f"search {title}, 16 clients (p50/p99 ms {ours['p50_ms']:.1f}/{ours['p99_ms']:.1f}; "
                f"{ours['rows']} rows; status {ours['status']}{peer_note})", db, ours["rps"], None,
                theirs.get("rps") if theirs.get("status") == 200 and not theirs.get("errors") else None, "req/s")
        ing = r["ingest"]
        row(f"ingest, transaction bundles ({ing['bundles']} bundles, {ing['resources']} resources; "
            f"{ing['service_bundles']:.2f} bundles/s)", db, ing["service"], ing["floor"],
            peer.get("ingest", {}).get("service"), "res/s")
        lines.append(f"| peak RSS of one worker (ingest / read+search) | {db} | {ing['service_rss_mib']:.0f} / "
                     f"{s['peak_rss_mib']:.0f} MiB | floor {ing['floor_rss_mib']:.0f} / {f['peak_rss_mib']:.0f} MiB "
                     f"| | {peer.get('peak_rss_mib', 0):.0f} MiB (node) | |")
    if "sweep" in results:
        sw = results["sweep"]
        lines.append(f"| sweep: {sw['due']} due among {sw['large']:,} Tasks (baseline: {sw['due']} due among "
                     f"{sw['small']:,}) | postgresql | {sw['seconds_large']:.2f} s | {sw['seconds_small']:.2f} s | "
                     f"{sw['seconds_large'] / sw['seconds_small']:.2f} (target < 1.5) | | peak RSS {sw['peak_rss_mib']:.0f} MiB |")
    if "search_scale" in results:
        se = results["search_scale"]
        ld = se.get("loading")
        if ld:   # the cohort posted through the service, one transaction Bundle per patient
            lines.append(f"| loading {se['synth_patients']:,} toh synth patients through the service "
                         f"({ld['resources_posted']:,} resources in {ld['seconds']:,.0f} s by {ld.get('clients', 1)} "
                         f"processes; resources/s of the first "
                         f"and the last 500 bundles) | postgresql | {ld['resources_posted'] / ld['seconds']:,.1f} res/s | "
                         f"first {ld['first_window_per_s']:,.1f} / last {ld['last_window_per_s']:,.1f} | "
                         f"{ld['last_window_per_s'] / ld['first_window_per_s']:.2f} | | |")
        for title, q in se["queries"].items():
            store = (f"{se['resources']:,} resources of {se['synth_patients']:,} toh synth patients"
                     if se.get("synth_patients") else f"{se['resources']:,} resources")
            lines.append(f"| search in-process, {store}: {title} (p50/p95 ms) | postgresql | "
                         f"{q['p50_ms']:.2f} / {q['p95_ms']:.2f} | by primary key {q['pk_p50_ms']:.2f} / {q['pk_p95_ms']:.2f} "
                         f"| | | peak RSS {se['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--seconds", type=float, default=10,
                        help="length of each HTTP measurement (an ingest run lasts at least this long)")
    parser.add_argument("--read-slices", type=int, default=10,
                        help="alternating slices of the reads, service and floor (the medians are reported; "
                             "each at least 1 s): this machine's speed drifts within seconds")
    parser.add_argument("--bundles", type=int, default=11, help="Synthea-shaped transaction bundles to ingest")
    parser.add_argument("--encounters", type=int, default=14, help="encounters per bundle")
    parser.add_argument("--search-resources", type=int, default=20_000,
                        help="resources bulk-loaded for the in-process search benchmark (the issue: 1,000,000)")
    parser.add_argument("--synth-patients", type=int, default=0,
                        help="fill the search store with a `toh synth --patients N` cohort, posted through "
                             "the service, instead")
    parser.add_argument("--synth-clients", type=int, default=2,
                        help="processes posting the cohort's bundles at once (bench_search.py --synth-clients)")
    parser.add_argument("--sweep-due", type=int, default=200)
    parser.add_argument("--sweep-small", type=int, default=2_000)
    parser.add_argument("--sweep-large", type=int, default=20_000)
    parser.add_argument("--profile-reads", type=int, default=500)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-search-scale", action="store_true")
    parser.add_argument("--quick", action="store_true", help="3 s measurements, 4 bundles, smallest sizes")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--table-from", metavar="JSON", help="print the table of an earlier run's JSON and stop")
    args = parser.parse_args()
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return 0
    if args.quick:
        args.seconds, args.bundles, args.search_resources = 3, 4, 5_000
        args.sweep_due, args.sweep_small, args.sweep_large = 100, 1_000, 5_000
    ensure_secret()
    started = datetime.now(timezone.utc)
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"), "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "load_before": load(), "databases": {}}
    wrk = ensure_wrk()
    results["load_generator"] = "wrk" if wrk else "bench/loadgen.py (Python, separate process)"
    print(f"{results['machine']}; load generator: {results['load_generator']}; {load()}", flush=True)
    bundles = [synthea_bundle(seed, args.encounters) for seed in range(1, args.bundles + 1)]
    bodies = [json.dumps(b).encode() for b in bundles]
    counts = [len(b["entry"]) for b in bundles]
    workdir = Path(tempfile.mkdtemp(prefix="toh-bench-run-"))
    try:
        for kind in args.databases.split(","):
            results["databases"][kind] = run_http(kind, bodies, counts, args.seconds, wrk, workdir, args.read_slices)
        if not args.no_peer:
            why = peer_ready()
            if why:
                print(f"\nthe peer is left out: {why}")
                results["peer_skipped"] = why
            else:
                results["peer"] = run_peer(bodies, counts, args.seconds, wrk)
        print(f"\n== where a read's time goes (cProfile, one process, SQLite; {load()})", flush=True)
        results["read_profile"] = read_profile(args.profile_reads, workdir)
        if not args.no_sweep and "postgresql" in args.databases:
            print(f"\n== sweep ({load()})", flush=True)
            figures, peak, _ = run_scripts_with_rss(
                ["bench/bench_sweep.py", "--due", str(args.sweep_due), "--small", str(args.sweep_small),
                 "--large", str(args.sweep_large)], timeout=7200)
            results["sweep"] = {**figures, "peak_rss_mib": peak}
        if not args.no_search_scale and "postgresql" in args.databases:
            print(f"\n== search at scale ({load()})", flush=True)
            extra = (["--synth-patients", str(args.synth_patients), "--synth-clients", str(args.synth_clients)]
                     if args.synth_patients else [])
            figures, peak, _ = run_scripts_with_rss(
                ["bench/bench_search.py", "--resources", str(args.search_resources), "--queries", "200", *extra],
                timeout=7200)
            results["search_scale"] = {**figures, "peak_rss_mib": peak}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["load_after"] = load()
    results["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds())
    rendered = table(results)
    results["table"] = rendered
    Path(args.json).write_text(json.dumps(results, indent=2))
    print("\n" + rendered)
    prof = results["read_profile"]
    print(f"\nread profile ({prof['reads']} reads, {prof['ms_per_read_profiled']:.2f} ms each under the profiler): "
          + ", ".join(f"{k} {100 * v:.0f}%" for k, v in prof["share"].items()))
    print("\n".join("  " + line for line in prof["top"]))
    print(f"\n{results['load_before']} before, {results['load_after']} after; {results['seconds']} s; "
          f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
