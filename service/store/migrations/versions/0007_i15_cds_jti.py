"""CDS Hooks: cds_jti, the JWT ids already used by each trusted EHR (replay protection).

Revision ID: 0007_i15_cds_jti
Revises: 0006_audit_events
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_i15_cds_jti"
down_revision = "0006_audit_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_jti",
        sa.Column("issuer", sa.String(255), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cds_jti_expires", "cds_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("cds_jti")
