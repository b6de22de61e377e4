"""Two search indexes hold only the rows that have their column: ix_search_token_code_ci
(code_ci IS NOT NULL) and ix_search_reference_url (url IS NOT NULL). Every criterion that uses
them compares the column with a value, which no NULL row matches; the rows without the column
(most of them) had cost a B-tree insert and dirty pages at every write
(service.store.search.tables.PARTIAL, issue 11).

PostgreSQL builds each new index with CREATE INDEX CONCURRENTLY under a temporary name, then
drops the old one (DROP INDEX CONCURRENTLY) and gives the new one its name, outside a
transaction (alembic's autocommit_block): searches and writes of the instances still running go
on meanwhile, where a plain DROP and CREATE in the migration's transaction would hold the whole
table locked until the index was rebuilt (https://www.postgresql.org/docs/15/sql-createindex.html
#SQL-CREATEINDEX-CONCURRENTLY). An index left invalid by an interrupted build is dropped and
built again on the next try. SQLite: DROP INDEX and CREATE INDEX in the migration's transaction.

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
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, table, columns, column in PARTIAL:
                where = f" WHERE {column} IS NOT NULL" if partial else ""
                building = f"{name}_new"
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {building}")   # an interrupted build's
                op.execute(f"CREATE INDEX CONCURRENTLY {building} ON {table} ({', '.join(columns)}){where}")
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                op.execute(f"ALTER INDEX {building} RENAME TO {name}")
        return
    for name, table, columns, column in PARTIAL:
        op.drop_index(name, table)
        if partial:
            where = sa.text(f"{column} IS NOT NULL")
            op.create_index(name, table, columns, sqlite_where=where)
        else:
            op.create_index(name, table, columns)


def upgrade() -> None:
    _rebuild(partial=True)


def downgrade() -> None:
    _rebuild(partial=False)
