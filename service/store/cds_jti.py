"""The JWT ids CDS clients have used (table cds_jti): insert-or-fail, so a token is accepted
once across every worker and host sharing the database (CDS Hooks 2.0, "Trusting CDS
Clients": `jti` protects against replay).

    remember_jti(database, issuer, jti, expires_at, now) -> True the first time, False after

Rows whose token has expired are deleted when the caller asks (`purge=True`, about once a
minute per process): an expired token is refused by its `exp` anyway, so forgetting its id
changes nothing.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from service.store.db import Database
from service.store.schema import cds_jti


def remember_jti(database: Database, issuer: str, jti: str, expires_at: datetime, now: datetime, *,
                 purge: bool = True) -> bool:
    """Record (issuer, jti) until `expires_at` (aware UTC) in a short transaction of its own,
    committed on return; with `purge`, rows that expired before `now` are deleted first. True
    when it was not known (first use), False when it was (a replay).
    issuer and jti longer than 255 characters are refused by the caller (service.security).
    Raises the database's errors (OperationalError when it is unavailable)."""
    dialect = postgresql if database.dialect == "postgresql" else sqlite
    statement = dialect.insert(cds_jti).values(issuer=issuer, jti=jti, expires_at=expires_at) \
        .on_conflict_do_nothing(index_elements=["issuer", "jti"]).returning(cds_jti.c.jti)
    with database.engine.connect() as conn:
        conn = conn.execution_options(toh_write=True)
        conn.begin()
        if purge:
            conn.execute(delete(cds_jti).where(cds_jti.c.expires_at < now))
        inserted = conn.execute(statement).first() is not None   # RETURNING: psycopg's rowcount is -1 here
        conn.commit()
    return inserted
