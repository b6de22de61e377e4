"""search_composite: the index of composite search parameters (service.fhir.search.composite),
one row per element and pair of component values. Rows are written from this revision on:
`toh reindex` fills them for resources stored before.

Revision ID: 0004_composite
Revises: 0003_token_case
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_composite"
down_revision = "0003_token_case"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Value = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "search_composite",
        sa.Column("rid", RowId, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", Value), sa.Column("code", Value),
        sa.Column("v_system", Value), sa.Column("v_code", Value), sa.Column("v_unit", Value),
        sa.Column("v_value", sa.Float), sa.Column("v_norm", Value),
        sa.Column("v_low", sa.DateTime(timezone=True)), sa.Column("v_high", sa.DateTime(timezone=True)),
        sa.Column("v_target_type", sa.String(64)), sa.Column("v_target_id", sa.String(64)),
    )
    op.create_index("ix_search_composite_code", "search_composite", ["res_type", "param", "code", "system", "rid"])
    op.create_index("ix_search_composite_rid", "search_composite", ["rid"])


def downgrade() -> None:
    op.drop_table("search_composite")
