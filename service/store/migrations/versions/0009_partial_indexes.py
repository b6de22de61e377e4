"""Three search indexes hold only the rows that have their column: ix_search_token_system
(system IS NOT NULL), ix_search_token_code_ci (code_ci IS NOT NULL) and ix_search_reference_url
(url IS NOT NULL). Every criterion that uses them compares the column with a value, which no
NULL row matches; the rows without the column (most of them) had cost a B-tree insert and
dirty pages at every write (service.store.search.tables.PARTIAL, issue 11).

Revision ID: 0009_partial_indexes
Revises: 0008_token_statistics
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_partial_indexes"
down_revision = "0008_token_statistics"
branch_labels = None
depends_on = None


# (index, table, columns, the column a row must have to be in the partial index)
PARTIAL = [
    ("ix_search_token_system", "search_token", ["res_type", "param", "system", "rid"], "system"),
    ("ix_search_token_code_ci", "search_token", ["res_type", "param", "code_ci", "rid"], "code_ci"),
    ("ix_search_reference_url", "search_reference", ["res_type", "param", "url", "rid"], "url"),
]


def _rebuild(partial: bool) -> None:
    for name, table, columns, column in PARTIAL:
        op.drop_index(name, table)
        if partial:
            where = sa.text(f"{column} IS NOT NULL")
            op.create_index(name, table, columns, sqlite_where=where, postgresql_where=where)
        else:
            op.create_index(name, table, columns)


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
