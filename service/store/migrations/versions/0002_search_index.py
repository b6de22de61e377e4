"""Search index tables (one per value type), owned by service/store/search.

Revision ID: 0002_search_index
Revises: 0001
Create Date: 2026-11-21
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002_search_index"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Value = sa.String(255)
# Byte-order collation on PostgreSQL so "starts with" is an index range scan.
Sortable = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")

# Annotated: the value columns differ in Python type, and mypy would join the lists to object.
TABLES: dict[str, list[sa.Column[Any]]] = {
    "search_token": [sa.Column("system", Value), sa.Column("code", Value), sa.Column("text", Sortable)],
    "search_string": [sa.Column("norm", Sortable, nullable=False), sa.Column("exact", Value, nullable=False)],
    "search_reference": [sa.Column("target_type", sa.String(64)), sa.Column("target_id", sa.String(64)),
                         sa.Column("url", Value)],
    "search_date": [sa.Column("low", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("high", sa.DateTime(timezone=True), nullable=False)],
    "search_quantity": [sa.Column("value", sa.Float, nullable=False), sa.Column("system", Value),
                        sa.Column("code", Value), sa.Column("unit", Value)],
    "search_number": [sa.Column("value", sa.Float, nullable=False)],
    "search_uri": [sa.Column("uri", Sortable, nullable=False)],
}

INDEXES = [
    ("ix_search_token_code", "search_token", ["res_type", "param", "code", "system", "rid"]),
    ("ix_search_token_system", "search_token", ["res_type", "param", "system", "rid"]),
    ("ix_search_string_norm", "search_string", ["res_type", "param", "norm", "rid"]),
    ("ix_search_reference_target", "search_reference", ["res_type", "param", "target_id", "target_type", "rid"]),
    ("ix_search_reference_url", "search_reference", ["res_type", "param", "url", "rid"]),
    ("ix_search_reference_rev", "search_reference", ["target_type", "target_id", "res_type", "param", "rid"]),
    ("ix_search_date_range", "search_date", ["res_type", "param", "low", "high", "rid"]),
    ("ix_search_quantity_value", "search_quantity", ["res_type", "param", "value", "rid"]),
    ("ix_search_number_value", "search_number", ["res_type", "param", "value", "rid"]),
    ("ix_search_uri_uri", "search_uri", ["res_type", "param", "uri", "rid"]),
] + [(f"ix_{name}_rid", name, ["rid"]) for name in TABLES]


def upgrade() -> None:
    for name, columns in TABLES.items():
        op.create_table(
            name,
            sa.Column("rid", RowId, nullable=False),
            sa.Column("res_type", sa.String(64), nullable=False),
            sa.Column("param", sa.String(64), nullable=False),
            *columns,
        )
    for index, table, column_names in INDEXES:
        op.create_index(index, table, column_names)


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
