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
