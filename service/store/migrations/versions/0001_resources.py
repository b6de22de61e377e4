"""Resources and their version history.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("rid", RowId, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["res_type", "last_updated"])
    op.create_table(
        "resource_versions",
        sa.Column("res_type", sa.String(64), primary_key=True),
        sa.Column("res_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("rid", RowId, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.Text, nullable=True),
    )
    op.create_index("ix_resource_versions_updated", "resource_versions", ["last_updated"])
    op.create_index("ix_resource_versions_type_updated", "resource_versions", ["res_type", "last_updated"])


def downgrade() -> None:
    op.drop_table("resource_versions")
    op.drop_table("resources")
