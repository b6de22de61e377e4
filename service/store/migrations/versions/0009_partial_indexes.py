"""Two search indexes hold only the rows that have their column: ix_search_token_code_ci
(code_ci IS NOT NULL) and ix_search_reference_url (url IS NOT NULL). Every criterion that uses
them compares the column with a value, which no NULL row matches; the rows without the column
(most of them) had cost a B-tree insert and dirty pages at every write
(service.store.search.tables.PARTIAL, issue 11).

Both databases drop and create each index in the migration's transaction, which keeps
search_token and search_reference locked (ACCESS EXCLUSIVE on PostgreSQL) until both are built:
on a large store, run `toh migrate` at a quiet time before starting the new release. CREATE
INDEX CONCURRENTLY, which would not lock them, waits for every older transaction to end, and
the other workers of a starting service wait for the migration lock inside one: tried, it
deadlocked two workers starting together.

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
