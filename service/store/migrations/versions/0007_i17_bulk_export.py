"""Bulk Data export jobs: export_jobs (service/store/bulk.py), claimed by whichever process runs
the export (FOR UPDATE SKIP LOCKED, with a lease that another process may take over).

Revision ID: 0007_i17_bulk_export
Revises: 0006_audit_events
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_i17_bulk_export"
down_revision = "0007_i14_outbox"
branch_labels = None
depends_on = None

Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("created_at", Instant, nullable=False),
        sa.Column("lease_until", Instant, nullable=True),
        sa.Column("progress", sa.String(255), nullable=True),
        sa.Column("manifest", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("finished_at", Instant, nullable=True),
        sa.Column("expires_at", Instant, nullable=True),
    )
    op.create_index("ix_export_jobs_status", "export_jobs", ["status", "lease_until"])
    op.create_index("ix_export_jobs_expires", "export_jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_table("export_jobs")
