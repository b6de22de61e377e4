"""Helpers of the live reliability tests (crash, concurrency, load, database restart): a real
`toh serve` in its own process group (so a test can SIGKILL master and workers at once), the
short/long switch, and the store-wide consistency checks run after a fault.

TOH_RELIABILITY_LONG=1 runs the long variants (a minute of contention, several minutes of
load); the default is the short variant CI runs.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.scratch import Gunicorn

LONG = os.environ.get("TOH_RELIABILITY_LONG") == "1"
FHIR = {"Content-Type": "application/fhir+json"}


def serve(database_url: str, workdir: Path, workers: int = 1, **env: str) -> Gunicorn:
    """`toh serve` over database_url with the sweep's tick off (tests drive the clock) unless
    env says otherwise; stop() or kill() it."""
    settings = {"TOH_SCHEDULER": "off", **env}
    return Gunicorn.toh_serve(database_url, workdir, workers=workers, env=settings)


def assert_store_consistent(database_url: str) -> dict[str, int]:
    """What a crash must never leave: every resource's versions are exactly 1..version with the
    current one's content equal to the last version's, no version without its resource, no
    search-index row of a resource that is not current, and no reminder twice.
    Returns counts (resources, versions) for the caller's report."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            current = {(t, i): (v, c) for t, i, v, c in conn.execute(text(
                "SELECT res_type, res_id, version, content FROM resources"))}
            versions: dict[tuple[str, str], list[int]] = {}
            last: dict[tuple[str, str], Any] = {}
            for t, i, v, c in conn.execute(text(
                    "SELECT res_type, res_id, version, content FROM resource_versions ORDER BY res_type, res_id, version")):
                versions.setdefault((t, i), []).append(v)
                last[(t, i)] = c
            assert set(versions) == set(current), set(versions) ^ set(current)
            for key, (version, content) in current.items():
                assert versions[key] == list(range(1, version + 1)), (key, versions[key], version)
                assert last[key] == content, key
            orphans = conn.execute(text(
                "SELECT count(*) FROM search_token t WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.rid = t.rid)"
            )).scalar_one()
            assert orphans == 0, f"{orphans} token index rows of no current resource"
            keys = Counter(k for (k,) in conn.execute(text("SELECT dedupe_key FROM reminders")))
            assert all(n == 1 for n in keys.values()), [k for k, n in keys.items() if n > 1]
            return {"resources": len(current), "versions": sum(len(v) for v in versions.values())}
    finally:
        engine.dispose()


def scalar(database_url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()
    finally:
        engine.dispose()
