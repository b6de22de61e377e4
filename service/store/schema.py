"""The store's tables (SQLAlchemy Core). Alembic migrations in migrations/ create them."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Index, Integer, MetaData, String,
                        Table, Text, UniqueConstraint)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return None if value is None else value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()

# An integer surrogate that autoincrements on both SQLite and PostgreSQL.
RowId = BigInteger().with_variant(Integer(), "sqlite")

# The current version of every resource (deleted ones kept as tombstones, for 410 Gone).
resources = Table(
    "resources", metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", UTCDateTime(), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),  # the JSON as served; NULL when deleted
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
)
Index("ix_resources_type_updated", resources.c.res_type, resources.c.last_updated)

# Every version ever written, for vread and _history. Append-only.
resource_versions = Table(
    "resource_versions", metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("rid", RowId, nullable=False),
    Column("last_updated", UTCDateTime(), nullable=False),
    Column("method", String(8), nullable=False),   # POST, PUT or DELETE
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
)
Index("ix_resource_versions_updated", resource_versions.c.last_updated)
Index("ix_resource_versions_type_updated", resource_versions.c.res_type, resource_versions.c.last_updated)

# The audit trail (IHE BALP AuditEvents): append-only, outside the versioned store (an
# AuditEvent has one version and is never changed; on PostgreSQL a trigger refuses UPDATE and
# DELETE). The columns are what the AuditEvent searches filter on; content is the JSON served.
audit_events = Table(
    "audit_events", metadata,
    Column("seq", RowId, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("recorded", UTCDateTime(), nullable=False),
    Column("action", String(1), nullable=False),        # C R U D E
    Column("subtype", String(32), nullable=False),      # the restful interaction (read, search-type...)
    Column("outcome", String(2), nullable=False),       # 0 4 8 12
    Column("agent", String(255), nullable=True),        # the token's sub
    Column("agent_ref", String(255), nullable=True),    # its fhirUser (Practitioner/x), if any
    Column("entity", String(200), nullable=True),       # Type/id of the resource acted on
    Column("patient", String(64), nullable=True),       # the patient's id, when there is one
    Column("content", Text, nullable=False),
)
Index("ix_audit_events_recorded", audit_events.c.recorded)
Index("ix_audit_events_entity", audit_events.c.entity, audit_events.c.recorded)
Index("ix_audit_events_patient", audit_events.c.patient, audit_events.c.recorded)
Index("ix_audit_events_agent", audit_events.c.agent, audit_events.c.recorded)

# CDS Hooks: the `jti` of every accepted CDS client JWT until it expires, so a token is used
# once across every worker and host (the unique key refuses the second insert).
cds_jti = Table(
    "cds_jti", metadata,
    Column("issuer", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False),
)
Index("ix_cds_jti_expires", cds_jti.c.expires_at)
