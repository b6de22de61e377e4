"""Helpers of the reliability tests: row counts of every table, OperationOutcome checks, and
the proof that everything stored reads back as JSON."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import create_engine, inspect, text

FHIR = "application/fhir+json"


NOT_DATA = frozenset({"alembic_version", "audit_events"})


def row_counts(database_url: str) -> dict[str, int]:
    """The number of rows of every table of the database (alembic's left out, and the audit
    trail's, which records every request, refused ones included)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            names = [t for t in inspect(conn).get_table_names() if t not in NOT_DATA]
            return {n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one() for n in names}
    finally:
        engine.dispose()


def assert_outcome(response: Any, status: int | tuple[int, ...], code: str | None = None) -> dict[str, Any]:
    """The response is an OperationOutcome (FHIR JSON) with this status (or one of these)."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.get_data(as_text=True)[:500]
    assert response.mimetype == FHIR, response.get_data(as_text=True)[:500]
    body = json.loads(response.get_data(as_text=True))
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and body["issue"][0]["severity"] in ("error", "fatal")
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body


def assert_everything_reads_back(database_url: str) -> int:
    """Every stored version's content is strict JSON (no NaN/Infinity, no lone surrogate,
    UTF-8 encodable) whose resourceType and id match its row; returns how many were read."""
    engine = create_engine(database_url)
    n = 0
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT res_type, res_id, content FROM resource_versions "
                                     "WHERE content IS NOT NULL"))
            for res_type, res_id, content in rows:
                content.encode("utf-8")   # a lone surrogate cannot be encoded
                resource = json.loads(content, parse_constant=_refuse)
                assert resource["resourceType"] == res_type and resource["id"] == res_id
                n += 1
    finally:
        engine.dispose()
    return n


def _refuse(name: str) -> Any:
    raise AssertionError(f"{name} stored: not JSON")
