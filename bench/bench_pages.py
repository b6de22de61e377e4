"""How long the staff pages take, against a plain FHIR read measured in the same run.

Writes the cohort of tests/ui_cohort.py (ui-p1 has two years of data: two episodes, four
MRIs, 24 pain scores, reviews done, missed and due) plus --extra copies of it (other patients,
so the worklist has a clinic's worth of Tasks and Flags), signs in with a staff token, then
prints p50/p95 in ms of, in-process through Flask (token or session checked, AuditEvent made
durable, as in production):
  - baseline: GET /fhir/Patient/ui-p1 (a plain FHIR read), and for comparison
    GET /fhir/Patient/ui-p1/$toh-assessment (what the timeline reads, without drawing it);
  - GET /ui/login, /ui/worklist, /ui/patients?q=Becker, /ui/patients/ui-p1;
and each page's ratio to the baseline. The budget is 100 ms per page.

    python bench/bench_pages.py [--postgres | --database-url URL] [--n 200] [--extra 50] [--no-freeze]

Like a `toh serve` worker, it freezes the app's heap once built (service.cli.freeze_heap);
--no-freeze measures without (full garbage collections then walk the app's ~176k objects).

--postgres makes a scratch database on 127.0.0.1:5432 and drops it afterwards.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scratch import scratch_database  # noqa: E402
from service import create_app  # noqa: E402
from service.cli import freeze_heap  # noqa: E402
from service.security import ROLES, issue_token  # noqa: E402
from tests import ui_cohort  # noqa: E402

BUDGET_MS = 100.0
FHIR = {"Content-Type": "application/fhir+json"}


def timings(fn: Callable[[], Any], n: int) -> list[float]:
    """n timings of fn in ms, after a warm-up of min(20, n) calls."""
    for _ in range(min(20, n)):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    """The database to bench on: --database-url as given, else a scratch one (bench.scratch)."""
    if args.database_url:
        yield args.database_url
        return
    with scratch_database("postgresql" if args.postgres else "sqlite") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--database-url")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--extra", type=int, default=50, help="copies of the cohort under other ids")
    parser.add_argument("--no-freeze", action="store_true", help="do not gc.freeze() the app once built")
    args = parser.parse_args()
    with database(args) as url, tempfile.TemporaryDirectory() as data_dir:
        app = create_app({"database_url": url, "data_dir": data_dir, "scheduler": False,
                          "jwt_secret": "bench-secret-" + uuid.uuid4().hex})
        if not args.no_freeze:
            freeze_heap()
        settings = app.extensions["toh"].settings.token_settings()
        ehr = issue_token(settings, subject="bench-ehr", scopes=ROLES["ehr"], ttl_seconds=3600)
        staff = issue_token(settings, subject="bench-nurse", scopes=ROLES["staff"], ttl_seconds=3600)
        api = app.test_client()
        headers = {**FHIR, "Authorization": f"Bearer {ehr}"}
        today = datetime.now(timezone.utc).date()
        text_bundle = json.dumps(ui_cohort.bundle(today))
        started = time.perf_counter()
        for copy in range(args.extra + 1):
            body = text_bundle if copy == 0 else text_bundle.replace('ui-p', f'c{copy}-p')
            response = api.post("/fhir", data=body, headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)[:500]
        print(f"loaded {args.extra + 1} copies of the cohort ({3 * (args.extra + 1)} patients) "
              f"in {time.perf_counter() - started:.1f} s on {url.split(':')[0]}")
        # PostgreSQL: the planner statistics autovacuum would have within a minute of the load
        # (without them the worklist's Task search plans for empty tables: 3x slower).
        app.extensions["toh"].database.analyze()
        ui = app.test_client()
        form = ui.get("/ui/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        assert ui.post("/ui/login", data={"token": staff, "csrf_token": csrf.group(1)}).status_code == 302

        def get(client: Any, path: str, **kw: Any) -> Callable[[], Any]:
            def call() -> Any:
                response = client.get(path, **kw)
                assert response.status_code == 200, (path, response.status_code)
                return response
            return call

        cases = [("baseline GET /fhir/Patient/ui-p1", get(api, "/fhir/Patient/ui-p1", headers=headers)),
                 ("  also: GET .../ui-p1/$toh-assessment", get(api, "/fhir/Patient/ui-p1/$toh-assessment",
                                                             headers=headers)),
                 ("GET /ui/login", get(app.test_client(), "/ui/login")),
                 ("GET /ui/worklist", get(ui, "/ui/worklist")),
                 ("GET /ui/patients?q=Becker", get(ui, "/ui/patients?q=Becker")),
                 ("GET /ui/patients/ui-p1 (timeline)", get(ui, "/ui/patients/ui-p1"))]
        rows = [(name, timings(fn, args.n)) for name, fn in cases]
        base = statistics.median(rows[0][1])
        print(f"{'request':40} {'p50 ms':>8} {'p95 ms':>8} {'x base':>7}  budget {BUDGET_MS:.0f} ms (p95)")
        for name, values in rows:
            p50, p95 = statistics.median(values), pct(values, 95)
            verdict = "" if not name.startswith("GET /ui") else ("ok" if p95 < BUDGET_MS else "OVER")
            print(f"{name:40} {p50:8.1f} {p95:8.1f} {p50 / base:7.1f}  {verdict}")
        app.extensions["toh"].database.dispose()


if __name__ == "__main__":
    main()
