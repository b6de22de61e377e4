"""The audit trail's table: append (in the caller's transaction), read one, search.

AuditEvents are not in the versioned store: they have one version, never change (a trigger
refuses UPDATE and DELETE), and a read must not make more history. Their searches run on the
table's own columns:

    date     the recorded instant, with FHIR date prefixes (eq ne lt le gt ge sa eb)
    agent    the token's subject, or its fhirUser reference
    entity   the resource acted on (Type/id, a full URL or a versioned reference)
    patient  the patient (Patient/id or id)
    action   C R U D E      subtype  the RESTful interaction      outcome  0 4 8 12

Values separated by commas are alternatives; repeated parameters must all hold. Anything
else is refused with 400: a search here is never silently widened.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, ColumnElement, and_, func, or_, select
from sqlalchemy.engine import Dialect

from service.fhir.errors import BadRequest, NotFound
from service.fhir.search.values import date_range, split_prefix
from service.store.driver_insert import driver_insert
from service.store.schema import audit_events as table

PARAMETERS = ("date", "agent", "entity", "patient", "action", "subtype", "outcome")
CONTROL = ("_count", "_offset", "_format", "_pretty", "_total", "_sort")


COLUMNS = ("id", "recorded", "action", "subtype", "outcome", "agent", "agent_ref", "entity", "patient", "content")


def append_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert audit rows (column -> value for each of COLUMNS, 'content' the AuditEvent JSON
    text; a missing optional column is NULL), as the driver's own statement
    (service.store.driver_insert)."""
    if rows:
        driver_insert(table, conn.dialect, COLUMNS).run(conn, [tuple(row.get(c) for c in COLUMNS) for row in rows])


def events_insert(dialect: Dialect, rows: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[Any, ...]]]:
    """append_events' statement for a DB-API cursor of dialect: (SQL, the rows' parameters)."""
    insert = driver_insert(table, dialect, COLUMNS)
    return insert.sql, insert.parameters([tuple(row.get(c) for c in COLUMNS) for row in rows])


def read_event(conn: Connection, event_id: str) -> str:
    """The JSON text of one AuditEvent; raises NotFound."""
    content = conn.execute(select(table.c.content).where(table.c.id == event_id)).scalar()
    if content is None:
        raise NotFound(f"AuditEvent/{event_id} is not known")
    return str(content)


@dataclass(frozen=True)
class AuditPage:
    """One page of matches (JSON texts), newest first, with the total and paging."""

    contents: list[str]
    total: int
    offset: int
    count: int


def _last_segments(value: str) -> str:
    value = value.split("/_history/")[0].rstrip("/")
    parts = value.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else value


def _token(value: str) -> str:
    return value.split("|")[-1]


def _date(value: str) -> ColumnElement[bool]:
    prefix, text = split_prefix(value)
    try:
        low, high = date_range(text)
    except ValueError as exc:
        raise BadRequest(f"date={value}: {exc}", expression=["date"]) from exc
    col = table.c.recorded
    conditions = {"eq": and_(col >= low, col < high), "ne": or_(col < low, col >= high),
                  "gt": col >= high, "sa": col >= high, "lt": col < low, "eb": col < low,
                  "ge": col >= low, "le": col < high}
    if prefix not in conditions:
        raise BadRequest(f"date={value}: the prefix {prefix!r} is not supported here", expression=["date"])
    return conditions[prefix]


def _condition(name: str, value: str) -> ColumnElement[bool]:
    alternatives = [v for v in value.split(",") if v]
    if not alternatives:
        raise BadRequest(f"{name} needs a value", expression=[name])
    if name == "date":
        return or_(*(_date(v) for v in alternatives))
    if name == "agent":
        return or_(*(or_(table.c.agent == _token(v), table.c.agent_ref == _last_segments(v)) for v in alternatives))
    if name == "entity":
        return table.c.entity.in_([_last_segments(v) for v in alternatives])
    if name == "patient":
        return table.c.patient.in_([v.split("/")[-1] if "/" in v else v for v in
                                    (_last_segments(a) for a in alternatives)])
    column = {"action": table.c.action, "subtype": table.c.subtype, "outcome": table.c.outcome}[name]
    return column.in_([_token(v) for v in alternatives])


def search_events(conn: Connection, params: Sequence[tuple[str, str]], *, default_count: int,
                  max_count: int) -> AuditPage:
    """The AuditEvents matching params (see module docstring); raises BadRequest."""
    where: list[ColumnElement[bool]] = []
    count, offset = default_count, 0
    for name, value in params:
        if name in ("_count", "_offset"):
            try:
                number = int(value)
            except ValueError:
                raise BadRequest(f"{name} must be a non-negative integer", expression=[name]) from None
            if number < 0 or number > 10**9:
                raise BadRequest(f"{name} must be a non-negative integer", expression=[name])
            if name == "_count":
                count = min(number, max_count)
            else:
                offset = number
        elif name == "_sort":
            if value not in ("-date", "date"):
                raise BadRequest("AuditEvent searches sort by -date (newest first) only", expression=["_sort"])
        elif name in CONTROL:
            continue
        elif name in PARAMETERS:
            where.append(_condition(name, value))
        else:
            raise BadRequest(f"AuditEvent cannot be searched by {name!r}; use one of {', '.join(PARAMETERS)}",
                             code="not-supported", expression=[name])
    total = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
    rows = conn.execute(select(table.c.content).where(*where).order_by(table.c.recorded.desc(), table.c.seq.desc())
                        .limit(count).offset(offset))
    return AuditPage([str(r.content) for r in rows], int(total), offset, count)
