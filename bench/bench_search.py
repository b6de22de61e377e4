"""Search benchmark on PostgreSQL: bulk-load N resources (default 1,000,000) with their search
index rows, show the plans of ``Observation?patient=X&code=Y`` and ``Condition?patient=X``, and
report p50/p95 of those searches against a baseline of fetching the same rows by primary key,
measured in the same run.

    python bench/bench_search.py                      # 1,000,000 resources, fresh database
    python bench/bench_search.py --resources 100000 --queries 300
    python bench/bench_search.py --database-url postgresql+psycopg://postgres@127.0.0.1/mydb --keep
    python bench/bench_search.py --synth-patients 10000   # a `toh synth` cohort, posted through the service

Mix: 5% Patients, 15% Conditions, 80% Observations (about 16 per patient, 20 LOINC codes).
Loading uses COPY with the index tables' indexes dropped and rebuilt afterwards. Index rows are
made from the real extractor's output on one prototype per resource shape with the varying
values substituted; the first resources are checked against the extractor itself, so the
index holds exactly what the service would have written. (resource_versions is not filled:
search never reads it.)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, event, select, text  # noqa: E402

from bench.scratch import PG_ADMIN, scratch_postgres  # noqa: E402

from service.fhir.search.extract import IndexRows  # noqa: E402
from service.store import Database  # noqa: E402
from service.store.schema import resources  # noqa: E402
from service.store.search import SearchEngine  # noqa: E402
from service.store.search.tables import INDEXES, TABLES  # noqa: E402

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LOINC = "http://loinc.org"
CODES = [f"{1000 + i}-{i % 10}" for i in range(20)]
SNOMED_CODES = [f"{2000 + i}" for i in range(10)]
# Placeholders in the prototypes, replaced per resource.
P_ID, P_PAT, P_CODE, P_VALUE = "zzid", "zzpat", "zzcode", 123456.0
P_DAY = datetime(2001, 1, 1, tzinfo=UTC)


def patient(pid: str, i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female" if i % 2 else "male",
            "birthDate": "2001-01-01", "name": [{"family": f"Fam{i % 997}", "given": [f"Giv{i % 101}"]}],
            "identifier": [{"system": "urn:mrn", "value": pid}]}


def condition(cid: str, pid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "onsetDateTime": "2001-01-01"}


def observation(oid: str, pid: str, code: str, value: float) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2001-01-01", "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org",
                                                                 "code": "kg", "unit": "kg"}}


class Shapes:
    """Index-row templates from the real extractor, one per resource shape."""

    def __init__(self, engine: SearchEngine) -> None:
        ex = engine.extractor
        self.extract = ex.extract
        self.templates = {
            "Patient": ex.extract(patient(P_ID, 0)),
            "Condition": ex.extract(condition(P_ID, P_PAT, P_CODE)),
            "Observation": ex.extract(observation(P_ID, P_PAT, P_CODE, P_VALUE)),
        }

    def rows(self, res_type: str, values: dict[Any, Any], shift: timedelta, gender: str | None = None
             ) -> IndexRows:
        """The template's rows with placeholders replaced and dates shifted."""
        out = IndexRows()
        for kind, items in self.templates[res_type].kinds():
            target = getattr(out, kind)
            for row in items:
                fields = []
                for f in row:
                    if isinstance(f, datetime):
                        f = f + shift if f.year > 1900 and f.year < 9000 else f
                    elif f in values:
                        f = values[f]
                    fields.append(f)
                target.add(type(row)(*fields))
        return out


def rows_equal(a: IndexRows, b: IndexRows) -> bool:
    return all(x == y for (_, x), (_, y) in zip(a.kinds(), b.kinds()))


def generate(n: int, shapes: Shapes, seed: int = 7) -> Iterator[tuple[int, str, str, datetime, str, IndexRows]]:
    """(rid, res_type, res_id, last_updated, content, index rows) for n resources."""
    rnd = random.Random(seed)
    n_pat = max(1, n // 20)
    n_cond = n * 15 // 100
    n_obs = n - n_pat - n_cond
    rid = 0
    pids = [f"pat-{i}" for i in range(n_pat)]

    def stamped(resource: dict[str, Any], moment: datetime) -> str:
        resource["meta"] = {"versionId": "1", "lastUpdated": moment.isoformat(timespec="milliseconds")
                            .replace("+00:00", "Z")}
        return json.dumps(resource, separators=(",", ":"))

    for i, pid in enumerate(pids):
        rid += 1
        moment = T0 + timedelta(seconds=rid)
        res = patient(pid, i)
        gender = res["gender"]
        rows = shapes.rows("Patient", {P_ID: pid, "male": gender, "fam0": f"fam{i % 997}", "Fam0": f"Fam{i % 997}",
                                       "giv0": f"giv{i % 101}", "Giv0": f"Giv{i % 101}"},
                           timedelta(days=rnd.randrange(20000)) * 0)
        yield rid, "Patient", pid, moment, stamped(res, moment), rows
    for kind, count in (("Condition", n_cond), ("Observation", n_obs)):
        for j in range(count):
            rid += 1
            moment = T0 + timedelta(seconds=rid)
            pid = pids[rnd.randrange(n_pat)]
            day = timedelta(days=rnd.randrange(3000))
            res_id = f"{kind[:3].lower()}-{j}"
            if kind == "Condition":
                code = SNOMED_CODES[rnd.randrange(len(SNOMED_CODES))]
                res = condition(res_id, pid, code)
                rows = shapes.rows(kind, {P_ID: res_id, P_PAT: pid, P_CODE: code}, day)
            else:
                code = CODES[rnd.randrange(len(CODES))]
                value = float(rnd.randrange(30, 150))
                res = observation(res_id, pid, code, value)
                rows = shapes.rows(kind, {P_ID: res_id, P_PAT: pid, P_CODE: code, P_VALUE: value}, day)
            date = (datetime(2001, 1, 1) + day).date().isoformat()
            if kind == "Condition":
                res["onsetDateTime"] = date
            else:
                res["effectiveDateTime"] = date
            yield rid, kind, res_id, moment, stamped(res, moment), rows


def _copy_text(v: Any) -> str:
    if v is None:
        return "\\N"
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def load(url: str, n: int, shapes: Shapes, check: int = 300) -> dict[str, int]:
    """COPY n resources and their index rows into an empty, migrated database."""
    engine = create_engine(url)
    counts = {k: 0 for k in TABLES}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, _table, _cols in INDEXES:
            cur.execute(f'DROP INDEX IF EXISTS "{name}"')
        columns = {k: [c.name for c in t.columns] for k, t in TABLES.items()}
        buffers: dict[str, list[str]] = {k: [] for k in TABLES}
        res_buf: list[str] = []

        def flush(force: bool = False) -> None:
            if res_buf and (force or len(res_buf) >= 20000):
                with cur.copy("COPY resources (rid, res_type, res_id, version, last_updated, deleted, content) "
                              "FROM STDIN") as copy:
                    copy.write("".join(res_buf))
                res_buf.clear()
            for kind, buf in buffers.items():
                if buf and (force or len(buf) >= 100000):
                    with cur.copy(f"COPY {TABLES[kind].name} ({', '.join(columns[kind])}) FROM STDIN") as copy:
                        copy.write("".join(buf))
                    buf.clear()

        started = time.perf_counter()
        for rid, res_type, res_id, moment, content, rows in generate(n, shapes):
            if rid <= check:   # the fast path must equal the real extractor
                real = shapes.extract(json.loads(content))
                if not rows_equal(rows, real):
                    raise SystemExit(f"index rows of {res_type}/{res_id} differ from the extractor's:\n"
                                     f"{rows}\n{real}")
            res_buf.append(f"{rid}\t{res_type}\t{res_id}\t1\t{moment.isoformat()}\tf\t{_copy_text(content)}\n")
            for kind, items in rows.kinds():
                for row in items:
                    buffers[kind].append("\t".join([str(rid), res_type] + [_copy_text(v) for v in row]) + "\n")
                    counts[kind] += 1
            flush()
            if rid % 200000 == 0:
                print(f"  {rid:>9,} resources loaded ({time.perf_counter() - started:.0f}s)", flush=True)
        flush(force=True)
        cur.execute("SELECT setval(pg_get_serial_sequence('resources', 'rid'), (SELECT max(rid) FROM resources))")
        raw.commit()
        print(f"  copied in {time.perf_counter() - started:.0f}s; building indexes", flush=True)
        t = time.perf_counter()
        cur.execute("SET maintenance_work_mem = '512MB'")
        for name, table, cols in INDEXES:
            cur.execute(f'CREATE INDEX "{name}" ON {table.name} ({", ".join(cols)})')
        raw.commit()
        print(f"  indexes built in {time.perf_counter() - t:.0f}s", flush=True)
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        t = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        print(f"  vacuum analyze in {time.perf_counter() - t:.0f}s", flush=True)
    engine.dispose()
    return counts


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100)
    return qs[49] * 1000, qs[94] * 1000


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


CAREPLANS = "CarePlan?status=active&_include=CarePlan:subject"
READY_TASKS = "Task?status=ready&_sort=period"


def measure(url: str, search: SearchEngine, queries: int) -> dict[str, dict[str, float]]:
    """Print the plans and the timings over what the store holds (ids sampled from it); returns
    {query: {rows, p50_ms, p95_ms, pk_p50_ms, pk_p95_ms}}. Raises SystemExit on an empty store."""
    figures: dict[str, dict[str, float]] = {}
    db = Database(url)
    rnd = random.Random(11)
    with db.engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM resources")).scalar_one()
        n_pat = conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'Patient'")).scalar_one()
        step = 997 if n >= 997 * 100 else 1       # a spread sample of a large store; all of a small one
        obs = conn.execute(text(
            "SELECT r.target_id, t.code FROM search_reference r JOIN search_token t ON t.rid = r.rid "
            "WHERE r.res_type = 'Observation' AND r.param = 'patient' AND t.res_type = 'Observation' "
            "AND t.param = 'code' AND r.rid % :step = 0 LIMIT 2000"), {"step": step}).all()
        pids = list(conn.execute(text("SELECT res_id FROM resources WHERE res_type = 'Patient' "
                                      "ORDER BY rid LIMIT 5000")).scalars())
        if not obs or not pids:
            raise SystemExit("the store holds no Observation with a patient and a code: nothing to search")
        print(f"\n{n:,} resources; {n_pat:,} patients; index rows: " + ", ".join(
            f"{t.name} {conn.execute(text(f'SELECT count(*) FROM {t.name}')).scalar_one():,}"
            for t in TABLES.values()))

        captured: list[tuple[str, Any]] = []

        @event.listens_for(conn, "before_cursor_execute")
        def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
            captured.append((statement, params))

        def run(url_: str) -> Any:
            res_type, _, qs = url_.partition("?")
            query = search.parse(res_type, [tuple(p.split("=", 1)) for p in qs.split("&")])  # type: ignore[misc]
            return search.search(conn, query)

        pid, code = obs[0]
        for title, example in (("Observation?patient=X&code=Y", f"Observation?patient={pid}&code={LOINC}|{code}"),
                               ("Condition?patient=X", f"Condition?patient={pid}"),
                               (CAREPLANS, CAREPLANS), (READY_TASKS, READY_TASKS)):
            captured.clear()
            result = run(example)
            if not any("content" in s for s, _ in captured):
                continue
            statement, params = next((s, p) for s, p in captured if "content" in s)
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) {title}   [{example}: {len(result.matches)} rows]")
            for (line,) in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params):
                print("   ", line)
        event.remove(conn, "before_cursor_execute", capture)
        conn.commit()

        # Timings: the search (parse + SQL + rows) vs the same rows fetched by primary key.
        cases = {
            "Observation?patient=X&code=Y": [f"Observation?patient={p}&code={LOINC}|{c}"
                                             for p, c in rnd.sample(obs, min(queries, len(obs)))],
            "Condition?patient=X": [f"Condition?patient={rnd.choice(pids)}" for _ in range(queries)],
            # the issue's two other shapes: one page (the default _count) of the whole store's matches
            CAREPLANS: [CAREPLANS] * max(1, queries // 5),
            READY_TASKS: [READY_TASKS] * max(1, queries // 5),
        }
        by_pk = select(resources.c.rid, resources.c.res_type, resources.c.res_id, resources.c.version,
                       resources.c.last_updated, resources.c.content)
        print(f"\n{'query':<32}{'rows':>6}{'p50 ms':>9}{'p95 ms':>9}   baseline: same rows by primary key"
              f"{'p50 ms':>9}{'p95 ms':>9}   one row by pk{'p50 ms':>9}{'p95 ms':>9}")
        for title, urls in cases.items():
            for u in urls[:20]:     # warm up
                run(u)
                conn.commit()
            search_t, pk_t, one_t, rows = [], [], [], 0
            for u in urls:
                t = time.perf_counter()
                result = run(u)
                search_t.append(time.perf_counter() - t)
                conn.commit()
                rids = [m.rid for m in result.matches] or [1]
                rows += len(result.matches)
                t = time.perf_counter()
                conn.execute(by_pk.where(resources.c.rid.in_(rids))).all()
                pk_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                conn.execute(by_pk.where(resources.c.rid == rids[0])).all()
                one_t.append(time.perf_counter() - t)
                conn.commit()
            s50, s95 = percentiles(search_t)
            b50, b95 = percentiles(pk_t)
            o50, o95 = percentiles(one_t)
            print(f"{title:<32}{rows / len(urls):>6.1f}{s50:>9.2f}{s95:>9.2f}{'':>38}{b50:>9.2f}{b95:>9.2f}"
                  f"{'':>16}{o50:>9.2f}{o95:>9.2f}")
            figures[title] = {"rows": rows / len(urls), "p50_ms": s50, "p95_ms": s95, "pk_p50_ms": b50,
                              "pk_p95_ms": b95}
    db.dispose()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=500, help="searches timed per query shape")
    ap.add_argument("--database-url", help="an existing empty PostgreSQL database (default: a fresh one)")
    ap.add_argument("--keep", action="store_true", help="do not drop the fresh database afterwards")
    ap.add_argument("--synth-patients", type=int, default=0,
                    help="fill the store with a `toh synth` cohort of this many patients, posted through the "
                         "service, instead of the bulk load")
    ap.add_argument("--synth-clients", type=int, default=2,
                    help="processes posting the cohort's bundles at once (default 2, the machine's cores)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    with ExitStack() as stack:
        url = args.database_url
        if url is None:
            url = stack.enter_context(scratch_postgres()) if not args.keep else _kept_database()
        db = Database(url)
        db.migrate()
        db.dispose()
        search = SearchEngine()
        t = time.perf_counter()
        loading: dict[str, float] = {}
        if args.synth_patients:
            loading = synth(url, args.synth_patients, clients=args.synth_clients)
        else:
            print(f"loading {args.resources:,} resources into {url}")
            load(url, args.resources, Shapes(search))
        print(f"loaded in {time.perf_counter() - t:.0f}s")
        figures = measure(url, search, args.queries)
        if args.json:
            stored = args.resources
            if args.synth_patients:   # the cohort's resources and the service's own (plans, Tasks, Provenance...)
                engine = create_engine(url)
                with engine.connect() as conn:
                    stored = conn.execute(text("SELECT count(*) FROM resources")).scalar_one()
                engine.dispose()
            Path(args.json).write_text(json.dumps({"resources": stored, "synth_patients": args.synth_patients,
                                                   "loading": loading, "queries": figures}))


def _kept_database() -> str:
    """A fresh database that is not dropped afterwards (--keep)."""
    name = f"toh_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def synth(url: str, patients: int, seed: int = 1, clients: int = 2) -> dict[str, float]:
    """Fill the store with a `toh synth` cohort (issue 16; the issue's 10,000-patient store):
    `toh synth` writes one transaction Bundle per patient into a scratch folder, and each is
    POSTed to /fhir through the service (create_app, the normal write path: validation, the
    search index, the clinical watch, plans, Provenance, audit) by `clients` processes at once
    (each its own app and connections, every clients-th bundle, as clinic clients would), on a
    clock fixed at the cohort's as-of day; then one sweep as of that day (due follow-ups become
    ready, as in a running clinic). Returns the loading's figures: resources posted, seconds,
    and the resources/s of the first and of the last window of 500 bundles (the store's growth
    shows as their ratio). Raises SystemExit if `toh synth` fails or a bundle is refused."""
    import secrets
    import subprocess
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    from service import create_app
    from service.clock import FixedClock
    from service.synth import DEFAULT_AS_OF

    toh = Path(sys.executable).with_name("toh")
    command = [str(toh)] if toh.exists() else [sys.executable, "-m", "service.cli"]
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as folder:
        made = subprocess.run(command + ["synth", "--patients", str(patients), "--seed", str(seed), "--out", folder,
                                         "--as-of", DEFAULT_AS_OF.isoformat()], capture_output=True, text=True)
        if made.returncode != 0:
            raise SystemExit(f"toh synth failed ({made.returncode}): {made.stderr.strip()}")
        print(made.stdout.strip(), flush=True)
        today = datetime.combine(DEFAULT_AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
        secret = secrets.token_urlsafe(32)
        files = [str(f) for f in sorted(Path(folder).glob("patient-*.json"))]
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=clients) as pool:
            done = list(pool.map(_post_bundles, [url] * clients, [files[k::clients] for k in range(clients)],
                                 [today] * clients, [secret] * clients))
        seconds = time.perf_counter() - start
        posted_at = sorted(event for events in done for event in events)   # (when, resources) per bundle
        rates: list[float] = []
        window_start = start
        for first in range(0, len(posted_at), 500):
            window = posted_at[first:first + 500]
            rates.append(sum(r for _, r in window) / max(window[-1][0] - window_start, 1e-9))
            window_start = window[-1][0]
        posted = sum(r for _, r in posted_at)
        print(f"  posted {len(posted_at):,} bundles, {posted:,} resources in {seconds:.0f}s ({clients} clients); "
              "resources/s per 500 bundles: " + ", ".join(f"{r:.0f}" for r in rates), flush=True)
        loading = {"resources_posted": posted, "seconds": round(seconds, 1), "clients": clients,
                   "first_window_per_s": round(rates[0], 1), "last_window_per_s": round(rates[-1], 1)}
        app = create_app({"database_url": url, "scheduler": False, "jwt_secret": secret}, clock=FixedClock(today))
        services = app.extensions["toh"]
        try:
            from service.workflows.sweep import sweep
            started = time.perf_counter()
            report = sweep(services.database, services.clock.now())   # due follow-ups become ready
            print(f"  swept as of {services.clock.now():%Y-%m-%d}: {len(report.handled):,} items in "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
            services.database.analyze()    # the statistics autovacuum would have a minute later
        finally:
            services.database.dispose()
    return loading


def _post_bundles(url: str, files: list[str], today: datetime, secret: str) -> list[tuple[float, int]]:
    """POST each transaction Bundle file to /fhir through a new app in this process; returns
    (time.perf_counter() when answered, resources in the bundle) per bundle. Raises SystemExit
    when a bundle is refused."""
    from service import create_app
    from service.clock import FixedClock
    from service.security import issue_token

    app = create_app({"database_url": url, "scheduler": False, "jwt_secret": secret}, clock=FixedClock(today))
    services = app.extensions["toh"]
    token = issue_token(services.settings.token_settings(), subject="bench-synth", scopes=["system/*.cruds"],
                        ttl_seconds=24 * 3600)
    client = app.test_client()
    headers = {"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"}
    out: list[tuple[float, int]] = []
    start = time.perf_counter()
    try:
        for n, name in enumerate(files, 1):
            body = Path(name).read_bytes()
            response = client.post("/fhir", data=body, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"{Path(name).name} refused ({response.status_code}): "
                                 f"{response.get_data(as_text=True)[:500]}")
            out.append((time.perf_counter(), len(json.loads(body)["entry"])))
            if n % 500 == 0:
                print(f"  [{os.getpid()}] posted {n:,}/{len(files):,} bundles ({n / (time.perf_counter() - start):.1f} "
                      f"patients/s; {load_average()})", flush=True)
    finally:
        services.database.dispose()
    return out


def load_average() -> str:
    """The 1-minute load average, as 'load 1.23'."""
    return f"load {os.getloadavg()[0]:.2f}"

if __name__ == "__main__":
    main()
