"""Notification tables: the Subscriptions delivered to (with their signing secrets) and the
outbox of notifications (service/store/notifications.py).

Revision ID: 0007_i14_outbox
Revises: 0006_audit_events
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_i14_outbox"
down_revision = "0007_i15_cds_jti"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Instant = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("criteria", sa.Text, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("content", sa.String(16), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=True),
        sa.Column("events", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_subscriptions_type", "subscriptions", ["res_type", "status"])
    op.create_table(
        "outbox",
        sa.Column("id", RowId, primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(64), nullable=False, unique=True),
        sa.Column("dedupe_key", sa.String(255), nullable=False, unique=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("focus", sa.String(255), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("event_number", sa.Integer, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", Instant, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", Instant, nullable=False),
        sa.Column("lease", sa.String(36), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", Instant, nullable=True),
        sa.Column("communication_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_due", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_subscriptions_type", table_name="subscriptions")
    op.drop_table("subscriptions")
