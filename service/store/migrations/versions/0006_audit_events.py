"""The audit trail: audit_events, append-only (a PostgreSQL trigger refuses UPDATE and DELETE).

Revision ID: 0006_audit_events
Revises: 0005_follow_up
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_events"
down_revision = "0005_follow_up"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

REFUSE = """
CREATE OR REPLACE FUNCTION toh_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", RowId, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(1), nullable=False),
        sa.Column("subtype", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(2), nullable=False),
        sa.Column("agent", sa.String(255), nullable=True),
        sa.Column("agent_ref", sa.String(255), nullable=True),
        sa.Column("entity", sa.String(200), nullable=True),
        sa.Column("patient", sa.String(64), nullable=True),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_events_recorded", "audit_events", ["recorded"])
    op.create_index("ix_audit_events_entity", "audit_events", ["entity", "recorded"])
    op.create_index("ix_audit_events_patient", "audit_events", ["patient", "recorded"])
    op.create_index("ix_audit_events_agent", "audit_events", ["agent", "recorded"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(REFUSE)
        op.execute("CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
                   "FOR EACH ROW EXECUTE FUNCTION toh_audit_append_only()")
    else:  # SQLite: the same refusal
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_events_no_{operation.lower()} BEFORE {operation} ON audit_events "
                       "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS toh_audit_append_only()")
    op.drop_table("audit_events")
