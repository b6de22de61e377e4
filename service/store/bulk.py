"""Bulk Data export jobs (https://hl7.org/fhir/uv/bulkdata/export.html) as rows any process
can claim, and the reads an export or a restore makes over the store.

export_jobs: one row per kick-off. status: pending -> running -> complete | failed; a
DELETE marks it cancelled (its files are removed by whoever holds it, or by the tick).
A process claims a pending job, or a running one whose lease has run out (its process died),
with FOR UPDATE SKIP LOCKED on PostgreSQL (under SQLite's write lock otherwise), and holds it
by a lease it renews as it writes; so any number of processes on any number of hosts run each
job once, and a SIGKILL costs a lease's wait, not the job.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (Column, Connection, Index, Integer, String, Table, Text, and_, delete, insert, or_, select,
                        update)
from sqlalchemy.sql import ColumnElement

from service.store.schema import UTCDateTime, metadata, resource_versions, resources
from service.store.schema import audit_events

export_jobs = Table(
    "export_jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),      # pending running complete failed cancelled
    Column("request", Text, nullable=False),           # the kick-off URL, as the manifest repeats it
    Column("params", Text, nullable=False),            # JSON: types, since, patients (None: all)
    Column("owner", String(255), nullable=True),       # the token's subject that asked
    Column("created_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("progress", String(255), nullable=True),    # what X-Progress says
    Column("manifest", Text, nullable=True),           # JSON, once complete
    Column("error", Text, nullable=True),              # why it failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),  # its files are deleted after this
)
Index("ix_export_jobs_status", export_jobs.c.status, export_jobs.c.lease_until)
Index("ix_export_jobs_expires", export_jobs.c.expires_at)

LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class ExportJob:
    """One export job row; params: {"types": [...] | None, "since": iso | None,
    "patients": [...] | None (None: not limited), "level": "system" | "patient" | "group"}."""

    id: str
    status: str
    request: str
    params: dict[str, Any]
    owner: str | None
    created_at: datetime
    progress: str | None
    manifest: dict[str, Any] | None
    error: str | None
    attempts: int
    expires_at: datetime | None


def _job(row: Any) -> ExportJob:
    return ExportJob(row.id, row.status, row.request, json.loads(row.params), row.owner, row.created_at,
                     row.progress, json.loads(row.manifest) if row.manifest else None, row.error, row.attempts,
                     row.expires_at)


class ExportJobs:
    """The export_jobs table over one connection (the caller's transaction)."""

    def __init__(self, conn: Connection, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def create(self, *, request: str, params: dict[str, Any], owner: str | None, now: datetime) -> str:
        """A new pending job; its id."""
        job_id = uuid.uuid4().hex
        self.conn.execute(insert(export_jobs).values(
            id=job_id, status="pending", request=request, params=json.dumps(params), owner=owner,
            created_at=now, attempts=0, progress="queued"))
        return job_id

    def get(self, job_id: str) -> ExportJob | None:
        row = self.conn.execute(select(export_jobs).where(export_jobs.c.id == job_id)).first()
        return None if row is None else _job(row)

    def claim(self, now: datetime, job_id: str | None = None) -> ExportJob | None:
        """Take a pending job (or a running one whose lease ran out), the oldest first (or the
        one named), leased until now + LEASE; None if there is none free."""
        free = or_(export_jobs.c.status == "pending",
                   and_(export_jobs.c.status == "running", export_jobs.c.lease_until < now))
        query = select(export_jobs).where(free).order_by(export_jobs.c.created_at).limit(1)
        if job_id is not None:
            query = query.where(export_jobs.c.id == job_id)
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = self.conn.execute(query).first()
        if row is None:
            return None
        self.conn.execute(update(export_jobs).where(export_jobs.c.id == row.id).values(
            status="running", lease_until=now + LEASE, attempts=export_jobs.c.attempts + 1))
        return _job(row)

    def renew(self, job_id: str, now: datetime, progress: str) -> bool:
        """Extend the lease and say how far it is; False if the job is no longer running
        (cancelled meanwhile, or its lease was taken over)."""
        result = self.conn.execute(update(export_jobs).where(
            export_jobs.c.id == job_id, export_jobs.c.status == "running").values(
            lease_until=now + LEASE, progress=progress[:255]))
        return bool(result.rowcount)

    def complete(self, job_id: str, manifest: dict[str, Any], now: datetime, expires_at: datetime) -> bool:
        """Record the manifest; False if the job was cancelled meanwhile."""
        result = self.conn.execute(update(export_jobs).where(
            export_jobs.c.id == job_id, export_jobs.c.status == "running").values(
            status="complete", manifest=json.dumps(manifest), lease_until=None, progress="complete",
            finished_at=now, expires_at=expires_at))
        return bool(result.rowcount)

    def release(self, job_id: str) -> None:
        """Give a running job back (the process is stopping): pending again, for any process."""
        self.conn.execute(update(export_jobs).where(
            export_jobs.c.id == job_id, export_jobs.c.status == "running").values(
            status="pending", lease_until=None, progress="queued"))

    def fail(self, job_id: str, error: str, now: datetime, expires_at: datetime) -> None:
        self.conn.execute(update(export_jobs).where(export_jobs.c.id == job_id).values(
            status="failed", error=error[:2000], lease_until=None, finished_at=now, expires_at=expires_at))

    def cancel(self, job_id: str, now: datetime) -> bool:
        """Mark a job cancelled (its files go); False if there is no such job or it is cancelled already."""
        result = self.conn.execute(update(export_jobs).where(
            export_jobs.c.id == job_id, export_jobs.c.status != "cancelled").values(
            status="cancelled", lease_until=None, finished_at=now, expires_at=now))
        return bool(result.rowcount)

    def expired(self, now: datetime) -> list[str]:
        """Ids of the jobs whose files are due for deletion (expired, failed or cancelled)."""
        return [r.id for r in self.conn.execute(select(export_jobs.c.id).where(
            export_jobs.c.expires_at <= now, export_jobs.c.status != "running"))]

    def forget(self, job_ids: Sequence[str]) -> None:
        """Remove job rows (their files are gone): a status request then answers 404."""
        if job_ids:
            self.conn.execute(delete(export_jobs).where(export_jobs.c.id.in_(list(job_ids))))


# -- reads over the store ---------------------------------------------------------------------

def current_resources(conn: Connection, res_type: str, *, since: datetime | None = None,
                      in_compartment: ColumnElement[bool] | None = None, batch: int = 500) -> Iterator[str]:
    """The JSON text of every current, not deleted, resource of a type (lastUpdated after
    since; in a compartment), in storage order, read batch rows at a time."""
    query = select(resources.c.rid, resources.c.content).where(
        resources.c.res_type == res_type, resources.c.deleted.is_(False))
    if since is not None:
        query = query.where(resources.c.last_updated > since)
    if in_compartment is not None:
        query = query.where(in_compartment)
    last = 0
    while True:
        rows = conn.execute(query.where(resources.c.rid > last).order_by(resources.c.rid).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield str(row.content)
        last = rows[-1].rid


def stored_types(conn: Connection, *, history: bool = False) -> list[str]:
    """The resource types that have a current resource (history: any version), sorted."""
    table = resource_versions if history else resources
    query = select(table.c.res_type).distinct()
    if not history:
        query = query.where(resources.c.deleted.is_(False))
    return sorted(r.res_type for r in conn.execute(query))


@dataclass(frozen=True)
class VersionRow:
    """One stored version: what a history export writes and a restore puts back."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    method: str
    deleted: bool
    content: str | None


def all_versions(conn: Connection, res_type: str, batch: int = 1000) -> Iterator[VersionRow]:
    """Every version of every resource of a type, by id then version."""
    query = select(resource_versions).where(resource_versions.c.res_type == res_type)
    last: tuple[str, int] = ("", 0)
    while True:
        rows = conn.execute(query.where(or_(
            resource_versions.c.res_id > last[0],
            and_(resource_versions.c.res_id == last[0], resource_versions.c.version > last[1])))
            .order_by(resource_versions.c.res_id, resource_versions.c.version).limit(batch)).all()
        if not rows:
            return
        for r in rows:
            yield VersionRow(r.res_type, r.res_id, r.version, r.last_updated, r.method, r.deleted, r.content)
        last = (rows[-1].res_id, rows[-1].version)


def audit_contents(conn: Connection, batch: int = 1000) -> Iterator[str]:
    """The JSON of every AuditEvent, oldest first."""
    last = 0
    while True:
        rows = conn.execute(select(audit_events.c.seq, audit_events.c.content).where(audit_events.c.seq > last)
                            .order_by(audit_events.c.seq).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield str(row.content)
        last = rows[-1].seq


def count_stored(conn: Connection) -> tuple[int, int]:
    """(resources, audit events) stored: an import needs both 0."""
    from sqlalchemy import func
    return (int(conn.execute(select(func.count()).select_from(resources)).scalar_one()),
            int(conn.execute(select(func.count()).select_from(audit_events)).scalar_one()))


# -- the service's own tables, for a faithful restore -------------------------------------------

# Tables a restore rebuilds itself (the versioned store, the search index) or must not carry over.
_NOT_SERVICE_STATE = frozenset({"resources", "resource_versions", "export_jobs", "alembic_version"})


def service_tables() -> list[Any]:
    """The tables of service state kept beside the resources (the audit trail, the follow-up
    bookkeeping, the reminder queue, and whatever later migrations add to the store's
    metadata), in dependency order: what `toh export` writes under _service/."""
    import service.store.followup  # noqa: F401 - its tables join the metadata
    return [t for t in metadata.sorted_tables if t.name not in _NOT_SERVICE_STATE]


def table_rows(conn: Connection, table: Any, batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every row of a table as JSON-ready values (instants as ISO text), in key order."""
    keys = list(table.primary_key.columns)
    query = select(table).order_by(*keys)
    offset = 0
    while True:
        rows = conn.execute(query.limit(batch).offset(offset)).all()
        if not rows:
            return
        for row in rows:
            yield {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row._mapping.items()}
        offset += len(rows)


def restore_rows(conn: Connection, dialect: str, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows written by table_rows (unknown columns refused with ValueError), then move
    PostgreSQL's sequence of an integer key past them."""
    if not rows:
        return
    known = {c.name: c for c in table.columns}
    ready = []
    for row in rows:
        unknown = set(row) - set(known)
        if unknown:
            raise ValueError(f"{table.name}: unknown columns {sorted(unknown)}")
        ready.append({k: (datetime.fromisoformat(v) if isinstance(v, str) and isinstance(known[k].type, UTCDateTime)
                          else v) for k, v in row.items()})
    conn.execute(insert(table), ready)
    if dialect == "postgresql":
        from sqlalchemy import text
        for column in table.primary_key.columns:
            if column.autoincrement in (True, "auto") and column.type.python_type is int:
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                  f"(SELECT MAX({column.name}) FROM {table.name}))"))
