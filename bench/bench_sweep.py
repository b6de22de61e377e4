"""Sweep benchmark on PostgreSQL: the time of one sweep that handles 1,000 due follow-ups when
10,000 Tasks are stored (the baseline), and again when 1,000,000 are, in the same run; and the
EXPLAIN of the claim query. Target: the ratio under 1.5 (the sweep costs what is due, not what
is stored).

    python bench/bench_sweep.py                  # 1,000 due among 10,000 then among 1,000,000
    python bench/bench_sweep.py --due 300 --large 200000
    python bench/bench_sweep.py --database-url postgresql+psycopg://postgres@127.0.0.1/mydb --keep

How: two batches of `--due` follow-up Tasks (one per patient) are written through the
repository, so they carry every row the service makes (versions, search index, due work):
batch 1 falls due at T1, batch 2 at T2 (a week later). The other Tasks are copied in SQL from a
Task written through the repository (its content, search-index rows and due-work row, with the
id, patient and due date varied), each with its next transition years ahead. The first sweep
(as of T1) runs among `--small` stored Tasks; then the copies grow to `--large` and the second
sweep (as of T2) handles batch 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from bench.scratch import PG_ADMIN, scratch_postgres  # noqa: E402

from service import create_app  # noqa: E402
from service.clock import FixedClock  # noqa: E402
from service.fhir.canonical import TOH_CODES  # noqa: E402
from service.store import FollowUps  # noqa: E402
from service.store.search.tables import TABLES  # noqa: E402
from service.workflows.sweep import sweep  # noqa: E402

UTC = timezone.utc
START_1 = date(2026, 3, 10)                # batch 1's window; ready 7 days before
START_2 = START_1 + timedelta(days=7)      # batch 2's; ready on START_1
T1 = datetime.combine(START_1 - timedelta(days=7), datetime.min.time(), UTC) + timedelta(hours=9)
T2 = datetime.combine(START_1, datetime.min.time(), UTC) + timedelta(hours=9)
FAR = date(2040, 1, 1)


def task(tid: str, patient: str, start: date) -> dict[str, Any]:
    return {"resourceType": "Task", "id": tid, "status": "requested", "intent": "order",
            "code": {"coding": [{"system": TOH_CODES, "code": "follow-up-review"}]},
            "description": "Review", "for": {"reference": f"Patient/{patient}"},
            "restriction": {"period": {"start": start.isoformat(), "end": start.isoformat()}}}


def write_batch(app: Any, n: int, start: date, tag: str) -> None:
    database = app.extensions["toh"].database
    for first in range(0, n, 200):
        with database.unit_of_work() as uow:
            for i in range(first, min(n, first + 200)):
                uow.repo.update("Patient", f"{tag}-p{i}", {"resourceType": "Patient", "id": f"{tag}-p{i}"})
                uow.repo.update("Task", f"{tag}-t{i}", task(f"{tag}-t{i}", f"{tag}-p{i}", start))
            uow.commit()


def copy_tasks(url: str, first: int, last: int) -> None:
    """Tasks filler-<first>..filler-<last - 1>, copied from Task/prototype in SQL."""
    if last <= first:
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        proto = conn.execute(text("SELECT rid, content FROM resources WHERE res_type='Task' AND res_id='prototype'")).one()
        conn.execute(text(
            "INSERT INTO resources (res_type, res_id, version, last_updated, deleted, content) "
            "SELECT 'Task', 'filler-' || g, 1, now(), false, "
            "replace(replace(:content, '\"prototype\"', '\"filler-' || g || '\"'), 'Patient/proto-p', 'Patient/fp' || (g % 50000)) "
            "FROM generate_series(CAST(:a AS integer), CAST(:b AS integer)) g"), {"content": proto.content, "a": first, "b": last - 1})
        for name, table in TABLES.items():
            columns = [c.name for c in table.columns if c.name != "rid"]
            values = ["r.rid" if c == "rid" else
                      ("'fp' || (substr(r.res_id, 8)::int % 50000)" if name == "reference" and c == "target_id" else f"t.{c}")
                      for c in ["rid", *columns]]
            conn.execute(text(
                f"INSERT INTO {table.name} (rid, {', '.join(columns)}) "
                f"SELECT {', '.join(values)} FROM {table.name} t "
                f"JOIN resources r ON r.res_type = 'Task' AND r.res_id LIKE 'filler-%' "
                f"AND substr(r.res_id, 8)::int BETWEEN CAST(:a AS integer) AND CAST(:b AS integer) WHERE t.rid = :proto"),
                {"a": first, "b": last - 1, "proto": proto.rid})
        conn.execute(text(
            "INSERT INTO due_work (kind, subject, due_at, attempts) "
            "SELECT 'task', 'filler-' || g, :far + (g % 3650) * interval '1 day', 0 FROM generate_series(CAST(:a AS integer), CAST(:b AS integer)) g"),
            {"far": datetime.combine(FAR, datetime.min.time(), UTC), "a": first, "b": last - 1})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def timed_sweep(url: str, now: datetime) -> tuple[float, int]:
    app = create_app({"database_url": url, "migrate_on_start": False}, clock=FixedClock(now))
    database = app.extensions["toh"].database
    started = time.perf_counter()
    report = sweep(database, now)
    elapsed = time.perf_counter() - started
    assert not report.failed, report.lines()[-5:]
    database.dispose()
    return elapsed, len(report.handled)


def explain(url: str, now: datetime) -> str:
    app = create_app({"database_url": url, "migrate_on_start": False}, clock=FixedClock(now))
    database = app.extensions["toh"].database
    with database.unit_of_work() as uow:
        stmt = FollowUps(uow.conn, "postgresql").claim_statement(now)
        sql = str(stmt.compile(dialect=uow.conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = uow.conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql)).scalars().all()
    database.dispose()
    return sql + "\n" + "\n".join(plan)


def count_tasks(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM resources WHERE res_type = 'Task'")).scalar_one()
    engine.dispose()
    return int(n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh database, dropped afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the fresh database")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.database_url
        if url is None and args.keep:
            name = f"toh_bench_sweep_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        elif url is None:
            url = stack.enter_context(scratch_postgres())
        figures = run(url, args.due, args.small, args.large)
    if args.json:
        Path(args.json).write_text(json.dumps(figures))
    return 0


def run(url: str, due: int, small_n: int, large_n: int) -> dict[str, float]:
    """The two sweeps on url; returns {due, small, large, seconds_small, seconds_large, ...}."""
    app = create_app({"database_url": url}, clock=FixedClock(T1 - timedelta(days=30)))
    print(f"writing 2 x {due} due follow-ups through the repository ...", flush=True)
    write_batch(app, due, START_1, "b1")
    write_batch(app, due, START_2, "b2")
    with app.extensions["toh"].database.unit_of_work() as uow:
        uow.repo.update("Patient", "proto-p", {"resourceType": "Patient", "id": "proto-p"})
        uow.repo.update("Task", "prototype", task("prototype", "proto-p", FAR))
        uow.commit()
    app.extensions["toh"].database.dispose()
    small_fill = small_n - 2 * due - 1
    copy_tasks(url, 0, small_fill)
    small = count_tasks(url)
    t_small, n_small = timed_sweep(url, T1)
    print(f"sweep of {n_small} due among {small:,} Tasks: {t_small:.2f} s "
          f"({1000 * t_small / max(1, n_small):.1f} ms per item)", flush=True)
    print(f"copying Tasks up to {large_n:,} ...", flush=True)
    step = 200_000
    for first in range(small_fill, large_n - 2 * due - 1, step):
        copy_tasks(url, first, min(first + step, large_n - 2 * due - 1))
    large = count_tasks(url)
    print("claim query, EXPLAIN ANALYZE among", f"{large:,}", "Tasks:")
    print(explain(url, T2))
    t_large, n_large = timed_sweep(url, T2)
    print(f"sweep of {n_large} due among {large:,} Tasks: {t_large:.2f} s "
          f"({1000 * t_large / max(1, n_large):.1f} ms per item)")
    print(f"ratio large/small: {t_large / t_small:.2f} (target < 1.5)")
    return {"due": due, "small": small, "large": large, "handled_small": n_small, "handled_large": n_large,
            "seconds_small": t_small, "seconds_large": t_large}


if __name__ == "__main__":
    sys.exit(main())
